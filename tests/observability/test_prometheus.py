"""Metrics end to end with a real Prometheus (Debian's binary, started here with a 1 s
scrape of the Pushgateway and of a reader's /metrics) and the services' Pushgateway: a
Dagster backfill against the sandbox exchange pushes its run, 20 reads through the read
resource are served on /metrics, and Prometheus' HTTP API answers with what they did."""

from __future__ import annotations

import base64
import json
import logging
import math
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from resources.metrics_export import serve_metrics
from resources.reader import ComputeContext
from sandbox import SandboxExchange
from seamless_assets.backfill_events import EVENTS_LOGGER, observe_backfill
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.errors import SealedSegmentCollision
from tests.resources.test_reader_support import (
    DAY,
    NODE,
    NODE_ID,
    T0,
    advance,
    day,
    frozen_sandbox,
    materialize,
    project,
    reader_for,
)
from tests.services import PUSHGATEWAY_ADDR, PUSHGATEWAY_URL, require_service, unavailable

DAYS = 3
READS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture
def job() -> Iterator[str]:
    """A Pushgateway job of this test only (the gateway is shared); its groups go after."""
    require_service("pushgateway", PUSHGATEWAY_ADDR)
    name = f"seamless_test_{uuid.uuid4().hex[:10]}"
    yield name
    for group in get_json(f"{PUSHGATEWAY_URL}/api/v1/metrics")["data"]:
        labels = group["labels"]
        if labels.get("job") == name:
            # the gateway's own path encoding for values holding '/'
            path = "/".join(
                f"{k}@base64/{base64.urlsafe_b64encode(v.encode()).decode()}"
                for k, v in sorted(labels.items())
                if k != "job"
            )
            request = urllib.request.Request(
                f"{PUSHGATEWAY_URL}/metrics/job/{name}/{path}", method="DELETE"
            )
            urllib.request.urlopen(request, timeout=5).close()


class Prometheus:
    """A Prometheus server of this test (its own config, storage and port)."""

    def __init__(self, tmp: Path, targets: dict[str, tuple[str, bool]]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            unavailable("prometheus is not installed: `bash scripts/services.sh start prometheus`")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": name, "honor_labels": honor, "static_configs": [{"targets": [t]}]}
                for name, (t, honor) in targets.items()
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (tmp / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = get_json(url)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, promql: str, timeout_s: float = 30.0) -> float:
        """The single sample `promql` evaluates to, waiting for the scrapes to bring it."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                result = self.query(promql)
            except OSError:
                result = []
            if len(result) == 1:
                return float(result[0]["value"][1])
            assert len(result) <= 1, f"{promql}: {result}"
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus has no sample for {promql} after {timeout_s} s")
            time.sleep(0.3)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """The JSON backfill events, parsed line by line."""
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    logger = logging.getLogger(EVENTS_LOGGER)
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)


def with_metrics(config: SeamlessConfig, job: str, url: str = PUSHGATEWAY_URL) -> SeamlessConfig:
    metrics = {"pushgateway_url": url, "job": job}
    raw = yaml.safe_load(Path(config.source or "").read_text())
    raw["seamless"].setdefault("observability", {})["metrics"] = metrics
    Path(config.source or "").write_text(yaml.safe_dump(raw))
    from seamless_assets.config import load_config

    return load_config(config.source)


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with frozen_sandbox() as exchange:
        yield exchange


def test_prometheus_holds_what_a_backfill_and_20_reads_did(
    tmp_path: Path,
    sandbox: SandboxExchange,
    job: str,
    events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config = with_metrics(project(tmp_path, sandbox), job)
    start = datetime.fromtimestamp(T0, tz=UTC)
    result = run_backfill(config, [NODE], start, datetime.fromtimestamp(T0 + DAYS * DAY, tz=UTC))
    assert result.success

    # The JSON events of the run: an attempt and a completion, with its counts.
    kinds = [e["event"] for e in events]
    assert kinds == ["backfill_attempt", "backfill_complete"], events
    done = events[1]
    assert done["node_id"] == NODE_ID and done["run_id"] == result.run_id
    assert done["partitions"] == DAYS and done["partitions_published"] == DAYS
    assert done["bars_stored"] == DAYS * 1440 and done["duration_s"] > 0
    assert done["partition_start"] == "2024-01-01T00:00:00Z"
    assert done["partition_end"] == "2024-01-04T00:00:00Z"

    as_of = advance(config, T0 + DAYS * DAY).as_of_s
    with reader_for(config) as reader:
        reader_port = serve_metrics(reader, 0)
        metas = [
            reader.fetch(
                NODE_ID, T0 + (i % DAYS) * DAY, T0 + (i % DAYS + 1) * DAY,
                ComputeContext("w1", "backtest", as_of=as_of),
            )[1]
            for i in range(READS)
        ]  # fmt: skip
        stats = reader.cache_stats()
        prom = Prometheus(
            tmp_path,
            {
                "pushgateway": (f"127.0.0.1:{PUSHGATEWAY_ADDR[1]}", True),
                "seamless_reader": (f"127.0.0.1:{reader_port}", False),
            },
        )
        try:
            run = f'job="{job}",node_id="{NODE_ID}",interval="60"'
            # the run, pushed to the gateway when it ended
            assert prom.value(f"backfill_completion_ratio{{{run}}}") == 1.0
            assert prom.value(f"coverage_ratio{{{run}}}") == 1.0
            assert prom.value(f"seamless_backfill_partitions{{{run}}}") == DAYS
            assert prom.value(f"seamless_backfill_bars{{{run}}}") == DAYS * 1440
            # at least one kline request per 1000 bars; exactly what the run's event says
            requests = prom.value(f"seamless_backfill_requests{{{run}}}")
            assert requests == done["exchange_requests"] >= math.ceil(DAYS * 1440 / 1000)
            assert prom.value(f"seamless_rl_dropped_total{{{run}}}") == 0
            assert prom.value(f"artifact_publish_latency_ms{{{run}}}") > 0
            # every byte of the run's segments and manifests, as they lie on disk
            stored = [p for p in artifacts_root(config).rglob("*") if p.is_file()]
            segment_bytes = sum(
                p.stat().st_size for p in stored if p.name in ("data.parquet", "manifest.json")
            )
            assert prom.value(f"artifact_bytes_written{{{run}}}") == segment_bytes > 0
            assert prom.value(f"fingerprint_collisions{{{run}}}") == 0
            assert prom.query(f"gap_repair_latency_ms{{{run}}}") == []  # not a repair run
            assert prom.value(f'seamless_backfill_stage_seconds{{{run},stage="fetch"}}') > 0
            success = prom.value(f"seamless_backfill_last_success_timestamp_seconds{{{run}}}")
            assert abs(success - time.time()) < 300

            # the 20 reads, scraped from the reader's /metrics
            read = f'job="seamless_reader",node_id="{NODE_ID}",interval="60",world_id="w1"'
            assert prom.value(f"seamless_fetch_total{{{read}}}") == READS
            for metric in ("seamless_total_ms", "seamless_storage_wait_ms"):
                assert prom.value(f"{metric}_count{{{read}}}") == READS
                assert prom.value(f'{metric}_bucket{{{read},le="+Inf"}}') == READS
            total_ms = sum(m.sla["total_ms"] for m in metas)
            assert prom.value(f"seamless_total_ms_sum{{{read}}}") == pytest.approx(total_ms)
            assert prom.value(f"coverage_ratio{{{read}}}") == 1.0
            assert prom.value(f"domain_gate_holds{{{read}}}") == 0
            assert prom.value(f"partial_fill_returns{{{read}}}") == 0
            assert prom.value(f"seamless_conformance_warning_total{{{read}}}") == 0
            # each read ran under the backtest domain's total deadline (300 s by default)
            total_deadline_ms = config.sla_for("backtest").total_deadline_ms
            assert total_deadline_ms == 300_000
            deadline = "seamless_sla_deadline_seconds"
            assert prom.value(f"{deadline}_count{{{read}}}") == READS
            assert prom.value(f"{deadline}_sum{{{read}}}") == READS * 300.0
            assert prom.value(f'{deadline}_bucket{{{read},le="120"}}') == 0
            assert prom.value(f'{deadline}_bucket{{{read},le="300"}}') == READS
            hits = prom.value('seamless_cache_hit_total{job="seamless_reader"}')
            misses = prom.value('seamless_cache_miss_total{job="seamless_reader"}')
            assert (hits, misses) == (stats.hits, stats.misses) == (READS - DAYS, DAYS)
        finally:
            prom.close()


def test_a_failed_run_is_logged_and_pushed_and_an_unreachable_gateway_fails_nothing(
    tmp_path: Path, sandbox: SandboxExchange, job: str, events: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    config = with_metrics(project(tmp_path, sandbox), job)
    partitions = [day(i) for i in range(DAYS)]
    with observe_backfill(config, NODE, partitions, run_id="ok") as observed:
        observed.outcome = materialize(config, list(range(DAYS)))
    assert gateway_group(job)["fingerprint_collisions"] == 0.0
    failing = observe_backfill(config, NODE, partitions, run_id="bad")
    with pytest.raises(RuntimeError, match="exchange down"), failing:
        raise RuntimeError("exchange down")

    assert [e["event"] for e in events] == [
        "backfill_attempt", "backfill_complete", "backfill_attempt", "backfill_fail",
    ]  # fmt: skip
    failed = events[3]
    assert failed["run_id"] == "bad" and failed["error"] == "RuntimeError: exchange down"
    assert failed["node_id"] == NODE_ID and failed["partitions"] == DAYS

    group = gateway_group(job)
    # the failure replaced what it knows (nothing completed) and kept the last success's
    assert group["backfill_completion_ratio"] == 0.0
    assert group["coverage_ratio"] == 1.0
    assert (
        group["seamless_backfill_last_failure_timestamp_seconds"]
        >= (group["seamless_backfill_last_success_timestamp_seconds"])
    )

    assert group["fingerprint_collisions"] == 0.0  # not every failure is a collision
    assert "gap_repair_latency_ms" not in group

    # a publish refused because the fingerprint's address holds other rows
    colliding = observe_backfill(config, NODE, partitions, run_id="collision")
    with pytest.raises(SealedSegmentCollision), colliding:
        raise SealedSegmentCollision("other rows under the fingerprint")
    assert gateway_group(job)["fingerprint_collisions"] == 1.0

    # a gap repair run: the sensor's request 5 s ago to this success
    asked = time.time() - 5
    repair = observe_backfill(config, NODE, partitions, run_id="repair", gap_detected_at=asked)
    with repair as observed:
        observed.outcome = materialize(config, list(range(DAYS)))
    group = gateway_group(job)
    assert 5000 <= group["gap_repair_latency_ms"] <= (time.time() - asked) * 1000
    assert group["fingerprint_collisions"] == 0.0

    down = with_metrics(config, job, url=f"http://127.0.0.1:{free_port()}")
    observe = observe_backfill(down, NODE, partitions, run_id="no-gateway")
    with caplog.at_level(logging.WARNING, "seamless_assets.metrics_push"), observe as observed:
        observed.outcome = materialize(down, list(range(DAYS)))
    assert events[-1]["event"] == "backfill_complete"
    assert any("not pushed" in r.getMessage() for r in caplog.records)


def artifacts_root(config: SeamlessConfig) -> Path:
    return Path(urllib.parse.urlparse(config.artifact_uri).path)


def gateway_group(job: str) -> dict[str, float]:
    """The last pushed value of each metric of `job`'s group of NODE, from the gateway."""
    for group in get_json(f"{PUSHGATEWAY_URL}/api/v1/metrics")["data"]:
        if group["labels"].get("job") == job and group["labels"].get("node_id") == NODE_ID:
            return {
                name: float(family["metrics"][0]["value"])
                for name, family in group.items()
                if isinstance(family, dict)
                and family.get("metrics")
                and "value" in family["metrics"][0]
            }
    raise AssertionError(f"no group of job {job} for {NODE_ID} on the gateway")
