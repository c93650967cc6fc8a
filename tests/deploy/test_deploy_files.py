"""deploy/ is consistent: the YAML parses, the instance config loads on a real Postgres with
the limits the README states, the Kubernetes ConfigMap's seamless.yaml is a valid config,
and every variable the files read is in seamless.env.example."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from seamless_assets.config import load_config
from tests.services import fresh_postgres_database, postgres_url

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _env_example() -> set[str]:
    text = (DEPLOY / "seamless.env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 4, files
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), f"{path} is empty"


def test_every_variable_the_services_read_is_in_the_env_example() -> None:
    known = _env_example()
    wanted: set[str] = set()
    for name in ("dagster.yaml", "workspace.yaml"):
        wanted |= set(re.findall(r"env: ([A-Z_]+)", (DEPLOY / name).read_text()))
    for unit in [*(DEPLOY / "systemd").glob("*.service"), DEPLOY / "Procfile"]:
        wanted |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", unit.read_text()))
    wanted -= {"DAGSTER_WEBSERVER_HOST", "DAGSTER_WEBSERVER_PORT"}  # Procfile defaults
    assert wanted - known == set(), f"not in seamless.env.example: {sorted(wanted - known)}"


def test_the_instance_config_loads_on_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    with fresh_postgres_database("seamless_deploy_yaml") as db:
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url(db))
        monkeypatch.setenv("DAGSTER_COMPUTE_LOG_DIR", str(tmp_path / "logs"))
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            pools = instance.get_concurrency_config().pool_config
            assert pools.default_pool_limit == 1
            assert pools.pool_granularity is not None
            assert pools.pool_granularity.value == "op"
            assert instance.run_monitoring_enabled
            # Event writes go through (dagster-postgres NOTIFYs on each: psycopg2 needed).
            instance.report_runless_asset_event(dg.AssetMaterialization("deploy_check"))
            assert instance.get_latest_materialization_event(dg.AssetKey("deploy_check"))
            storage = instance.event_log_storage
            storage.set_concurrency_slots("exchange_binance", 2)
            assert storage.get_concurrency_info("exchange_binance").slot_count == 2


def test_the_k8s_configmap_holds_a_valid_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configmap = yaml.safe_load((DEPLOY / "k8s" / "seamless-config.yaml").read_text())
    path = tmp_path / "seamless.yaml"
    path.write_text(configmap["data"]["seamless.yaml"])
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("QUESTDB_PASSWORD", "pw")
    config = load_config(path)
    assert config.exchange("binance").pool_limit == 2
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "seamless_assets.definitions", "-a", "defs"]
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    env = {item["name"]: item.get("value") for item in deployment["env"]}
    assert env["SEAMLESS_CONFIG"].startswith(deployment["volumeMounts"][0]["mountPath"])
