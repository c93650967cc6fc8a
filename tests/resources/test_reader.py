"""The read resource over snapshots: backtest/research/dryrun policy, reproducibility across
restatements, missing partitions, tampering, and the result cache. Real sandbox exchange,
real pipeline, real stores."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from resources.artifacts.base import DATA_FILE, MANIFEST_FILE, decode_segment, encode_segment
from resources.hot_store.duckdb import DuckDBHotStore
from resources.reader import ComputeContext, SeamlessReader, frame_bytes
from sandbox import SandboxConfig, SandboxExchange, expected_bars
from seamless_assets.core.fingerprint import fingerprint_dirname
from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.errors import (
    ArtifactIntegrityError,
    AsOfRequired,
    MissingPartitions,
    SnapshotNotFound,
)

from .test_reader_support import (
    DAY,
    NODE,
    NODE_ID,
    T0,
    advance,
    artifacts_of,
    day,
    endpoint_requests,
    frozen_sandbox,
    materialize,
    project,
    reader_for,
)

RESTATED = {"BTC/USDT": [{"start": T0 + DAY + 3600, "end": T0 + DAY + 7200, "version": 1}]}


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with frozen_sandbox() as exchange:
        yield exchange


def backtest(as_of: object = None, **kw: object) -> ComputeContext:
    return ComputeContext(world_id="w1", execution_domain="backtest", as_of=as_of, **kw)  # type: ignore[arg-type]


def test_backtest_without_as_of_fails_clearly(tmp_path: Path, sandbox: SandboxExchange) -> None:
    with reader_for(project(tmp_path, sandbox)) as reader:
        with pytest.raises(AsOfRequired, match=r"backtest .* needs an as_of: pass ComputeContext"):
            reader.fetch(NODE_ID, T0, T0 + DAY, backtest())
        with pytest.raises(AsOfRequired, match="research"):
            reader.fetch(NODE_ID, T0, T0 + DAY, ComputeContext("w1", "research"))


def test_same_as_of_is_byte_identical_after_a_restatement_and_a_later_as_of_sees_it(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config = project(tmp_path, sandbox)
    materialize(config, [0, 1, 2])
    first = advance(config, T0 + 3 * DAY)
    window = (T0, T0 + 3 * DAY)
    with reader_for(config) as reader:
        before, meta_before = reader.fetch(NODE_ID, *window, backtest(first.as_of_iso))

    # The exchange restates an hour of day 1; the partition is re-materialized (a new
    # segment), day 3 is added and the snapshot advances.
    sandbox.configure(restatements=RESTATED)
    materialize(config, [1, 3], refetch=True)
    second = advance(config, T0 + 4 * DAY)
    assert second.as_of_s == T0 + 4 * DAY

    with reader_for(config) as reader:  # a new reader: nothing cached
        again, meta_again = reader.fetch(NODE_ID, *window, backtest(first.as_of_s))
        newer, meta_newer = reader.fetch(NODE_ID, *window, backtest(second.as_of_iso))

    assert frame_bytes(again) == frame_bytes(before)
    assert meta_again.dataset_fingerprint == meta_before.dataset_fingerprint
    assert meta_again.snapshot_fingerprint == first.fingerprint
    assert meta_before.as_of == iso_utc(T0 + 3 * DAY) == first.as_of_iso
    assert meta_before.source == "snapshot" and not meta_before.partial
    assert meta_before.coverage_bounds == (T0, T0 + 3 * DAY)
    assert meta_before.coverage_ratio == 1.0
    assert set(meta_before.conformance_flags) >= {"gap", "duplicate_ts", "ohlc_inconsistent"}
    original = expected_bars("BTC/USDT", 60, *window)
    np.testing.assert_array_equal(before["close"].to_numpy(), original["close"])

    assert meta_newer.as_of == second.as_of_iso
    assert meta_newer.dataset_fingerprint != meta_before.dataset_fingerprint
    restated = expected_bars("BTC/USDT", 60, *window, SandboxConfig(restatements=RESTATED))
    np.testing.assert_array_equal(newer["close"].to_numpy(), restated["close"])
    changed = np.flatnonzero(newer["close"].to_numpy() != before["close"].to_numpy())
    assert len(changed) == 60
    assert newer["ts"].to_numpy()[changed[0]] == T0 + DAY + 3600


def test_an_uncovered_backtest_range_fails_naming_the_missing_partitions(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config = project(tmp_path, sandbox)
    materialize(config, [0, 2, 3])  # day 1 (2024-01-02) is never materialized
    snapshot = advance(config, T0 + 4 * DAY)
    with reader_for(config) as reader:
        with pytest.raises(MissingPartitions) as hole:
            reader.fetch(NODE_ID, T0, T0 + 4 * DAY, backtest(snapshot.as_of_iso))
        assert hole.value.partition_keys == ["2024-01-02"]
        message = str(hole.value)
        assert "2024-01-02 were never materialized: materialize them" in message
        assert "`seamless backfill ohlcv:binance:BTC/USDT:1m --start 2024-01-02" in message
        assert "then the as_of sensor commits them" in message
        assert "next tick" not in message  # nothing is published that a commit would add

        with pytest.raises(MissingPartitions) as beyond:
            reader.fetch(NODE_ID, T0 + 2 * DAY, T0 + 6 * DAY, backtest(snapshot.as_of_iso))
        assert beyond.value.partition_keys == ["2024-01-05", "2024-01-06"]
        assert "2024-01-05, 2024-01-06 were never materialized" in str(beyond.value)

        with pytest.raises(SnapshotNotFound, match="after the latest snapshot"):
            reader.fetch(NODE_ID, T0, T0 + DAY, backtest(T0 + 5 * DAY))
        with pytest.raises(SnapshotNotFound, match="before the first snapshot"):
            reader.fetch(NODE_ID, T0, T0 + DAY, backtest("2023-06-01T00:00:00Z"))

        # A covered window of the same snapshot reads fine (research domain too).
        frame, meta = reader.fetch(
            NODE_ID,
            T0 + 2 * DAY,
            T0 + 3 * DAY,
            ComputeContext("w1", "research", as_of=snapshot.as_of_s),
        )
        assert len(frame) == 1440 and meta.execution_domain == "research"


def test_missing_partition_advice_says_what_truthfully_adds_them(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    """Published but not yet committed -> the next as_of tick; in a newer snapshot -> pin
    it; never materialized -> materialize, then the sensor commits."""
    config = project(tmp_path, sandbox)
    materialize(config, [0, 1])
    first = advance(config, T0 + 2 * DAY)
    materialize(config, [2])
    second = advance(config, T0 + 3 * DAY)
    materialize(config, [3, 5])  # published, not committed; day 4 never materialized
    with reader_for(config) as reader:
        with pytest.raises(MissingPartitions) as pinned:
            reader.fetch(NODE_ID, T0, T0 + 6 * DAY, backtest(first.as_of_s))
        message = str(pinned.value)
        assert pinned.value.partition_keys == [
            "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-06",
        ]  # fmt: skip
        assert f"2024-01-03 are in the newer snapshot as_of {second.as_of_iso}" in message
        assert (
            "2024-01-04, 2024-01-06 are published but not yet in a snapshot: the as_of "
            "sensor's next tick (or `seamless snapshot ohlcv:binance:BTC/USDT:1m`) commits"
        ) in message
        assert "2024-01-05 were never materialized: materialize them" in message

        # The advice is true: committing adds exactly the published days.
        third = advance(config, T0 + 6 * DAY)
        with pytest.raises(MissingPartitions) as after:
            reader.fetch(NODE_ID, T0, T0 + 6 * DAY, backtest(third.as_of_s))
        assert after.value.partition_keys == ["2024-01-05"]
        assert "published but not yet" not in str(after.value)


def _tamper_bars(data_file: Path, manifest_file: Path) -> None:
    frame = decode_segment(data_file.read_bytes(), str(data_file))
    frame.loc[100, "close"] += 1.0  # a valid Parquet file with one price changed
    data_file.write_bytes(encode_segment(frame))


def _tamper_manifest(field: str) -> Callable[[Path, Path], None]:
    def tamper(data_file: Path, manifest_file: Path) -> None:
        manifest = json.loads(manifest_file.read_text())
        if field == "row_count":
            manifest["row_count"] += 1
        else:
            manifest["conformance"]["flags"]["gap"] += 7
        manifest_file.write_text(json.dumps(manifest, sort_keys=True))

    return tamper


@pytest.mark.parametrize(
    "tamper",
    [_tamper_bars, _tamper_manifest("row_count"), _tamper_manifest("flags")],
    ids=["bars", "manifest row_count", "manifest flags"],
)
@pytest.mark.parametrize("on_violation", ["FAIL_FAST", "PARTIAL_FILL"])
def test_a_tampered_segment_is_refused_never_served_partial(
    tmp_path: Path,
    sandbox: SandboxExchange,
    tamper: Callable[[Path, Path], None],
    on_violation: str,
) -> None:
    """Whatever the domain does on an SLA breach, a tampered artifact is an error naming
    the file (the store's typed error, unchanged), never a partial frame."""
    config = project(
        tmp_path, sandbox, domains={"backtest": {"sla": {"on_violation": on_violation}}}
    )
    materialize(config, [0, 1])
    snapshot = advance(config, T0 + 2 * DAY)
    segment = snapshot.segments[1]
    root = Path(config.artifact_uri.removeprefix("file://"))
    (folder,) = root.rglob(fingerprint_dirname(segment.fingerprint))
    tamper(folder / DATA_FILE, folder / MANIFEST_FILE)

    with reader_for(config) as reader:
        reader.fetch(NODE_ID, T0, T0 + DAY, backtest(snapshot.as_of_s))  # day 0 is intact
        with pytest.raises(ArtifactIntegrityError, match=fingerprint_dirname(segment.fingerprint)):
            reader.fetch(NODE_ID, T0, T0 + 2 * DAY, backtest(snapshot.as_of_s))
        assert reader.metrics().get("partial_fill_returns", 0) == 0


def test_cache_hits_only_immutable_reads_and_is_purged_on_a_domain_switch(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config = project(tmp_path, sandbox, cache={"enable": True, "ttl_ms": 3000, "max_shards": 2})
    materialize(config, [0, 1])
    as_of = advance(config, T0 + 2 * DAY).as_of_s
    with reader_for(config) as reader:
        first, meta1 = reader.fetch(NODE_ID, T0, T0 + DAY, backtest(as_of))
        first.loc[0, "close"] = -1.0  # the caller's copy: must not leak into the cache
        second, meta2 = reader.fetch(NODE_ID, T0, T0 + DAY, backtest(as_of))
        stats = reader.cache_stats()
        assert (stats.hits, stats.misses, stats.resident) == (1, 1, 1)
        assert not meta1.cache_hit and meta2.cache_hit
        assert second.loc[0, "close"] != -1.0
        assert meta2.dataset_fingerprint == meta1.dataset_fingerprint
        assert reader.last_fetch_metadata is not None and reader.last_fetch_metadata.cache_hit

        # Another world, as_of or window is another key; LRU keeps max_shards entries.
        reader.fetch(NODE_ID, T0, T0 + DAY, ComputeContext("w2", "backtest", as_of=as_of))
        reader.fetch(NODE_ID, T0, T0 + 2 * DAY, backtest(as_of))
        stats = reader.cache_stats()
        assert (stats.misses, stats.resident, stats.evictions) == (3, 2, 1)

        # w1 switches to live: its entries go, w2's stay; live reads are never cached.
        reader.fetch(NODE_ID, T0, T0 + DAY, ComputeContext("w1", "live", strategy="PARTIAL_FILL"))
        reader.fetch(NODE_ID, T0, T0 + DAY, ComputeContext("w1", "live", strategy="PARTIAL_FILL"))
        stats = reader.cache_stats()
        assert (stats.hits, stats.resident, stats.purges) == (1, 1, 1)

        reader.fetch(NODE_ID, T0, T0 + DAY, ComputeContext("w2", "backtest", as_of=as_of))
        assert reader.cache_stats().hits == 2
        time.sleep(3.05)  # ttl_ms = 3000
        _, meta = reader.fetch(NODE_ID, T0, T0 + DAY, ComputeContext("w2", "backtest", as_of=as_of))
        assert not meta.cache_hit and reader.cache_stats().expirations == 1
        metrics = reader.metrics()
        assert metrics["seamless_cache_hit_total"] == 2 and metrics["seamless_cache_resident"] >= 1


def test_dryrun_publishes_fresh_bars_as_segments_before_using_them(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config = project(tmp_path, sandbox)
    materialize(config, [0, 1])
    snapshot = advance(config, T0 + 2 * DAY)
    as_of = T0 + 4 * DAY  # two days past the snapshot: fresh bars needed
    artifacts = artifacts_of(config)
    assert artifacts.head(NODE, day(2)) is None
    dry = ComputeContext("w1", "dryrun", as_of=as_of, strategy="AUTO_BACKFILL")
    with reader_for(config) as reader:
        frame, meta = reader.fetch(NODE_ID, T0, T0 + 5 * DAY, dry)
    # Days 2 and 3 were fetched, published, and read back from their segments; nothing
    # after as_of is delivered.
    assert artifacts.head(NODE, day(2)) and artifacts.head(NODE, day(3))
    assert meta.source == "snapshot+artifacts" and meta.partial
    assert meta.missing == (Range(as_of, T0 + 5 * DAY),)
    assert "after the run's as_of 2024-01-05T00:00:00Z" in (meta.downgrade_reason or "")
    assert "not artifactized" not in (meta.downgrade_reason or "")
    assert meta.snapshot_fingerprint == snapshot.fingerprint
    assert meta.as_of_s == as_of and meta.coverage_bounds == (T0, T0 + 4 * DAY)
    assert len(frame) == 4 * 1440 and int(frame["ts"].max()) == as_of - 60
    expected = expected_bars("BTC/USDT", 60, T0, as_of)
    np.testing.assert_array_equal(frame["close"].to_numpy(), expected["close"])
    with reader_for(config) as reader:  # within as_of, nothing is partial
        _, meta = reader.fetch(NODE_ID, T0, as_of, dry)
    assert not meta.partial and meta.downgrade_reason is None and meta.coverage_ratio == 1.0

    # A strategy that may not fetch, over bars the hot store lacks: refused or partial.
    sandbox.reset()
    with reader_for(config) as reader:
        later = ComputeContext("w1", "dryrun", as_of=T0 + 6 * DAY, strategy="FAIL_FAST")
        with pytest.raises(MissingPartitions) as missing:
            reader.fetch(NODE_ID, T0, T0 + 6 * DAY, later)
        assert missing.value.partition_keys == ["2024-01-05", "2024-01-06"]
        partial = ComputeContext("w1", "dryrun", as_of=T0 + 6 * DAY, strategy="PARTIAL_FILL")
        frame, meta = reader.fetch(NODE_ID, T0, T0 + 6 * DAY, partial)
    assert meta.partial and "not artifactized yet" in (meta.downgrade_reason or "")
    assert len(frame) == 4 * 1440
    assert meta.missing == (Range(T0 + 4 * DAY, T0 + 6 * DAY),)
    assert endpoint_requests(sandbox, "klines") == 0


def test_from_config_and_dagster_resource(tmp_path: Path, sandbox: SandboxExchange) -> None:
    import dagster as dg

    config = project(tmp_path, sandbox)
    materialize(config, [0])
    as_of = advance(config, T0 + DAY).as_of_s
    with SeamlessReader.from_config(config.source) as reader:
        frame, _ = reader.fetch(NODE_ID, "2024-01-01", "2024-01-02", backtest(as_of))
        assert len(frame) == 1440

    @dg.asset
    def downstream(reader: SeamlessReader) -> int:
        frame, meta = reader.fetch(NODE_ID, T0, T0 + DAY, backtest(as_of))
        assert meta.dataset_fingerprint
        return len(frame)

    result = dg.materialize(
        [downstream], resources={"reader": SeamlessReader(config_path=str(config.source))}
    )
    assert result.success and result.output_for_node("downstream") == 1440


def test_a_second_hot_store_sees_no_stale_reads(tmp_path: Path, sandbox: SandboxExchange) -> None:
    """Backtests never touch the hot store: a reader over an empty one reads the same."""
    config = project(tmp_path, sandbox)
    materialize(config, [0])
    as_of = advance(config, T0 + DAY).as_of_s
    empty = DuckDBHotStore(tmp_path / "empty.duckdb")
    with reader_for(config, hot=empty) as reader:
        frame, meta = reader.fetch(NODE_ID, T0, T0 + DAY, backtest(as_of))
    assert len(frame) == 1440 and meta.source == "snapshot"
