"""Funding and trades nodes end to end, in a catalog that mixes every kind: Binance spot,
perpetual and mark-price bars, Binance funding and trades, and Bybit candles. Each run
goes through Dagster with real ccxt against the sandbox; values stored, published,
snapshotted and read equal the exchange's exactly. Funding coverage stays right across
interval changes (8h -> 4h -> 1h), a missing funding is named, and a day that is not
settled yet is stored but not published."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from resources.reader import ComputeContext, SeamlessReader
from sandbox import SandboxConfig, SandboxExchange, expected_bars, expected_funding
from sandbox.trades import expected_trades
from seamless_assets.cli import main, run_backfill
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.frame import Range
from seamless_assets.errors import AsOfRequired, MissingPartitions
from seamless_assets.runtime import resources_from_config

from .conftest import DAY, write_config
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
PERP = "BTC/USDT:USDT"
FUNDING, TRADES = f"funding:binance:{PERP}", "trades:binance:ETH/USDT"
MARK, BYBIT = f"mark:binance:{PERP}:1m", f"ohlcv:bybit:{PERP}:1m"
SPOT, PERP_BARS = "ohlcv:binance:BTC/USDT:1m", f"ohlcv:binance:{PERP}:1m"
BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
# 8h until noon of the first day, then 4h, then 1h from the second day's 08:00
SCHEDULE = [[T0 + DAY // 2, 4], [T0 + DAY + 8 * 3600, 1]]


def _catalog(tmp_path: Path, sandbox: SandboxExchange) -> SeamlessConfig:
    path = write_config(tmp_path, sandbox.url, symbols=("BTC/USDT", PERP))
    config = yaml.safe_load(path.read_text())
    config["exchanges"]["binance"]["timeframes"] = ["1m"]
    config["exchanges"]["binance"]["ccxt_config"]["urls"]["api"]["fapiPublic"] = (
        f"{sandbox.url}/fapi/v1"
    )
    api = {"public": sandbox.url, "private": sandbox.url}
    config["exchanges"]["bybit"] = {"ccxt_config": {"urls": {"api": api}}}
    config["series"] = [MARK, FUNDING, TRADES, BYBIT]
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


@pytest.fixture
def changing_funding() -> SandboxConfig:
    return SandboxConfig(funding_intervals={PERP: SCHEDULE})


def _events(frame_ts: np.ndarray, fundings: list[tuple[int, float, float]]) -> None:
    assert frame_ts.tolist() == [f[0] for f in fundings]


def test_a_catalog_of_every_kind_backfills_snapshots_and_reads_exactly(
    tmp_path: Path, dagster_home: Path, changing_funding: SandboxConfig
) -> None:
    with SandboxExchange(changing_funding) as sandbox:
        project = _catalog(tmp_path, sandbox)
        assert {str(n) for n in project.event_nodes} == {FUNDING, TRADES}
        end = datetime.fromtimestamp(T0 + 2 * DAY, tz=UTC)
        bars = [project.catalog_node(n) for n in (SPOT, PERP_BARS, MARK, BYBIT)]
        events = [project.catalog_node(n) for n in (FUNDING, TRADES)]
        # one run backfills the whole catalog: bars of both venues and events
        result = run_backfill(project, [*bars, *events], START, end)
        assert result.success
        checks = {
            (c.asset_key.path[0], c.check_name): c for c in result.get_asset_check_evaluations()
        }
        assert checks[("funding", "coverage_ratio")].passed
        assert checks[("trades", "coverage_ratio")].passed
        # 8h, 4h and 1h fundings: every one present, none flagged as missing
        assert checks[("funding", "funding_interval")].passed
        intervals = checks[("funding", "funding_interval")].metadata["intervals"].value
        assert [hours for _, hours in intervals] == [8, 4, 1]

    window = Range(T0, T0 + 2 * DAY)
    fundings = expected_funding(PERP, T0, T0 + 2 * DAY, changing_funding)
    assert len(fundings) == 2 + 3 + 2 + 16  # 00,08 | 12,16,20 | 00,04 | 08..23 hourly
    trades = expected_trades("ETH/USDT", T0, T0 + 2 * DAY, changing_funding)

    # the hot store holds the exchange's values exactly
    hot_events = resources_from_config(project)["hot_store"].open_events()  # type: ignore[attr-defined]
    stored = hot_events.read_events("funding", FUNDING, window)
    _events(stored["ts"].to_numpy(), fundings)
    np.testing.assert_array_equal(stored["funding_rate"], [f[1] for f in fundings])
    np.testing.assert_array_equal(stored["mark_price"], [f[2] for f in fundings])
    stored_trades = hot_events.read_events("trades", TRADES, window)
    _assert_trades(stored_trades, trades)
    assert hot_events.answered("funding", FUNDING, window) == [window]
    hot_events.close()
    hot = _hot(project)
    expected_by_node = {
        SPOT: expected_bars("BTC/USDT", 60, T0, T0 + 2 * DAY),
        PERP_BARS: expected_bars(PERP, 60, T0, T0 + 2 * DAY),
        MARK: expected_bars(PERP, 60, T0, T0 + 2 * DAY, price="mark"),
        BYBIT: expected_bars(PERP, 60, T0, T0 + 2 * DAY, venue="bybit"),
    }
    for node_id, expected in expected_by_node.items():
        frame = hot.read_range(node_id, window)
        for column in BAR_COLUMNS:
            np.testing.assert_array_equal(frame[column].to_numpy(), expected[column])

    # bar snapshots by the CLI, event snapshots by their runs; the whole store verifies
    assert main(["--config", str(project.source), "snapshot"]) == 0
    artifacts = _artifacts(project)
    assert artifacts.verify_all() == []
    bar_window = Range(T0 + 3600 + 60 * 7, T0 + DAY + 3600)
    with SeamlessReader.from_config(project.source) as reader:
        for node_id, expected in expected_by_node.items():
            committed = artifacts.latest_snapshot(project.node(node_id))
            assert committed is not None and committed.watermark_s == T0 + 2 * DAY
            # every venue's history starts before the partitions (2023-01-01): a year lacking
            assert committed.missing == (Range(T0 - 365 * DAY, T0),), node_id
            frame, _ = reader.fetch(
                node_id,
                bar_window.start,
                bar_window.end,
                ComputeContext("w", "backtest", as_of=committed.as_of_s),
            )
            inside = (expected["ts"] >= bar_window.start) & (expected["ts"] < bar_window.end)
            for column in BAR_COLUMNS:
                np.testing.assert_array_equal(frame[column].to_numpy(), expected[column][inside])
    event_store = resources_from_config(project)["artifacts"].open_events()  # type: ignore[attr-defined]
    funding_node, trades_node = events
    for node in events:
        snapshot = event_store.latest_snapshot(node)
        assert snapshot is not None and snapshot.watermark_s == T0 + 2 * DAY
        assert [s.range for s in snapshot.segments] == [
            Range(T0, T0 + DAY),
            Range(T0 + DAY, T0 + 2 * DAY),
        ]
        manifest = event_store.read_manifest(node, snapshot.segments[0].fingerprint)
        assert manifest is not None and manifest["provenance"]["rows_by_source"]["rest"] > 0

    # backtest reads of any window inside the snapshot: exactly the exchange's
    as_of = event_store.latest_snapshot(funding_node).as_of_s  # type: ignore[union-attr]
    inside = Range(T0 + 10 * 3600 + 7, T0 + DAY + 7 * 3600)
    with SeamlessReader.from_config(project.source) as reader:
        frame, meta = reader.fetch(
            FUNDING, inside.start, inside.end, ComputeContext("w", "backtest", as_of=as_of)
        )
        _events(
            frame["ts"].to_numpy(),
            expected_funding(PERP, inside.start, inside.end, changing_funding),
        )
        assert meta.source == "snapshot" and meta.coverage_ratio == 1.0
        assert meta.dataset_fingerprint and meta.snapshot_fingerprint
        trades_as_of = event_store.latest_snapshot(trades_node).as_of_s  # type: ignore[union-attr]
        frame, meta = reader.fetch(
            TRADES, inside.start, inside.end, ComputeContext("w", "research", as_of=trades_as_of)
        )
        _assert_trades(
            frame, expected_trades("ETH/USDT", inside.start, inside.end, changing_funding)
        )
        again, meta_again = reader.fetch(
            TRADES, inside.start, inside.end, ComputeContext("w2", "backtest", as_of=trades_as_of)
        )
        assert again.equals(frame) and meta_again.dataset_fingerprint == meta.dataset_fingerprint
        with pytest.raises(AsOfRequired):
            reader.fetch(TRADES, inside.start, inside.end, ComputeContext("w", "backtest"))
        with pytest.raises(MissingPartitions, match="2024-01-03"):
            reader.fetch(FUNDING, T0, T0 + 3 * DAY, ComputeContext("w", "backtest", as_of=as_of))
        live, live_meta = reader.fetch(FUNDING, T0, T0 + 2 * DAY, ComputeContext("w3", "live"))
        _events(live["ts"].to_numpy(), fundings)
        assert live_meta.source == "hot_store" and not live_meta.partial


def _assert_trades(frame: object, expected: dict[str, np.ndarray]) -> None:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["id", "ts", "price", "amount", "side"]
    order = np.lexsort((expected["id"], expected["timestamp"]))
    np.testing.assert_array_equal(frame["id"].to_numpy(), expected["id"][order])
    np.testing.assert_array_equal(frame["ts"].to_numpy(), expected["timestamp"][order])
    np.testing.assert_array_equal(frame["price"].to_numpy(), expected["price"][order])
    np.testing.assert_array_equal(frame["amount"].to_numpy(), expected["amount"][order])
    sides = np.where(expected["side"][order] == "buy", 1, -1)
    np.testing.assert_array_equal(frame["side"].to_numpy(), sides)


def _event_catalog(tmp_path: Path, sandbox: SandboxExchange) -> SeamlessConfig:
    path = write_config(tmp_path, sandbox.url, symbols=("BTC/USDT",))
    config = yaml.safe_load(path.read_text())
    config["exchanges"]["binance"]["ccxt_config"]["urls"]["api"]["fapiPublic"] = (
        f"{sandbox.url}/fapi/v1"
    )
    config["series"] = [FUNDING, TRADES]
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def _requests(sandbox: SandboxExchange) -> int:
    return int(sandbox.stats()["requests_total"])


def test_a_day_not_settled_is_stored_not_published_and_a_rerun_asks_nothing_twice(
    tmp_path: Path, dagster_home: Path
) -> None:
    noon = T0 + DAY + 12 * 3600
    with SandboxExchange(SandboxConfig(frozen_now_s=noon)) as sandbox:
        project = _event_catalog(tmp_path, sandbox)
        nodes = [project.catalog_node(n) for n in (FUNDING, TRADES)]
        end = datetime.fromtimestamp(T0 + 2 * DAY, tz=UTC)
        first = run_backfill(project, nodes, START, end)
        assert first.success
        checks = {
            (c.asset_key.path[0], c.check_name): c for c in first.get_asset_check_evaluations()
        }
        # half of the second day is not settled yet: coverage says so (an error the next
        # run clears), the answered half is stored and served live, nothing published
        coverage = checks[("funding", "coverage_ratio")]
        assert not coverage.passed and 0.7 < coverage.metadata["coverage_ratio"].value < 0.8
        store = resources_from_config(project)["artifacts"].open_events()  # type: ignore[attr-defined]
        funding_node, trades_node = nodes
        before = store.latest_snapshot(funding_node)
        assert before is not None and [s.range for s in before.segments] == [Range(T0, T0 + DAY)]
        with SeamlessReader.from_config(project.source) as reader:
            live, meta = reader.fetch(TRADES, T0 + DAY, T0 + 2 * DAY, ComputeContext("w", "live"))
            assert meta.partial and meta.missing[0].start == noon - 120
            settled = expected_trades("ETH/USDT", T0 + DAY, noon - 120)
            _assert_trades(live, settled)

        # the clock moves on: the rest of the day is fetched once, published, snapshotted
        sandbox.set_clock(now=T0 + 2 * DAY + 3600)
        sandbox.reset()
        assert run_backfill(project, nodes, START, end).success
        after = store.latest_snapshot(funding_node)
        assert after is not None and after.as_of_s > before.as_of_s
        assert [s.range for s in after.segments] == [
            Range(T0, T0 + DAY),
            Range(T0 + DAY, T0 + 2 * DAY),
        ]
        assert after.segments[0] == before.segments[0]  # the settled day did not change
        trades_requests = sandbox.stats()["by_endpoint"]["aggTrades"]["requests"]
        assert trades_requests < 80  # half a day of trades (~31k), not two days again

        # an unchanged rerun: no request, no new segment, no new snapshot
        sandbox.reset()
        assert run_backfill(project, nodes, START, end).success
        assert _requests(sandbox) <= 2  # the clock and markets, no funding, no trades
        assert store.latest_snapshot(funding_node) == after
        assert store.latest_snapshot(trades_node).as_of_s == store.snapshot_as_ofs(trades_node)[-1]  # type: ignore[union-attr]

        # the first snapshot still reads what it read, byte for byte
        with SeamlessReader.from_config(project.source) as reader:
            old, _ = reader.fetch(
                FUNDING, T0, T0 + DAY, ComputeContext("w", "backtest", as_of=before.as_of_s)
            )
        _events(old["ts"].to_numpy(), expected_funding(PERP, T0, T0 + DAY))


def test_an_outage_without_funding_is_named_not_papered_over(
    tmp_path: Path, dagster_home: Path
) -> None:
    # the perpetual's outage from 07:00 to 09:30 removes the 08:00 funding
    outage = SandboxConfig(gaps={PERP: [[T0 + 7 * 3600, T0 + 9 * 3600 + 1800]]})
    with SandboxExchange(outage) as sandbox:
        project = _event_catalog(tmp_path, sandbox)
        node = project.catalog_node(FUNDING)
        result = run_backfill(project, [node], START, datetime.fromtimestamp(T0 + DAY, tz=UTC))
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    # the exchange answered the whole day (coverage complete); the missing funding is a
    # warning naming its span
    assert checks["coverage_ratio"].passed
    interval = checks["funding_interval"]
    assert not interval.passed and interval.severity.value == "WARN"
    assert interval.metadata["missing_funding"].value == [
        ["2024-01-01T00:00:00Z", "2024-01-01T16:00:00Z"]
    ]
    store = resources_from_config(project)["artifacts"].open_events()  # type: ignore[attr-defined]
    snapshot = store.latest_snapshot(node)
    assert snapshot is not None and snapshot.row_count == 2  # 00:00 and 16:00


def test_a_crash_between_store_and_publish_is_completed_by_the_next_run(
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from resources.artifacts.event_segments import EventSegmentStore

    publish = EventSegmentStore.publish
    calls = {"n": 0}

    def crash_on_second(self: EventSegmentStore, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (injected)")
        return publish(self, *args, **kwargs)  # type: ignore[arg-type]

    with SandboxExchange(SandboxConfig()) as sandbox:
        project = _event_catalog(tmp_path, sandbox)
        node = project.catalog_node(FUNDING)
        end = datetime.fromtimestamp(T0 + 3 * DAY, tz=UTC)
        monkeypatch.setattr(EventSegmentStore, "publish", crash_on_second)
        assert not run_backfill(project, [node], START, end).success
        store = resources_from_config(project)["artifacts"].open_events()  # type: ignore[attr-defined]
        assert store.latest_snapshot(node) is None  # no snapshot of a half-published run
        monkeypatch.setattr(EventSegmentStore, "publish", publish)
        sandbox.reset()
        args = ["--config", str(project.source), "backfill", FUNDING]
        assert main([*args, "--start", "2024-01-01", "--end", "2024-01-04"]) == 0
        assert _requests(sandbox) <= 2  # every day was answered and stored before the crash
    capsys.readouterr()
    assert main(["--config", str(project.source), "coverage", FUNDING]) == 0
    coverage = capsys.readouterr().out
    assert "answered 1.000000 of the window, 9 funding(s) stored" in coverage
    assert "days published: 3" in coverage and "3 day(s), 9 funding(s)" in coverage
    assert "stored from 2024-01-01T00:00:00Z to 2024-01-03T16:00:00Z" in coverage
    assert main(["--config", str(project.source), "snapshots", FUNDING]) == 0
    assert f"{FUNDING}: 1 snapshot(s)" in capsys.readouterr().out
    assert main(["--config", str(project.source), "nodes"]) == 0
    assert "trades/binance_ETH_USDT" in capsys.readouterr().out
    snapshot = store.latest_snapshot(node)
    assert snapshot is not None and len(snapshot.segments) == 3
    assert _artifacts(project).verify_all() == []
    with SeamlessReader.from_config(project.source) as reader:
        frame, _ = reader.fetch(
            FUNDING, T0, T0 + 3 * DAY, ComputeContext("w", "backtest", as_of=snapshot.as_of_s)
        )
    _events(frame["ts"].to_numpy(), expected_funding(PERP, T0, T0 + 3 * DAY))


def test_on_questdb_and_s3_the_same_events_publish_the_same_bytes(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import uuid

    import boto3

    from resources.hot_store.questdb_events import QuestDBEventStore
    from tests.services import (
        QUESTDB_DSN,
        QUESTDB_ILP,
        QUESTDB_PG_ADDR,
        S3_ADDR,
        S3_ENDPOINT,
        require_service,
    )

    for name, addr in (("questdb", QUESTDB_PG_ADDR), ("s3", S3_ADDR)):
        require_service(name, addr)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    tag = uuid.uuid4().hex[:10]
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT, region_name="us-east-1")
    s3.create_bucket(Bucket=f"seamless-{tag}")
    end = datetime.fromtimestamp(T0 + 2 * DAY, tz=UTC)
    with SandboxExchange(SandboxConfig(funding_intervals={PERP: SCHEDULE})) as sandbox:
        (tmp_path / "prod").mkdir()
        embedded = _event_catalog(tmp_path, sandbox)
        raw = yaml.safe_load(Path(str(embedded.source)).read_text())
        raw["seamless"]["data_dir"] = str(tmp_path / "prod" / "data")
        raw["seamless"]["hot_store"] = {
            "backend": "questdb",
            "questdb_dsn": QUESTDB_DSN,
            "questdb_ilp": QUESTDB_ILP,
            "questdb_table_prefix": f"t{tag}_",
        }
        raw["seamless"]["artifact"] = {
            "object_store_uri": f"s3://seamless-{tag}/lake",
            "s3": {"endpoint_url": S3_ENDPOINT},
        }
        (tmp_path / "prod" / "seamless.yaml").write_text(yaml.safe_dump(raw))
        production = load_config(tmp_path / "prod" / "seamless.yaml")
        try:
            for project in (embedded, production):
                nodes = [project.catalog_node(n) for n in (FUNDING, TRADES)]
                assert run_backfill(project, nodes, START, end).success
            hot = resources_from_config(production)["hot_store"].open_events()  # type: ignore[attr-defined]
            _assert_trades(
                hot.read_events("trades", TRADES, Range(T0, T0 + 2 * DAY)),
                expected_trades("ETH/USDT", T0, T0 + 2 * DAY),
            )
            hot.close()
            with SeamlessReader.from_config(production.source) as reader:
                store = resources_from_config(production)["artifacts"].open_events()  # type: ignore[attr-defined]
                as_of = store.latest_snapshot(production.event_node(FUNDING)).as_of_s
                frame, _ = reader.fetch(
                    FUNDING, T0, T0 + 2 * DAY, ComputeContext("w", "backtest", as_of=as_of)
                )
            _events(
                frame["ts"].to_numpy(),
                expected_funding(PERP, T0, T0 + 2 * DAY, sandbox.state.config),
            )
        finally:
            QuestDBEventStore(QUESTDB_DSN, QUESTDB_ILP, table_prefix=f"t{tag}_").drop_tables()

    # segments and manifests byte for byte (snapshots carry their own commit instant)
    local = embedded.data_dir / "artifacts"
    expected = {
        str(p.relative_to(local)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in local.rglob("*")
        if p.is_file() and "/segments/" in p.as_posix()
    }
    published = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=f"seamless-{tag}", Prefix="lake/"
    ):
        for item in page.get("Contents", []):
            if "/segments/" in item["Key"]:
                body = s3.get_object(Bucket=f"seamless-{tag}", Key=item["Key"])["Body"].read()
                published[item["Key"].removeprefix("lake/")] = hashlib.sha256(body).hexdigest()
    assert len(expected) == 8 and published == expected  # 2 nodes x 2 days x (data, manifest)


def test_event_nodes_in_the_definitions_and_their_config_errors(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path
) -> None:
    import dagster as dg

    from seamless_assets.definitions import build_definitions
    from seamless_assets.errors import ConfigError, InvalidNodeId
    from seamless_assets.event_nodes import EventNodeId
    from seamless_assets.partitions import timeframe_classes
    from seamless_assets.pools import pool_name

    project = _event_catalog(tmp_path, sandbox)
    defs = build_definitions(project)
    funding = defs.resolve_assets_def(dg.AssetKey(["funding", "binance_BTC_USDT__USDT"]))
    trades = defs.resolve_assets_def(dg.AssetKey(["trades", "binance_ETH_USDT"]))
    assert isinstance(funding.partitions_def, dg.DailyPartitionsDefinition)
    assert funding.op.pool == trades.op.pool == pool_name("binance")
    assert {k.name for k in funding.check_keys} == {"coverage_ratio", "funding_interval"}
    assert {k.name for k in trades.check_keys} == {"coverage_ratio"}
    # one job (and its schedule) backfills the day-partitioned catalog: bars and events
    job_name = timeframe_classes(project.seamless.partitions)["intraday"].job_name
    job = defs.resolve_job_def(job_name)
    assert job.partitions_def == funding.partitions_def
    keys = {k.path[0] for k in job.asset_layer.asset_graph.get_all_asset_keys()}
    assert {"ohlcv", "funding", "trades"} <= keys
    names = [s.name for s in defs.schedules or []]
    assert job_name in {defs.resolve_schedule_def(name).job_name for name in names}
    node = EventNodeId.parse(FUNDING)
    assert EventNodeId.from_asset_key_path(node.asset_key_path()) == node

    raw = yaml.safe_load(Path(str(project.source)).read_text())
    for entry, words in (
        ("funding:binance:BTC/USDT", "spot market, which has no funding"),
        ("trades:kraken:BTC/USDT", "has no entry under `exchanges:`"),
        ("funding:binance", "must look like"),
    ):
        raw["series"] = [entry]
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match="series\\[0\\]") as caught:
            load_config(path)
        assert words in str(caught.value)
    with pytest.raises(InvalidNodeId, match="kind"):
        EventNodeId.parse("ticks:binance:BTC/USDT")
    with pytest.raises(ConfigError, match="not in the catalog"):
        project.event_node("trades:binance:BTC/USDT")


def test_fetch_spans_join_contiguous_unanswered_days_up_to_a_limit() -> None:
    from seamless_assets.event_pipeline import fetch_spans

    days = [Range(T0 + i * DAY, T0 + (i + 1) * DAY) for i in range(5)]
    whole = Range(T0, T0 + 5 * DAY)
    assert fetch_spans(days, [whole], 366) == [whole]
    assert fetch_spans(days, [whole], 2) == [
        Range(T0, T0 + 2 * DAY),
        Range(T0 + 2 * DAY, T0 + 4 * DAY),
        Range(T0 + 4 * DAY, T0 + 5 * DAY),
    ]
    # answered spans split what is asked; an unsettled end is cut off; nothing to do: none
    todo = [Range(T0, T0 + DAY + 3600), Range(T0 + 3 * DAY, T0 + 4 * DAY + 7)]
    assert fetch_spans(days, todo, 366) == todo
    assert fetch_spans(days, [], 366) == []
    assert fetch_spans(days, todo, 1) == [
        Range(T0, T0 + DAY),
        Range(T0 + DAY, T0 + DAY + 3600),
        Range(T0 + 3 * DAY, T0 + 4 * DAY),
        Range(T0 + 4 * DAY, T0 + 4 * DAY + 7),
    ]


def test_flags_of_one_fetch_are_counted_on_the_day_of_each_row() -> None:
    from seamless_assets.core.funding import FUNDING_FLAGS, conform_funding
    from seamless_assets.event_pipeline import partition_flags

    span = Range(T0, T0 + 2 * DAY)
    rows = [
        {"timestamp": T0 * 1000, "fundingRate": 0.0001, "info": {"markPrice": "42000"}},
        {"timestamp": T0 * 1000, "fundingRate": 0.0002, "info": {"markPrice": "42001"}},
        {"timestamp": (T0 + DAY) * 1000, "fundingRate": "x", "info": {"markPrice": "1"}},
        {"timestamp": (T0 + DAY + 8 * 3600) * 1000, "fundingRate": "0.0001", "info": {}},
        {"timestamp": "garbage", "fundingRate": 0.0001, "info": {}},
    ]
    days = [Range(T0, T0 + DAY), Range(T0 + DAY, T0 + 2 * DAY)]
    flags = partition_flags(conform_funding(rows, span), days, FUNDING_FLAGS)
    first, second = (flags[d] for d in days)
    # the unreadable time is listed at the fetch's start: the first day
    assert first["duplicate_ts"] == 1 and first["invalid_timestamp"] == 1
    assert second["dtype_mismatch"] == 1 and second["dtype_cast"] == 1
    assert sum(first.values()) == 2 and sum(second.values()) == 2
