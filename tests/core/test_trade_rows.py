"""Exchange trades: deduplicated by id (a conflict keeps the first version, flagged), every
dropped row flagged once, one frame and fingerprint for any order, and the bars they make
are the bars of the clean trades."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.core.conformance import CanonicalFrameError
from seamless_assets.core.frame import Range
from seamless_assets.core.funding import empty_funding_frame, funding_fingerprint
from seamless_assets.core.trade_rows import (
    TRADES_COLUMNS,
    TRADES_DROP_FLAGS,
    TRADES_FLAGS,
    conform_trades,
    empty_trades_frame,
    trades_fingerprint,
    validate_trades,
)
from seamless_assets.core.trades import bars_from_trades

T0 = 1_704_067_200  # 2024-01-01
WINDOW = Range(T0, T0 + 3600)
IDENTITY = {"node_id": "trades:binance:BTC/USDT", "range": WINDOW, "conformance_version": "v1"}


def trade(
    id: object, ts: object, price: object = 42_000.5, amount: object = 0.01, side: object = "buy"
) -> dict[str, Any]:
    """A row as ccxt's `fetch_trades` gives it (the id a string)."""
    return {
        "info": {},
        "id": id,
        "timestamp": ts,
        "symbol": "BTC/USDT",
        "side": side,
        "price": price,
        "amount": amount,
    }


MS = T0 * 1000


def test_trades_are_sorted_by_ts_then_id_with_sides_as_numbers() -> None:
    rows = [
        trade("12", MS + 5, side="sell"),
        trade("10", MS + 5),
        trade("11", MS + 1, side=None),
        trade(9, MS + 7, side="BUY?"),
    ]
    conformed = conform_trades(rows, WINDOW)
    frame = validate_trades(conformed.frame)
    assert frame["id"].tolist() == [11, 10, 12, 9]
    assert frame["ts"].tolist() == [MS + 1, MS + 5, MS + 5, MS + 7]
    assert frame["side"].tolist() == [0, 1, -1, 0]
    assert conformed.flags == dict.fromkeys(TRADES_FLAGS, 0) and conformed.dropped.empty


def test_a_repeated_id_with_the_same_values_is_one_trade() -> None:
    conformed = conform_trades([trade("7", MS), trade(7, MS), trade("7", str(MS))], WINDOW)
    assert conformed.frame["id"].tolist() == [7]
    assert conformed.dropped[["row", "flag"]].values.tolist() == [
        [1, "duplicate_id"],
        [2, "duplicate_id"],
    ]
    assert conformed.flags["dtype_cast"] == 0  # the cast row was not the one kept


@pytest.mark.parametrize(
    "changed",
    [
        {"timestamp": MS + 1},
        {"price": 42_000.0},
        {"amount": 0.02},
        {"side": "sell"},
    ],
)
def test_a_repeated_id_with_other_values_keeps_the_first_and_flags_the_rest(
    changed: dict[str, object],
) -> None:
    first, other = trade("7", MS), {**trade("7", MS), **changed}
    for rows in ([first, other, first], [other, first, first]):
        conformed = conform_trades(rows, WINDOW)
        kept = conformed.frame.iloc[0]
        assert len(conformed.frame) == 1
        assert (kept["ts"], kept["price"], kept["amount"]) == tuple(
            float(rows[0][k]) for k in ("timestamp", "price", "amount")
        )
        flags = dict(zip(conformed.dropped["row"], conformed.dropped["flag"], strict=True))
        if rows[0] is first:
            assert flags == {1: "conflicting_id", 2: "duplicate_id"}
        else:
            assert flags == {1: "conflicting_id", 2: "conflicting_id"}


def test_an_invalid_row_does_not_take_an_id_from_a_valid_one() -> None:
    conformed = conform_trades([trade("7", MS, price="x"), trade("7", MS + 3)], WINDOW)
    assert conformed.frame["ts"].tolist() == [MS + 3]
    assert conformed.dropped["flag"].tolist() == ["dtype_mismatch"]


@pytest.mark.parametrize(
    ("bad", "flag"),
    [
        (trade("1", None), "invalid_timestamp"),
        (trade("1", MS - 1), "invalid_timestamp"),
        (trade("1", WINDOW.end * 1000), "invalid_timestamp"),
        (trade("1", MS + 0.5), "invalid_timestamp"),
        (trade(None, MS), "invalid_id"),
        (trade("a1b2", MS), "invalid_id"),
        (trade(-1, MS), "invalid_id"),
        (trade(1.5, MS), "invalid_id"),
        (trade(str(2**64), MS), "invalid_id"),
        (trade("1", MS, price="abc"), "dtype_mismatch"),
        (trade("1", MS, amount=True), "dtype_mismatch"),
        (trade("1", MS, price=None), "non_finite"),
        (trade("1", MS, amount=math.inf), "non_finite"),
        (trade("1", MS, price=0), "non_positive_price"),
        (trade("1", MS, price="-3"), "non_positive_price"),
        (trade("1", MS, amount=-0.5), "negative_amount"),
        (trade(None, None, price="abc", amount=-1), "invalid_timestamp"),  # the highest only
    ],
)
def test_a_bad_row_is_dropped_with_exactly_one_flag(bad: dict[str, Any], flag: str) -> None:
    good = trade("2", MS + 100)
    conformed = conform_trades([bad, good], WINDOW)
    assert conformed.frame["id"].tolist() == [2]
    assert conformed.flags == {**dict.fromkeys(TRADES_FLAGS, 0), flag: 1}
    assert conformed.dropped[["row", "flag"]].values.tolist() == [[0, flag]]
    assert conformed.dropped["raw"][0] is bad


def test_a_zero_amount_is_a_trade_and_casts_are_counted_but_not_string_ids() -> None:
    rows = [
        trade("1", MS, amount=0),
        trade("2", str(MS + 1)),
        trade("3", MS + 2, price="42000.5"),
        trade("4", float(MS + 3), amount="0.5"),
    ]
    conformed = conform_trades(rows, WINDOW)
    assert conformed.frame["amount"].tolist() == [0.0, 0.01, 0.01, 0.5]
    assert conformed.flags["dtype_cast"] == 3
    assert conformed.corrected["row"].tolist() == [1, 2, 3]
    validate_trades(conformed.frame)


def test_no_rows_and_the_schema() -> None:
    pd.testing.assert_frame_equal(conform_trades([], WINDOW).frame, empty_trades_frame())
    frame = conform_trades([trade("1", MS), trade("2", MS)], WINDOW).frame
    with pytest.raises(CanonicalFrameError, match="sorted_by_ts_then_id"):
        validate_trades(frame.iloc[::-1].reset_index(drop=True))
    with pytest.raises(CanonicalFrameError):
        validate_trades(frame.assign(id=1))
    with pytest.raises(CanonicalFrameError):
        validate_trades(frame.assign(side=np.int64(1)))


# ---------------------------------------------------------------- order and repetition

CLEAN = st.lists(
    st.tuples(
        st.integers(0, 10**9),
        st.integers(MS, MS + 5_000),
        st.integers(1, 10**8).map(lambda cents: cents / 100),
        st.integers(0, 10**9).map(lambda sats: sats / 10**8),
        st.sampled_from(["buy", "sell", None]),
    ),
    max_size=20,
    unique_by=lambda cell: cell[0],
)


@settings(max_examples=50, deadline=None)
@given(CLEAN, st.randoms(use_true_random=False), st.data())
def test_any_order_and_repetition_of_trades_conforms_to_one_frame_and_fingerprint(
    cells: list[tuple], random: Any, data: st.DataObject
) -> None:
    rows = [trade(str(i), ts, px, qty, side) for i, ts, px, qty, side in cells]
    again = rows + (data.draw(st.lists(st.sampled_from(rows), max_size=10)) if rows else [])
    again = [{**r, "id": int(r["id"])} if random.random() < 0.5 else r for r in again]
    random.shuffle(again)
    a, b = conform_trades(rows, WINDOW), conform_trades(again, WINDOW)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert trades_fingerprint(a.frame, IDENTITY) == trades_fingerprint(b.frame, IDENTITY)
    assert b.flags["duplicate_id"] == len(again) - len(rows) and b.flags["conflicting_id"] == 0


MESSY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(MS - 5, MS + 5),
    st.floats(),
    st.sampled_from(["", "1", "abc", "nan", "-2", "buy", "sell", str(MS)]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(MESSY, MESSY, MESSY, MESSY, MESSY), max_size=25))
def test_every_trade_is_kept_or_dropped_with_one_flag(cells: list[tuple]) -> None:
    window = Range(T0, T0 + 1)
    rows = [trade(*cell) for cell in cells]
    conformed = conform_trades(rows, window)
    validate_trades(conformed.frame)
    dropped = conformed.dropped
    assert len(conformed.frame) + len(dropped) == len(rows)
    assert dropped["row"].is_unique and set(dropped["flag"]) <= set(TRADES_DROP_FLAGS)
    assert sum(conformed.flags[f] for f in TRADES_DROP_FLAGS) == len(dropped)
    assert dropped["ts"].between(window.start * 1000, window.end * 1000 - 1).all()


# ------------------------------------------------------------------------ fingerprints


def trades_frame() -> pd.DataFrame:
    rows = [
        trade(str(10 + i), MS + 7 * i, 100.0 + i, 0.25 * i, ["buy", "sell"][i % 2])
        for i in range(4)
    ]
    return conform_trades(rows, WINDOW).frame


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(TRADES_COLUMNS), st.integers(0, 3), st.data())
def test_a_value_changes_the_fingerprint_exactly_when_it_changes(
    column: str, at: int, data: st.DataObject
) -> None:
    frame = trades_frame()
    old: Any = frame.at[at, column]
    new: Any
    if column == "side":
        new = data.draw(st.sampled_from([-1, 0, 1]))
    elif column in ("id", "ts"):
        new = old + data.draw(st.integers(-3, 3))
    else:
        new = data.draw(st.one_of(st.floats(), st.sampled_from([old, -old])))
    changed = frame.copy()
    changed.at[at, column] = new
    same = bool(new == old)  # -0.0 == 0.0: one fingerprint
    moved = trades_fingerprint(changed, IDENTITY) != trades_fingerprint(frame, IDENTITY)
    assert moved is not same


def test_the_identity_and_the_table_enter_the_fingerprint() -> None:
    frame = trades_frame()
    fp = trades_fingerprint(frame, IDENTITY)
    assert fp.startswith("sha256:") and trades_fingerprint(frame.copy(), IDENTITY) == fp
    assert trades_fingerprint(frame, {**IDENTITY, "node_id": "trades:binance:ETH/USDT"}) != fp
    assert trades_fingerprint(frame, {**IDENTITY, "range": Range(T0, T0 + 1)}) != fp
    # The columns are in the header: no trades and no fundings are different datasets.
    empty = trades_fingerprint(empty_trades_frame(), IDENTITY)
    assert empty != funding_fingerprint(empty_funding_frame(), IDENTITY)


# -------------------------------------------------------------------- trades -> bars


def clean_trades(seed: int, n: int = 2_000) -> tuple[np.ndarray, ...]:
    """Trades in the exchange's order: ids rising with time, several per millisecond."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(MS, MS + 3_600_000, n))
    ts[1::3] = ts[::3][: ts[1::3].size]  # instants shared by trades
    ts = np.sort(ts)
    ids = np.arange(n, dtype=np.int64) + 10**9
    price = rng.integers(4_000_000, 4_100_000, n) / 100
    amount = rng.integers(1, 10**8, n) / 10**8
    return ids, ts, price, amount


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("interval_s", [60, 300])
def test_conformed_trades_make_the_bars_of_the_clean_arrays(seed: int, interval_s: int) -> None:
    ids, ts, price, amount = clean_trades(seed)
    expected = bars_from_trades(ts, price, amount, interval_s)
    rows = [
        trade(str(i), int(t), float(p), float(q), "buy")
        for i, t, p, q in zip(ids, ts, price, amount, strict=True)
    ]
    rng = np.random.default_rng(seed)
    received = [rows[i] for i in rng.permutation(len(rows))] + rows[:50]  # reordered, repeated
    frame = conform_trades(received, WINDOW).frame
    assert frame["id"].tolist() == ids.tolist()
    bars = bars_from_trades(frame["ts"], frame["price"], frame["amount"], interval_s)
    pd.testing.assert_frame_equal(bars, expected)
    assert len(expected) > 3_600 // interval_s // 2  # the check saw real bars
