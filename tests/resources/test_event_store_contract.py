"""The event store contract: every backend passes this suite through the `event_store`
fixture (funding events and trades beside the bars, with answered windows)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resources.hot_store.duckdb import DuckDBHotStore
from resources.hot_store.duckdb_events import DuckDBEventStore
from resources.hot_store.event_tables import MAX_TS_MS, EventStore
from resources.hot_store.questdb_events import QuestDBEventStore
from seamless_assets.core.frame import Range
from seamless_assets.event_nodes import EVENT_KINDS
from tests.services import QUESTDB_DSN, QUESTDB_ILP, QUESTDB_PG_ADDR, require_service

from .conftest import T0, BarsFactory

FUNDING = "funding:binance:BTC/USDT:USDT"
TRADES = "trades:binance:BTC/USDT"
OTHER_TRADES = "trades:binance:ETH/USDT"
EVERYTHING = Range(0, 2**62)
T0_MS = T0 * 1000
DAY_MS = 86_400_000


@pytest.fixture(params=["duckdb", "questdb"])
def event_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    store: EventStore
    if request.param == "duckdb":
        store = DuckDBEventStore(tmp_path / "hot.duckdb", lock_timeout_s=10)
    elif request.param == "questdb":
        require_service("questdb", QUESTDB_PG_ADDR)
        # A fresh table prefix per test keeps tests independent on one shared server.
        prefix = f"t{uuid.uuid4().hex[:12]}_"
        store = QuestDBEventStore(QUESTDB_DSN, QUESTDB_ILP, table_prefix=prefix)
    else:  # pragma: no cover - a new backend must add its branch
        raise ValueError(request.param)
    yield store
    if isinstance(store, QuestDBEventStore):
        store.drop_tables()
    store.close()


def funding(ts_ms: list[int] | np.ndarray, seed: int = 0) -> pd.DataFrame:
    ts = np.asarray(ts_ms, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ts": ts,
            "funding_rate": rng.normal(0, 1e-4, len(ts)),
            "mark_price": 20_000 + rng.random(len(ts)) * 1000,
        }
    )


def trades(
    ids: list[int] | np.ndarray, ts_ms: list[int] | np.ndarray, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(ids)
    frame = pd.DataFrame(
        {
            "id": np.asarray(ids, dtype=np.int64),
            "ts": np.asarray(ts_ms, dtype=np.int64),
            "price": 20_000 + rng.random(n) * 100,
            "amount": rng.random(n),
            "side": rng.choice(np.array([-1, 0, 1], dtype=np.int8), n),
        }
    )
    return frame.sort_values(["ts", "id"], kind="stable").reset_index(drop=True)


def assert_bit_exact(got: pd.DataFrame, expected: pd.DataFrame, kind: str) -> None:
    """Same columns, dtypes, order and values; floats compared by their 64 bits (NaN
    only as NaN)."""
    spec = EVENT_KINDS[kind]
    assert {c: str(got[c].dtype) for c in got.columns} == dict(spec.dtypes)
    assert tuple(got.columns) == spec.columns
    assert len(got) == len(expected)
    for column, dtype in spec.dtypes.items():
        have, want = got[column].to_numpy(), expected[column].to_numpy()
        if dtype == "float64":
            assert np.array_equal(np.isnan(have), np.isnan(want)), column
            finite = ~np.isnan(want)
            assert np.array_equal(have[finite].view(np.int64), want[finite].view(np.int64)), column
        else:
            assert np.array_equal(have, want), column


def test_is_an_event_store(event_store: EventStore) -> None:
    assert isinstance(event_store, EventStore)


# -- round trips ---------------------------------------------------------------------------


def test_funding_round_trips_exactly(event_store: EventStore) -> None:
    """Binance's ms jitter stays, NaN mark prices stay NaN, every double keeps its bits."""
    jittered = [1569888000002, 1569916800000, 1569945600001, 1569974400007, 1570003200999]
    frame = funding(jittered)
    frame.loc[1, "mark_price"] = np.nan  # the exchange gave no mark price
    frame.loc[2, "funding_rate"] = -0.0
    frame.loc[3, "funding_rate"] = 5e-324  # subnormal
    frame.loc[4, "mark_price"] = 1 / 3
    assert event_store.upsert_events("funding", FUNDING, frame) == 5
    got = event_store.read_events("funding", FUNDING, EVERYTHING)
    assert_bit_exact(got, frame, "funding")
    assert got["ts"].tolist() == jittered
    got.loc[0, "funding_rate"] = 1.0  # a read is the caller's own frame
    assert event_store.event_bounds("funding", FUNDING) == (1569888000002, 1570003200999)


def test_trades_round_trip_exactly_sorted_by_ts_then_id(event_store: EventStore) -> None:
    big = 2**53 + 1  # ids beyond float64's exact integers stay exact
    late = trades([20, 21, 22], [T0_MS + 9, T0_MS + 9, T0_MS + DAY_MS + 3], seed=2)
    late.loc[0, "price"] = np.nan
    # Older trades written later, one sharing a ms with stored ones but of a smaller id.
    early = trades([big + 7, big + 3, 12, 15], [T0_MS + 5, T0_MS + 5, T0_MS + 1, T0_MS + 9])
    assert event_store.upsert_events("trades", TRADES, late) == 3
    assert event_store.upsert_events("trades", TRADES, early) == 4
    got = event_store.read_events("trades", TRADES, EVERYTHING)
    expected = pd.concat([early, late]).sort_values(["ts", "id"]).reset_index(drop=True)
    assert_bit_exact(got, expected, "trades")
    assert got["id"].tolist() == [12, big + 3, big + 7, 15, 20, 21, 22]
    assert event_store.event_bounds("trades", TRADES) == (T0_MS + 1, T0_MS + DAY_MS + 3)


def test_extreme_timestamps_round_trip(event_store: EventStore) -> None:
    frame = funding([0, 1, MAX_TS_MS])
    assert event_store.upsert_events("funding", FUNDING, frame) == 3
    assert_bit_exact(event_store.read_events("funding", FUNDING, EVERYTHING), frame, "funding")
    assert event_store.event_bounds("funding", FUNDING) == (0, MAX_TS_MS)


def test_unknown_nodes_read_empty_frames_of_the_kinds_dtypes(event_store: EventStore) -> None:
    for kind in EVENT_KINDS:
        got = event_store.read_events(kind, f"{kind}:nowhere:X/Y", EVERYTHING)
        assert_bit_exact(got, EVENT_KINDS[kind].empty(), kind)
        assert event_store.event_bounds(kind, f"{kind}:nowhere:X/Y") is None
        assert event_store.answered(kind, f"{kind}:nowhere:X/Y") == []
    assert event_store.upsert_events("trades", TRADES, EVENT_KINDS["trades"].empty()) == 0
    assert event_store.event_bounds("trades", TRADES) is None


# -- key collisions --------------------------------------------------------------------------


def test_funding_last_write_wins_per_ts(event_store: EventStore) -> None:
    first = funding([T0_MS, T0_MS + 8 * 3600_000 + 2, T0_MS + 16 * 3600_000], seed=1)
    event_store.upsert_events("funding", FUNDING, first)
    restated = funding([T0_MS + 8 * 3600_000 + 2, T0_MS + 24 * 3600_000], seed=2)
    restated.loc[0, "mark_price"] = np.nan  # a restatement may drop the mark price too
    assert event_store.upsert_events("funding", FUNDING, restated) == 2
    expected = pd.concat([first.iloc[[0]], restated.iloc[[0]], first.iloc[[2]], restated.iloc[[1]]])
    got = event_store.read_events("funding", FUNDING, EVERYTHING)
    assert_bit_exact(got, expected.reset_index(drop=True), "funding")
    assert event_store.upsert_events("funding", FUNDING, restated) == 2  # idempotent
    assert_bit_exact(event_store.read_events("funding", FUNDING, EVERYTHING), got, "funding")


def test_trades_first_stored_version_of_an_id_wins(event_store: EventStore) -> None:
    first = trades([1, 2, 3], [T0_MS + 10, T0_MS + 20, T0_MS + 30], seed=1)
    assert event_store.upsert_events("trades", TRADES, first) == 3
    # Id 2 again with another ts (another day, so another QuestDB partition) and price, id 3
    # with the same ts but other values, and two new trades.
    later = trades([2, 3, 4, 5], [T0_MS + DAY_MS, T0_MS + 30, T0_MS + 40, T0_MS + 5], seed=2)
    assert event_store.upsert_events("trades", TRADES, later) == 2  # only the new ids count
    expected = pd.concat([first, later[later["id"].isin([4, 5])]])
    expected = expected.sort_values(["ts", "id"]).reset_index(drop=True)
    assert_bit_exact(event_store.read_events("trades", TRADES, EVERYTHING), expected, "trades")
    assert event_store.read_events("trades", TRADES, Range(T0 + 86_400, T0 + 2 * 86_400)).empty
    assert event_store.event_bounds("trades", TRADES) == (T0_MS + 5, T0_MS + 40)
    assert event_store.upsert_events("trades", TRADES, later) == 0  # all stored: nothing new
    assert event_store.upsert_events("trades", TRADES, first) == 0
    assert_bit_exact(event_store.read_events("trades", TRADES, EVERYTHING), expected, "trades")


# -- windows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["funding", "trades"])
def test_reads_are_half_open_in_milliseconds(event_store: EventStore, kind: str) -> None:
    start, end = T0 + 3600, T0 + 7200
    edges = [start * 1000 - 1, start * 1000, start * 1000 + 1, end * 1000 - 1, end * 1000]
    node = FUNDING if kind == "funding" else TRADES
    frame = funding(edges) if kind == "funding" else trades(list(range(100, 105)), edges)
    event_store.upsert_events(kind, node, frame)
    got = event_store.read_events(kind, node, Range(start, end))
    assert got["ts"].tolist() == edges[1:4]  # start's ms in, end's ms out
    assert_bit_exact(got, frame.iloc[1:4].reset_index(drop=True), kind)
    assert event_store.read_events(kind, node, Range(start, start)).empty
    after = event_store.read_events(kind, node, Range(end, end + 3600))
    assert after["ts"].tolist() == [end * 1000]


def test_answered_windows_merge_clip_and_are_idempotent(event_store: EventStore) -> None:
    event_store.record_answered(
        "funding",
        FUNDING,
        [Range(T0, T0 + 600), Range(T0 + 600, T0 + 1200), Range(T0 + 2000, T0 + 3000)],
    )
    assert event_store.answered("funding", FUNDING) == [
        Range(T0, T0 + 1200),  # touching windows merged
        Range(T0 + 2000, T0 + 3000),
    ]
    event_store.record_answered("funding", FUNDING, [Range(T0 + 1000, T0 + 1500)])  # overlaps
    event_store.record_answered("funding", FUNDING, [Range(T0 + 1000, T0 + 1500)])  # again
    event_store.record_answered("funding", FUNDING, [Range(T0 + 5, T0 + 5)])  # empty: ignored
    event_store.record_answered("funding", FUNDING, [])
    assert event_store.answered("funding", FUNDING) == [
        Range(T0, T0 + 1500),
        Range(T0 + 2000, T0 + 3000),
    ]
    assert event_store.answered("funding", FUNDING, Range(T0 + 1400, T0 + 2500)) == [
        Range(T0 + 1400, T0 + 1500),
        Range(T0 + 2000, T0 + 2500),
    ]
    assert event_store.answered("funding", FUNDING, Range(T0 + 1500, T0 + 2000)) == []
    event_store.record_answered("funding", FUNDING, [Range(T0 - 100, T0 + 4000)])  # spans all
    assert event_store.answered("funding", FUNDING) == [Range(T0 - 100, T0 + 4000)]
    with pytest.raises(ValueError, match="Range"):
        event_store.record_answered("funding", FUNDING, [(T0, T0 + 60)])  # type: ignore[list-item]


def test_kinds_and_nodes_are_isolated(event_store: EventStore) -> None:
    node = "trades:binance:BTC/USDT:USDT"  # one id string under both kinds
    fund = funding([T0_MS, T0_MS + 1000])
    trade = trades([7, 8], [T0_MS, T0_MS + 1000])
    other = trades([7, 9], [T0_MS + 50, T0_MS + 60], seed=5)
    event_store.upsert_events("funding", node, fund)
    assert event_store.upsert_events("trades", node, trade) == 2
    assert event_store.upsert_events("trades", OTHER_TRADES, other) == 2  # id 7 is another's
    event_store.record_answered("funding", node, [Range(T0, T0 + 60)])
    event_store.record_answered("trades", node, [Range(T0 + 120, T0 + 180)])
    event_store.record_answered("trades", OTHER_TRADES, [Range(T0 + 600, T0 + 660)])
    assert_bit_exact(event_store.read_events("funding", node, EVERYTHING), fund, "funding")
    assert_bit_exact(event_store.read_events("trades", node, EVERYTHING), trade, "trades")
    assert_bit_exact(event_store.read_events("trades", OTHER_TRADES, EVERYTHING), other, "trades")
    assert event_store.read_events("funding", OTHER_TRADES, EVERYTHING).empty
    assert event_store.answered("funding", node) == [Range(T0, T0 + 60)]
    assert event_store.answered("trades", node) == [Range(T0 + 120, T0 + 180)]
    assert event_store.answered("trades", OTHER_TRADES) == [Range(T0 + 600, T0 + 660)]
    assert event_store.event_bounds("trades", OTHER_TRADES) == (T0_MS + 50, T0_MS + 60)
    assert event_store.event_bounds("funding", OTHER_TRADES) is None


# -- what a store refuses --------------------------------------------------------------------


def _bad_frames() -> list[tuple[str, pd.DataFrame, str]]:
    fund = funding([T0_MS, T0_MS + 1, T0_MS + 2])
    trade = trades([1, 2, 3], [T0_MS, T0_MS + 1, T0_MS + 1])
    bad: list[tuple[str, pd.DataFrame, str]] = [
        ("funding", fund.astype({"ts": "float64"}), "columns and dtypes"),
        ("funding", fund.astype({"funding_rate": "float32"}), "columns and dtypes"),
        ("funding", fund[["ts", "mark_price", "funding_rate"]], "columns and dtypes"),
        ("funding", fund[["ts", "funding_rate"]], "columns and dtypes"),
        ("funding", fund.assign(extra=1.0), "columns and dtypes"),
        ("funding", fund.iloc[[0, 2, 1]], "not sorted"),
        ("funding", fund.iloc[[0, 1, 1, 2]], "repeating a key"),
        ("funding", fund.assign(ts=fund["ts"] - T0_MS - 1), r"ts must be epoch ms"),
        ("funding", fund.assign(ts=fund["ts"] + MAX_TS_MS), r"ts must be epoch ms"),
        ("funding", fund.assign(mark_price=[1.0, np.inf, 2.0]), "infinite"),
        ("trades", trade.astype({"side": "int64"}), "columns and dtypes"),
        ("trades", trade.iloc[[1, 0, 2]], "not sorted"),  # ts ascending, id not: by (ts, id)
        ("trades", trade.assign(id=[1, 3, 3]), "repeating a key"),
        ("trades", trade.assign(id=[2, 1, 2]), "repeating a key"),  # sorted, id repeated
        ("trades", trade.assign(id=[-1, 2, 3]), "non-negative"),
        ("trades", trade.assign(side=np.array([1, 2, 0], np.int8)), "side"),
        ("trades", trade.assign(price=[1.0, -np.inf, 2.0]), "infinite"),
    ]
    return bad


@pytest.mark.parametrize(("kind", "frame", "problem"), _bad_frames())
def test_bad_frames_are_rejected_with_nothing_written(
    event_store: EventStore, kind: str, frame: pd.DataFrame, problem: str
) -> None:
    node = FUNDING if kind == "funding" else TRADES
    with pytest.raises(ValueError, match=problem) as raised:
        event_store.upsert_events(kind, node, frame)
    assert "conform the frame first" in str(raised.value)
    assert event_store.read_events(kind, node, EVERYTHING).empty
    assert event_store.event_bounds(kind, node) is None


def test_unknown_kinds_and_node_ids_are_refused(event_store: EventStore) -> None:
    calls = [
        lambda: event_store.upsert_events("ohlcv", TRADES, trades([1], [T0_MS])),
        lambda: event_store.read_events("ohlcv", TRADES, EVERYTHING),
        lambda: event_store.record_answered("ohlcv", TRADES, [Range(T0, T0 + 1)]),
        lambda: event_store.answered("ohlcv", TRADES),
        lambda: event_store.event_bounds("ohlcv", TRADES),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"unknown event kind 'ohlcv'.*'funding', 'trades'"):
            call()
    with pytest.raises(ValueError, match="node_id"):
        event_store.upsert_events("trades", "", trades([1], [T0_MS]))
    assert event_store.read_events("trades", TRADES, EVERYTHING).empty


# -- bulk ------------------------------------------------------------------------------------


def test_a_bulk_upsert_round_trips(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200k trades of one day (many sharing a ms) in one write; a rewrite adds none."""
    n = 200_000
    rng = np.random.default_rng(11)
    ts = np.sort(T0_MS + rng.integers(0, DAY_MS, n))
    ids = 5_000_000_000 + np.arange(n, dtype=np.int64)  # in ts order, like an exchange's
    frame = trades(ids, ts, seed=11)
    frame.loc[rng.choice(n, 100, replace=False), "price"] = np.nan
    assert event_store.upsert_events("trades", TRADES, frame) == n
    assert_bit_exact(event_store.read_events("trades", TRADES, EVERYTHING), frame, "trades")
    if isinstance(event_store, QuestDBEventStore):  # also without libpq's chunked streaming
        with monkeypatch.context() as patched:
            patched.setattr("psycopg.capabilities.has_stream_chunked", lambda: False)
            got = event_store.read_events("trades", TRADES, EVERYTHING)
        assert_bit_exact(got, frame, "trades")
    assert event_store.upsert_events("trades", TRADES, frame) == 0
    hour = Range(T0 + 3600, T0 + 7200)
    inside = frame[(frame["ts"] >= hour.start * 1000) & (frame["ts"] < hour.end * 1000)]
    assert len(inside) > 1000
    got = event_store.read_events("trades", TRADES, hour)
    assert_bit_exact(got, inside.reset_index(drop=True), "trades")
    assert event_store.event_bounds("trades", TRADES) == (int(ts[0]), int(ts[-1]))


# -- DuckDB: the bar store's file ------------------------------------------------------------


@pytest.mark.parametrize("events_first", [True, False])
def test_duckdb_shares_the_bar_stores_file_in_either_order(
    tmp_path: Path, bars: BarsFactory, events_first: bool
) -> None:
    path = tmp_path / "hot.duckdb"
    bar_node = "ohlcv:binance:BTC/USDT:1m"
    fund = funding([T0_MS + 2])
    if events_first:
        DuckDBEventStore(path).upsert_events("funding", FUNDING, fund)
    else:
        DuckDBHotStore(path).upsert(bar_node, bars(T0, 10))
    bar_store, event_store = DuckDBHotStore(path), DuckDBEventStore(path)
    bar_store.upsert(bar_node, bars(T0, 10))
    event_store.upsert_events("funding", FUNDING, fund)
    event_store.upsert_events("trades", bar_node, trades([1], [T0_MS]))  # a shared node key
    assert len(bar_store.read_range(bar_node, EVERYTHING)) == 10
    assert_bit_exact(event_store.read_events("funding", FUNDING, EVERYTHING), fund, "funding")
    assert len(event_store.read_events("trades", bar_node, EVERYTHING)) == 1
    assert bar_store.node_ids() == [bar_node]  # event nodes are no bar nodes
    with event_store.session():
        event_store.record_answered("funding", FUNDING, [Range(T0, T0 + 60)])
        assert event_store.answered("funding", FUNDING) == [Range(T0, T0 + 60)]
