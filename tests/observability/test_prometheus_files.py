"""The shipped Prometheus files: `promtool` accepts them, and every metric they use is
one Seamless exports (a renamed metric would leave an alert that can never fire)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from seamless_assets.metrics_catalog import READER_METRICS, RUN_METRICS
from tests.services import unavailable

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMQL_WORDS = {
    "histogram_quantile", "sum", "by", "rate", "increase", "le", "time", "offset", "job",
    "node_id", "world_id", "flag_type", "phase", "seamless_backfill", "d", "m", "limiter_key",
    "quantile_over_time",
}  # fmt: skip


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    assert "SUCCESS: 15 rules found" in promtool("check", "rules", str(DEPLOY / "alert_rules.yml"))
    promtool("check", "config", str(DEPLOY / "prometheus.yml"))


def test_every_metric_an_alert_uses_is_exported() -> None:
    exported = set(READER_METRICS) | set(RUN_METRICS)
    rules = yaml.safe_load((DEPLOY / "alert_rules.yml").read_text())
    used: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", rule["expr"])
            used |= set(re.findall(r"[a-z_][a-z0-9_]*", expr)) - PROMQL_WORDS
    names = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert names <= exported, names - exported
    assert {"backfill_completion_ratio", "coverage_ratio", "domain_gate_holds"} <= names


#: The blueprint's metrics catalog (its "Metrics Catalog" table and the labelled
#: conformance counters below it).
BLUEPRINT_METRICS = {
    "seamless_storage_wait_ms", "seamless_backfill_wait_ms", "seamless_live_wait_ms",
    "seamless_total_ms", "seamless_sla_deadline_seconds", "seamless_conformance_flag_total",
    "seamless_conformance_warning_total", "backfill_completion_ratio", "coverage_ratio",
    "gap_repair_latency_ms", "seamless_rl_tokens_available", "seamless_rl_dropped_total",
    "artifact_publish_latency_ms", "artifact_bytes_written", "fingerprint_collisions",
    "as_of_advancement_events", "domain_gate_holds", "partial_fill_returns",
    "live_staleness_seconds",
}  # fmt: skip


def test_the_blueprint_catalog_is_exported_with_its_labels() -> None:
    exported = set(READER_METRICS) | set(RUN_METRICS)
    assert exported >= BLUEPRINT_METRICS, BLUEPRINT_METRICS - exported
    read_labels = ("node_id", "interval", "world_id")
    for name in ("seamless_conformance_flag_total", "seamless_conformance_warning_total"):
        assert READER_METRICS[name].labels[:3] == read_labels
    assert READER_METRICS["seamless_conformance_flag_total"].labels[3:] == ("flag_type",)
    assert READER_METRICS["as_of_advancement_events"].labels == ("node_id", "world_id")


def test_definitions_load_without_prometheus_client() -> None:
    code = (
        "import sys, seamless_assets.definitions, resources.reader, "
        "seamless_assets.backfill_events; print('prometheus_client' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "False"
