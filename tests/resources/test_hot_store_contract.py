"""The hot store contract: every backend passes this suite through the `hot_store` fixture."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resources.hot_store import DuckDBHotStore, HotStore
from resources.hot_store.questdb import QuestDBHotStore
from seamless_assets.core.coverage import LedgerGap
from seamless_assets.core.flag_ledger import FlagEvent
from seamless_assets.core.frame import (
    CANONICAL_COLUMNS,
    VALUE_COLUMNS,
    Range,
    empty_frame,
    frame_from_arrays,
    is_canonical,
)
from seamless_assets.errors import StoreError

from .conftest import T0, BarsFactory

NODE = "ohlcv:binance:BTC/USDT:1m"
OTHER = "ohlcv:binance:ETH/USDT:1m"
EVERYTHING = Range(0, 2**62)


def assert_frames_equal(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert is_canonical(got), got.dtypes
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))


def test_is_a_hot_store(hot_store: HotStore) -> None:
    assert isinstance(hot_store, HotStore)


# -- upsert and read ------------------------------------------------------------------------


def test_upsert_is_idempotent(hot_store: HotStore, bars: BarsFactory) -> None:
    frame = bars(T0, 500)
    assert hot_store.upsert(NODE, frame) == 500
    assert hot_store.upsert(NODE, frame) == 500
    assert_frames_equal(hot_store.read_range(NODE, EVERYTHING), frame)
    assert hot_store.bounds(NODE) == (T0, T0 + 499 * 60)


def test_last_write_wins_per_ts(hot_store: HotStore, bars: BarsFactory) -> None:
    first, second = bars(T0, 100, seed=1), bars(T0 + 50 * 60, 100, seed=2, offset=1000)
    hot_store.upsert(NODE, first)
    hot_store.upsert(NODE, second)
    expected = pd.concat([first.iloc[:50], second], ignore_index=True)
    assert_frames_equal(hot_store.read_range(NODE, EVERYTHING), expected)


def test_a_write_replaces_stored_bars_at_its_edges_and_inside_its_holes(
    hot_store: HotStore, bars: BarsFactory
) -> None:
    stored = bars(T0, 10, seed=1)
    hot_store.upsert(NODE, stored.iloc[[0, 5, 9]])
    hot_store.upsert(OTHER, stored)  # another node's bars never conflict
    incoming = bars(T0, 10, seed=2, offset=1000).drop(index=[3, 5]).reset_index(drop=True)
    hot_store.upsert(NODE, incoming)
    expected = pd.concat([incoming, stored.iloc[[5]]]).sort_values("ts")
    assert_frames_equal(hot_store.read_range(NODE, EVERYTHING), expected)
    assert_frames_equal(hot_store.read_range(OTHER, EVERYTHING), stored)


def test_read_range_is_half_open(hot_store: HotStore, bars: BarsFactory) -> None:
    frame = bars(T0, 10)
    hot_store.upsert(NODE, frame)
    got = hot_store.read_range(NODE, Range(T0 + 2 * 60, T0 + 5 * 60))
    assert got["ts"].tolist() == [T0 + 120, T0 + 180, T0 + 240]  # start in, end out
    assert_frames_equal(got, frame.iloc[2:5])
    assert hot_store.read_range(NODE, Range(T0 + 60, T0 + 60)).empty


def test_reads_return_canonical_sorted_frames(hot_store: HotStore, bars: BarsFactory) -> None:
    frame = bars(T0, 50)
    frame.loc[7, "volume"] = np.nan  # NaN survives the round trip
    hot_store.upsert(NODE, frame.iloc[25:])
    hot_store.upsert(NODE, frame.iloc[::-1].iloc[25:])  # older bars, written descending
    got = hot_store.read_range(NODE, EVERYTHING)
    assert tuple(got.columns) == CANONICAL_COLUMNS
    assert_frames_equal(got, frame)


def assert_bit_exact(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert is_canonical(got)
    assert np.array_equal(got["ts"].to_numpy(), expected["ts"].to_numpy())
    for c in VALUE_COLUMNS:
        want, have = expected[c].to_numpy(), got[c].to_numpy()
        assert np.array_equal(np.isnan(have), np.isnan(want)), c
        finite = ~np.isnan(want)
        assert np.array_equal(have[finite].view(np.int64), want[finite].view(np.int64)), c


def test_reads_are_bit_exact(hot_store: HotStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every finite double comes back with the same 64 bits (incl. -0.0, subnormals,
    extremes and arbitrary bit patterns); NaN comes back as NaN."""
    rng = np.random.default_rng(3)
    count = 5_000  # several read batches, with and without NaN
    columns = {}
    for i, c in enumerate(VALUE_COLUMNS):
        bits = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, count, np.int64)
        values = bits.view(np.float64).copy()
        values[~np.isfinite(values)] = 1.0
        special = [-0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                   -1.7976931348623157e308, 0.1, 1 / 3, np.nan]  # fmt: skip
        values[i * 20 : i * 20 + len(special)] = special
        values[-1] = np.nan  # a row that is all NaN
        columns[c] = values
    frame = frame_from_arrays(T0 + np.arange(count, dtype=np.int64) * 60, columns)
    hot_store.upsert(NODE, frame)
    assert_bit_exact(hot_store.read_range(NODE, EVERYTHING), frame)
    if isinstance(hot_store, QuestDBHotStore):  # also without libpq's chunked streaming
        monkeypatch.setattr("psycopg.capabilities.has_stream_chunked", lambda: False)
        assert_bit_exact(hot_store.read_range(NODE, EVERYTHING), frame)


def test_unknown_node_reads_empty(hot_store: HotStore) -> None:
    assert_frames_equal(hot_store.read_range("ohlcv:nowhere:X/Y:1m", EVERYTHING), empty_frame())
    assert hot_store.coverage("ohlcv:nowhere:X/Y:1m", 60) == []
    assert hot_store.bounds("ohlcv:nowhere:X/Y:1m") is None
    assert hot_store.ledger_gaps("ohlcv:nowhere:X/Y:1m") == []


def test_rejects_frames_it_must_not_store(hot_store: HotStore, bars: BarsFactory) -> None:
    frame = bars(T0, 5)
    with pytest.raises(ValueError, match="canonical"):
        hot_store.upsert(NODE, frame.astype({"ts": "float64"}))
    with pytest.raises(ValueError, match="canonical"):
        hot_store.upsert(
            NODE, frame.reindex(columns=["ts", "close", "open", "high", "low", "volume"])
        )
    with pytest.raises(ValueError, match="duplicate"):
        hot_store.upsert(NODE, pd.concat([frame, frame.iloc[[2]]], ignore_index=True))
    assert hot_store.read_range(NODE, EVERYTHING).empty
    assert hot_store.upsert(NODE, empty_frame()) == 0


HOSTILE_IDS = [
    "ohlcv:binance:BTC/USDT:1m",
    "ohlcv:binance:BTC/USDT:1m'",
    "'; DROP TABLE ohlcv; --",
    'ohlcv:x:"quoted":1m',
    "ohlcv:x:../../etc:1m",
    "ohlcv:x:a/b\\c:1m",
    "ohlcv:binance:BTC/USDT:1m%",
    "ohlcv:binance:BTC/USDT:1m OR 1=1",
]


def test_nodes_are_isolated_even_with_hostile_ids(hot_store: HotStore, bars: BarsFactory) -> None:
    frames = {node: bars(T0, 20, seed=i) for i, node in enumerate(HOSTILE_IDS)}
    for node, frame in frames.items():
        hot_store.upsert(node, frame)
        hot_store.record_gaps(node, [LedgerGap(Range(0, 60), f"reason of {node}")])
    for node, frame in frames.items():
        assert_frames_equal(hot_store.read_range(node, EVERYTHING), frame)
        assert hot_store.ledger_gaps(node) == [LedgerGap(Range(0, 60), f"reason of {node}")]
    assert hot_store.node_ids() == sorted(HOSTILE_IDS)
    hot_store.clear_gaps(HOSTILE_IDS[2], EVERYTHING)
    assert hot_store.ledger_gaps(HOSTILE_IDS[2]) == []
    assert len(hot_store.ledger_gaps(HOSTILE_IDS[0])) == 1


# -- coverage -------------------------------------------------------------------------------


def test_coverage_islands(hot_store: HotStore, bars: BarsFactory) -> None:
    frame = bars(T0, 100)
    kept = frame.take(np.r_[0:10, 15:40, 41:42, 60:100])
    hot_store.upsert(NODE, kept)
    minute = 60
    assert hot_store.coverage(NODE, minute) == [
        Range(T0, T0 + 10 * minute),
        Range(T0 + 15 * minute, T0 + 40 * minute),
        Range(T0 + 41 * minute, T0 + 42 * minute),
        Range(T0 + 60 * minute, T0 + 100 * minute),
    ]
    window = Range(T0 + 5 * minute, T0 + 20 * minute)
    assert hot_store.coverage(NODE, minute, window) == [
        Range(T0 + 5 * minute, T0 + 10 * minute),
        Range(T0 + 15 * minute, T0 + 20 * minute),
    ]
    # A bar opening before the window but closing inside it covers the part inside.
    assert hot_store.coverage(NODE, minute, Range(T0 + 30, T0 + 90)) == [Range(T0 + 30, T0 + 90)]
    assert hot_store.coverage(NODE, minute, Range(T0 + 42 * minute, T0 + 60 * minute)) == []


def test_coverage_with_a_coarser_interval_treats_missing_bars_as_gaps(
    hot_store: HotStore, bars: BarsFactory
) -> None:
    hot_store.upsert(OTHER, bars(T0, 4, interval_s=3600).iloc[[0, 1, 3]])
    assert hot_store.coverage(OTHER, 3600) == [
        Range(T0, T0 + 2 * 3600),
        Range(T0 + 3 * 3600, T0 + 4 * 3600),
    ]


# -- gap ledger -----------------------------------------------------------------------------


def test_gap_ledger_is_idempotent(hot_store: HotStore) -> None:
    gap = LedgerGap(Range(T0, T0 + 3600), "maintenance")
    hot_store.record_gaps(NODE, [gap])
    hot_store.record_gaps(NODE, [gap, gap])
    assert hot_store.ledger_gaps(NODE) == [gap]
    assert hot_store.node_ids() == [NODE]


def test_gap_ledger_merges_same_reason_and_keeps_reasons_apart(hot_store: HotStore) -> None:
    hot_store.record_gaps(
        NODE,
        [
            LedgerGap(Range(T0, T0 + 600), "maintenance"),
            LedgerGap(Range(T0 + 600, T0 + 1200), "maintenance"),  # touches: merged
            LedgerGap(Range(T0 + 300, T0 + 900), "no_trades"),  # other reason: kept
        ],
    )
    hot_store.record_gaps(NODE, [LedgerGap(Range(T0 + 1000, T0 + 1500), "maintenance")])
    assert hot_store.ledger_gaps(NODE) == [
        LedgerGap(Range(T0, T0 + 1500), "maintenance"),
        LedgerGap(Range(T0 + 300, T0 + 900), "no_trades"),
    ]
    assert hot_store.ledger_gaps(NODE, Range(T0 + 800, T0 + 2000)) == [
        LedgerGap(Range(T0 + 800, T0 + 900), "no_trades"),
        LedgerGap(Range(T0 + 800, T0 + 1500), "maintenance"),
    ]
    assert hot_store.ledger_gaps(NODE, Range(T0 + 1500, T0 + 2000)) == []


def test_clear_gaps_removes_trims_and_splits(hot_store: HotStore) -> None:
    hot_store.record_gaps(
        NODE,
        [
            LedgerGap(Range(T0, T0 + 1000), "maintenance"),
            LedgerGap(Range(T0 + 2000, T0 + 2100), "no_trades"),
            LedgerGap(Range(T0 + 5000, T0 + 6000), "before_listing"),
        ],
    )
    assert hot_store.clear_gaps(NODE, Range(T0 + 400, T0 + 2500)) == 2
    assert hot_store.clear_gaps(NODE, Range(T0 + 5200, T0 + 5300)) == 1
    assert hot_store.ledger_gaps(NODE) == [
        LedgerGap(Range(T0, T0 + 400), "maintenance"),
        LedgerGap(Range(T0 + 5000, T0 + 5200), "before_listing"),
        LedgerGap(Range(T0 + 5300, T0 + 6000), "before_listing"),
    ]
    assert hot_store.clear_gaps(NODE, Range(T0 + 400, T0 + 2500)) == 0
    assert hot_store.clear_gaps(OTHER, Range(T0, T0 + 10_000)) == 0


# -- conformance-event ledger ---------------------------------------------------------------


def _events(*items: tuple[int, str, int]) -> list[FlagEvent]:
    return [FlagEvent(T0 + offset, flag, n) for offset, flag, n in items]


@pytest.mark.parametrize(
    "recorded",
    [
        _events((0, "duplicate_ts", 2), (60, "ohlc_inconsistent", 1)),
        _events((120, "invalid_timestamp", 1), (120, "ts_cast", 3), (3540, "non_finite", 1)),
        _events(*[(60 * i, "duplicate_ts", i % 3 + 1) for i in range(40)]),
    ],
)
def test_flag_events_are_recorded_idempotently(
    hot_store: HotStore, recorded: list[FlagEvent]
) -> None:
    hour = Range(T0, T0 + 3600)
    hot_store.replace_flag_events(NODE, [hour], recorded)
    hot_store.replace_flag_events(NODE, [hour], recorded)  # the same fetch twice: no change
    assert hot_store.flag_events(NODE) == sorted(recorded)
    assert hot_store.flag_events(NODE, Range(T0 + 60, T0 + 180)) == sorted(
        e for e in recorded if T0 + 60 <= e.ts < T0 + 180
    )
    assert hot_store.flag_events(OTHER) == []


def test_flag_events_merge_repeats_and_ignore_what_lies_outside_the_windows(
    hot_store: HotStore,
) -> None:
    window = Range(T0, T0 + 600)
    given = _events((0, "duplicate_ts", 1), (0, "duplicate_ts", 2), (600, "gap_x", 1))
    given += [FlagEvent(T0 - 60, "ts_cast", 1), FlagEvent(T0 + 60, "ts_cast", 0)]
    hot_store.replace_flag_events(NODE, [window], given)
    assert hot_store.flag_events(NODE) == _events((0, "duplicate_ts", 3))


def test_replacing_flag_events_restates_only_the_windows(hot_store: HotStore) -> None:
    first = _events((0, "duplicate_ts", 1), (600, "ohlc_inconsistent", 2), (1200, "ts_cast", 1))
    hot_store.replace_flag_events(NODE, [Range(T0, T0 + 1800)], first)
    hot_store.replace_flag_events(OTHER, [Range(T0, T0 + 1800)], first)
    # A refetch of [T0+300, T0+900) and [T0+1200, T0+1260) restates those windows only.
    refetched = [Range(T0 + 300, T0 + 900), Range(T0 + 1200, T0 + 1260)]
    hot_store.replace_flag_events(NODE, refetched, _events((660, "non_finite", 1)))
    assert hot_store.flag_events(NODE) == _events((0, "duplicate_ts", 1), (660, "non_finite", 1))
    hot_store.replace_flag_events(NODE, [Range(T0, T0 + 1800)], [])
    assert hot_store.flag_events(NODE) == []
    assert hot_store.flag_events(OTHER) == sorted(first)  # other nodes untouched


def test_flag_events_reject_malformed_entries(hot_store: HotStore) -> None:
    with pytest.raises(ValueError, match="flag events"):
        hot_store.replace_flag_events(NODE, [Range(T0, T0 + 60)], [FlagEvent(T0, "", 1)])
    with pytest.raises(ValueError, match="flag events"):
        hot_store.replace_flag_events(NODE, [Range(T0, T0 + 60)], [FlagEvent(T0, "x", -1)])
    assert hot_store.flag_events(NODE) == []


# -- DuckDB: one writer process per file ------------------------------------------------------

_HOLDER = (
    "import sys, duckdb\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "sys.stdin.readline()\n"
    "con.close()\n"
)


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    """Another process that opens the DuckDB file and keeps it until told on stdin."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=30)


def test_duckdb_waits_for_another_process_then_proceeds(tmp_path: Path, bars: BarsFactory) -> None:
    path = tmp_path / "shared.duckdb"
    store = DuckDBHotStore(path, lock_timeout_s=30)
    store.upsert(NODE, bars(T0, 3))
    holder = _hold_lock(path)
    releaser = threading.Timer(0.8, _release, args=[holder])
    started = time.monotonic()
    releaser.start()
    try:
        assert store.upsert(NODE, bars(T0 + 180, 3)) == 3
    finally:
        releaser.join()
    assert time.monotonic() - started >= 0.7
    assert len(store.read_range(NODE, EVERYTHING)) == 6


def test_duckdb_gives_up_after_the_bounded_wait(tmp_path: Path, bars: BarsFactory) -> None:
    path = tmp_path / "shared.duckdb"
    store = DuckDBHotStore(path, lock_timeout_s=0.6)
    holder = _hold_lock(path)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="locked by another process") as raised:
            store.read_range(NODE, EVERYTHING)
    finally:
        _release(holder)
    assert 0.5 <= time.monotonic() - started < 10
    assert str(path) in str(raised.value)
    assert store.upsert(NODE, bars(T0, 2)) == 2  # usable again once released


def test_duckdb_files_made_with_the_old_keyed_table_upsert_the_same(
    tmp_path: Path, bars: BarsFactory
) -> None:
    """Files created before the table lost its primary key keep it; restating bars there
    (delete, then insert, in one transaction) must not trip the key."""
    import duckdb

    path = tmp_path / "keyed.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE ohlcv (node_key INTEGER NOT NULL, ts BIGINT NOT NULL, open DOUBLE, "
            "high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, PRIMARY KEY (node_key, ts))"
        )
    store = DuckDBHotStore(path)
    first, second = bars(T0, 100, seed=1), bars(T0 + 50 * 60, 100, seed=2, offset=1000)
    store.upsert(NODE, first)
    store.upsert(NODE, second)
    store.upsert(NODE, second)
    expected = pd.concat([first.iloc[:50], second], ignore_index=True)
    assert_frames_equal(store.read_range(NODE, EVERYTHING), expected)
    with duckdb.connect(str(path)) as con:
        keys = con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'ohlcv' "
            "AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    assert keys == [(1,)]  # the old file kept its key


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = DuckDBHotStore(tmp_path / "closed.duckdb")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.node_ids()


def test_threads_of_one_process_share_a_store(hot_store: HotStore, bars: BarsFactory) -> None:
    """20 threads reading and writing at once (the reader's concurrent fetches) all succeed."""
    frame = bars(T0, 600)
    hot_store.upsert(NODE, frame)
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def work(i: int) -> None:
        try:
            start.wait()
            if i % 5 == 0:
                hot_store.upsert(OTHER, bars(T0 + i * 60, 10))
            for _ in range(10):
                got = hot_store.read_range(NODE, Range(T0, T0 + 600 * 60))
                assert len(got) == 600
                assert hot_store.coverage(NODE, 60) == [Range(T0, T0 + 600 * 60)]
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- sessions -------------------------------------------------------------------------------


def test_a_session_changes_no_result(hot_store: HotStore, bars: BarsFactory) -> None:
    """Inside a session (nested too) operations commit and read exactly as outside it; a
    failed operation inside leaves the session usable and stores nothing of itself."""
    first, second = bars(T0, 100, seed=1), bars(T0 + 50 * 60, 100, seed=2, offset=1000)
    with hot_store.session():
        hot_store.upsert(NODE, first)
        with hot_store.session():
            hot_store.upsert(NODE, second)
            hot_store.record_gaps(NODE, [LedgerGap(Range(T0 - 600, T0), "exchange_gap")])
        with pytest.raises(ValueError, match="node_id"):
            hot_store.upsert("", first)  # refused inside the write (after it began)
        expected = pd.concat([first.iloc[:50], second], ignore_index=True)
        assert_frames_equal(hot_store.read_range(NODE, EVERYTHING), expected)
    assert_frames_equal(hot_store.read_range(NODE, EVERYTHING), expected)
    assert hot_store.coverage(NODE, 60) == [Range(T0, T0 + 150 * 60)]
    assert [g.range for g in hot_store.ledger_gaps(NODE)] == [Range(T0 - 600, T0)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_sequence_of_operations_runs_in_one_session(
    hot_store: HotStore, bars: BarsFactory, seed: int
) -> None:
    """A run settles several chunks in one session: every operation works after any other
    inside it (none leaves its connection busy), and reads see the session's own writes."""
    rng = random.Random(seed)
    frame = bars(T0, 200, seed=seed)
    other = "ohlcv:binance:ETH/USDT:1m"
    ops = [
        lambda: hot_store.bounds(NODE),
        lambda: hot_store.bounds(other),
        lambda: hot_store.read_range(NODE, EVERYTHING),
        lambda: hot_store.coverage(NODE, 60),
        lambda: hot_store.ledger_gaps(NODE),
        lambda: hot_store.flag_events(NODE, EVERYTHING),
        lambda: hot_store.record_gaps(NODE, [LedgerGap(Range(T0 - 600, T0), "exchange_gap")]),
        lambda: hot_store.upsert(other, frame.iloc[:10]),
    ]
    with hot_store.session():
        hot_store.upsert(NODE, frame.iloc[:100])
        for op in rng.sample(ops, len(ops)) * 2:
            op()
        hot_store.upsert(NODE, frame.iloc[100:])
        assert hot_store.bounds(NODE) == (T0, T0 + 199 * 60)
        assert_frames_equal(hot_store.read_range(NODE, EVERYTHING), frame)
    assert_frames_equal(hot_store.read_range(NODE, EVERYTHING), frame)
    assert len(hot_store.read_range(other, EVERYTHING)) == 10


def test_another_thread_waits_for_a_session_and_sees_its_writes(
    hot_store: HotStore, bars: BarsFactory
) -> None:
    frame = bars(T0, 100)
    seen: list[int] = []
    with hot_store.session():
        hot_store.upsert(NODE, frame)
        reader = threading.Thread(
            target=lambda: seen.append(len(hot_store.read_range(NODE, EVERYTHING)))
        )
        reader.start()
        reader.join(timeout=0.5)
    reader.join(timeout=30)
    assert seen == [100]
