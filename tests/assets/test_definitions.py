"""The Dagster definitions built from the shipped seamless.yaml."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from seamless_assets.config import load_config, load_config_dict
from seamless_assets.definitions import build_definitions
from seamless_assets.nodes import NodeId

ROOT = Path(__file__).resolve().parents[2]


def _defs() -> dg.Definitions:
    return build_definitions(load_config(ROOT / "seamless.yaml"))


def test_one_partitioned_asset_per_node_with_single_run_backfills_and_exchange_pools() -> None:
    config = load_config(ROOT / "seamless.yaml")
    defs = build_definitions(config)
    graph = defs.resolve_asset_graph()
    keys = {key for key in graph.get_all_asset_keys()}
    assert keys == {dg.AssetKey(node.asset_key_path()) for node in config.nodes}
    for node in config.nodes:
        asset = defs.resolve_assets_def(dg.AssetKey(node.asset_key_path()))
        assert asset.backfill_policy == dg.BackfillPolicy.single_run()
        assert asset.partitions_def is not None
        assert asset.node_def.pool == f"exchange_{node.exchange}"
        assert NodeId.from_asset_key_path(asset.key.path) == node
        checks = {c.name for c in asset.check_specs}
        assert checks == {
            "coverage_ratio",
            "no_duplicate_ts",
            "monotonic_ts",
            "ohlc_sanity",
            "exchange_gaps",
        }


def test_timeframe_classes_have_one_job_and_schedule_each() -> None:
    raw = yaml.safe_load((ROOT / "seamless.yaml").read_text())
    raw["exchanges"]["binance"]["timeframes"] = ["1m", "1h", "4h", "1d"]
    defs = build_definitions(load_config_dict(raw, "test"))
    intraday = defs.resolve_job_def("ohlcv_intraday_job")
    daily = defs.resolve_job_def("ohlcv_daily_job")
    assert isinstance(intraday.partitions_def, dg.DailyPartitionsDefinition)
    assert isinstance(daily.partitions_def, dg.MonthlyPartitionsDefinition)
    names = [s.name for s in defs.schedules or []]
    jobs = {defs.resolve_schedule_def(name).job_name for name in names}
    assert jobs == {"ohlcv_intraday_job", "ohlcv_daily_job", "seamless_governance_checks_job"}
    # 2017 → today stays far below 10k partitions.
    assert len(intraday.partitions_def.get_partition_keys()) < 10_000


def test_dagster_instance_config_limits_each_exchange_pool() -> None:
    text = (ROOT / "dagster_home" / "dagster.yaml").read_text()
    assert "default_limit: 1" in text


def test_sensors_governance_checks_and_live_jobs_are_wired() -> None:
    config = load_config(ROOT / "seamless.yaml")
    defs = build_definitions(config)
    sensors = {s.name: s for s in defs.sensors or []}
    assert set(sensors) == {
        "seamless_alert_sensor",
        "seamless_as_of_sensor",
        "seamless_coverage_picture_sensor",
        "seamless_dead_runs_sensor",
        "seamless_gap_repair_sensor",
        "seamless_live_edge_sensor",
        "seamless_pools_sensor",
    }
    assert sensors["seamless_live_edge_sensor"].minimum_interval_seconds == 60  # 1m is smallest
    gap_targets = {t.job_name for t in sensors["seamless_gap_repair_sensor"].targets}
    assert gap_targets == {"ohlcv_intraday_job"}
    assert {t.job_name for t in sensors["seamless_live_edge_sensor"].targets} == {
        "ohlcv_live_binance_job"
    }
    live = defs.resolve_job_def("ohlcv_live_binance_job")
    assert [node.definition.pool for node in live.graph.nodes] == ["exchange_binance"]

    # The shipped config serves no node live: no live_staleness check to fail by construction.
    assert config.live_nodes == ()
    governance = {"partition_coverage", "as_of_stall", "conformance_flag_spike"}
    checks = defs.resolve_job_def("seamless_governance_checks_job").asset_layer
    selected = checks.asset_graph.asset_check_keys
    for node in config.nodes:
        key = dg.AssetKey(node.asset_key_path())
        assert {k.name for k in selected if k.asset_key == key} == governance
    # Each governance check executes on its own (the UI's "Execute", not
    # REQUIRES_MATERIALIZATION): its execution set is itself.
    graph = defs.resolve_asset_graph()
    for check_key in selected:
        assert graph.get_execution_set_asset_and_check_keys(check_key) == {check_key}
    # Backfill runs execute the asset's inline checks only; governance runs on its schedule.
    intraday = defs.resolve_job_def("ohlcv_intraday_job").asset_layer.asset_graph
    assert not {k.name for k in intraday.asset_check_keys} & governance
    schedule = defs.resolve_schedule_def("seamless_governance_checks_schedule")
    assert schedule.cron_schedule == "*/5 * * * *"


def test_the_read_resource_is_offered_to_every_asset() -> None:
    from resources.reader import SeamlessReader

    config = load_config(ROOT / "seamless.yaml")
    reader = build_definitions(config).resources["reader"]
    assert isinstance(reader, SeamlessReader)
    assert reader.config_path == config.source
