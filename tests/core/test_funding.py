"""Funding events: conformance flags every dropped row once, coverage is answered time,
interval checks find a missing funding in every regime and never at a change."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.core.conformance import CanonicalFrameError, ConformanceInputError
from seamless_assets.core.frame import Range
from seamless_assets.core.funding import (
    FUNDING_COLUMNS,
    FUNDING_DROP_FLAGS,
    FUNDING_FLAGS,
    conform_funding,
    empty_funding_frame,
    funding_coverage,
    funding_fingerprint,
    inferred_intervals,
    interval_anomalies,
    validate_funding,
)

T0 = 1_569_888_000  # 2019-10-01T00:00Z, Binance's first BTCUSDT perpetual funding
H = 3600
IDENTITY = {"node_id": "funding:binance:BTC/USDT:USDT", "range": Range(T0, T0 + 30 * 86_400)}
WINDOW = Range(T0, T0 + 30 * 86_400)


def row(ts_ms: object, rate: object = 0.0001, mark: object = "8300.5") -> dict[str, object]:
    """A row as ccxt's binance `fetch_funding_rate_history` gives it."""
    return {
        "info": {"symbol": "BTCUSDT", "fundingTime": str(ts_ms), "markPrice": mark},
        "symbol": "BTC/USDT:USDT",
        "fundingRate": rate,
        "timestamp": ts_ms,
    }


def regimes() -> list[int]:
    """Funding times (s): 10 events 8h apart, then 10 more 4h apart, then 10 1h apart."""
    times = [T0 + 8 * H * i for i in range(10)]
    times += [times[-1] + 4 * H * i for i in range(1, 11)]
    times += [times[-1] + H * i for i in range(1, 11)]
    return times


def jittered(times: list[int]) -> np.ndarray:
    """As Binance states them: a few ms late, never the same few."""
    return np.array([t * 1000 + (i * 7) % 10 for i, t in enumerate(times)], dtype=np.int64)


TIMES = regimes()
ALL = [Range(T0, TIMES[-1] + 1)]


# ------------------------------------------------------------------------- conformance


def test_rows_keep_the_exchange_s_milliseconds_and_no_mark_price_is_nan() -> None:
    rows = [row(1_569_916_800_001, -0.0003, "8290.1"), row(1_569_888_000_002, 0.0001, "")]
    conformed = conform_funding(rows, WINDOW)
    frame = validate_funding(conformed.frame)
    assert frame["ts"].tolist() == [1_569_888_000_002, 1_569_916_800_001]
    assert frame["funding_rate"].tolist() == [0.0001, -0.0003]
    assert math.isnan(frame["mark_price"][0]) and frame["mark_price"][1] == 8290.1
    assert conformed.flags == dict.fromkeys(FUNDING_FLAGS, 0) and conformed.dropped.empty


@pytest.mark.parametrize(
    ("bad", "flag"),
    [
        (row(None), "invalid_timestamp"),
        (row("soon"), "invalid_timestamp"),
        (row(T0 * 1000 + 0.5), "invalid_timestamp"),
        (row(True), "invalid_timestamp"),
        (row(WINDOW.end * 1000), "invalid_timestamp"),  # half-open: the end is outside
        (row(T0 * 1000 - 1), "invalid_timestamp"),
        (row(T0 * 1000 + 1, rate="abc"), "dtype_mismatch"),
        (row(T0 * 1000 + 1, mark="n/a"), "dtype_mismatch"),
        (row(T0 * 1000 + 1, rate={"v": 1}), "dtype_mismatch"),
        (row(T0 * 1000 + 1, rate=None), "non_finite"),
        (row(T0 * 1000 + 1, rate="inf"), "non_finite"),
        (row(T0 * 1000 + 1, rate=float("nan")), "non_finite"),
        (row(T0 * 1000 + 1, mark="-inf"), "non_finite"),
        (row(T0 * 1000 + 1, mark="0"), "non_positive_price"),
        (row(None, rate="abc", mark="-1"), "invalid_timestamp"),  # the highest flag only
    ],
)
def test_a_bad_row_is_dropped_with_exactly_one_flag(bad: dict[str, object], flag: str) -> None:
    good = row(T0 * 1000 + 8 * H * 1000)
    conformed = conform_funding([good, bad], WINDOW)
    assert conformed.frame["ts"].tolist() == [good["timestamp"]]
    assert conformed.flags == {**dict.fromkeys(FUNDING_FLAGS, 0), flag: 1}
    assert conformed.dropped[["row", "flag"]].values.tolist() == [[1, flag]]
    assert conformed.dropped["raw"][0] is bad


def test_an_invalid_timestamp_is_listed_at_the_window_start_others_at_their_own() -> None:
    conformed = conform_funding([row(1), row(T0 * 1000 + 5, rate="x")], WINDOW)
    assert conformed.dropped["ts"].tolist() == [T0 * 1000, T0 * 1000 + 5]


def test_of_rows_sharing_a_ts_the_last_valid_one_is_kept() -> None:
    ts = T0 * 1000 + 2
    rows = [row(ts, 0.1), row(ts, 0.2), row(ts, None), row(ts + 1, 0.3)]
    conformed = conform_funding(rows, WINDOW)
    assert conformed.frame["funding_rate"].tolist() == [0.2, 0.3]
    assert conformed.dropped[["row", "flag"]].values.tolist() == [
        [0, "duplicate_ts"],
        [2, "non_finite"],
    ]


def test_dtype_cast_counts_kept_rows_cast_from_strings_but_not_the_mark_price() -> None:
    rows = [
        row(str(T0 * 1000 + 2), 0.1),  # ts as a string
        row(float(T0 * 1000 + 8 * H * 1000), 0.1),  # ts as an integral float
        row(T0 * 1000 + 16 * H * 1000, "0.0001"),  # rate as a string
        row(T0 * 1000 + 24 * H * 1000, 0.1, "8000.5"),  # mark price: a string by protocol
        row("soon", "0.1"),  # dropped: counted under its drop flag only
    ]
    conformed = conform_funding(rows, WINDOW)
    assert conformed.flags["dtype_cast"] == 3 and conformed.flags["invalid_timestamp"] == 1
    assert conformed.corrected["row"].tolist() == [0, 1, 2]
    assert conformed.frame["ts"].tolist()[:2] == [T0 * 1000 + 2, T0 * 1000 + 8 * H * 1000]
    assert conformed.frame["funding_rate"][2] == 0.0001


@pytest.mark.parametrize("rows", ["abc", {"timestamp": 1}, [[1, 2]], None])
def test_what_is_not_a_list_of_dicts_is_refused(rows: object) -> None:
    with pytest.raises(ConformanceInputError):
        conform_funding(rows, WINDOW)  # type: ignore[arg-type]


def test_no_rows_give_the_empty_canonical_frame() -> None:
    conformed = conform_funding([], WINDOW)
    pd.testing.assert_frame_equal(conformed.frame, empty_funding_frame())
    validate_funding(conformed.frame)


def test_the_schema_refuses_what_is_not_canonical() -> None:
    frame = conform_funding([row(T0 * 1000), row(T0 * 1000 + 1)], WINDOW).frame
    with pytest.raises(CanonicalFrameError, match="ts_sorted"):
        validate_funding(frame.iloc[::-1].reset_index(drop=True))
    with pytest.raises(CanonicalFrameError, match="finite_positive"):
        validate_funding(frame.assign(mark_price=-1.0))
    with pytest.raises(CanonicalFrameError):
        validate_funding(frame.assign(ts=frame["ts"].astype("float64")))


MESSY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(T0 * 1000 - 10, T0 * 1000 + 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "abc", "nan", "-inf", "0", "-1", "1e-4", " 7 "]),
    st.integers(-(2**70), 2**70),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(MESSY, MESSY, MESSY), max_size=25))
def test_every_row_is_kept_or_dropped_with_one_flag(cells: list[tuple]) -> None:
    window = Range(T0, T0 + 1)
    rows = [row(ts, rate, mark) for ts, rate, mark in cells]
    conformed = conform_funding(rows, window)
    validate_funding(conformed.frame)
    dropped = conformed.dropped
    assert len(conformed.frame) + len(dropped) == len(rows)
    assert dropped["row"].is_unique and set(dropped["flag"]) <= set(FUNDING_DROP_FLAGS)
    assert sum(conformed.flags[f] for f in FUNDING_DROP_FLAGS) == len(dropped)
    assert dropped["ts"].between(window.start * 1000, window.end * 1000 - 1).all()


# ------------------------------------------------------------------------ fingerprints

DISTINCT = st.lists(
    st.tuples(
        st.integers(T0 * 1000, T0 * 1000 + 10**6),
        st.floats(-0.01, 0.01, allow_nan=False),
        st.one_of(st.just(""), st.floats(1, 1e5).map(repr)),
    ),
    max_size=15,
    unique_by=lambda cell: cell[0],
)


@settings(max_examples=50, deadline=None)
@given(DISTINCT, st.randoms(use_true_random=False), st.data())
def test_any_order_and_repetition_of_rows_conforms_to_one_frame_and_fingerprint(
    cells: list[tuple], random: object, data: st.DataObject
) -> None:
    rows = [row(*cell) for cell in cells]
    again = rows + data.draw(st.lists(st.sampled_from(rows), max_size=10) if rows else st.just([]))
    random.shuffle(again)  # type: ignore[attr-defined]
    a, b = conform_funding(rows, WINDOW), conform_funding(again, WINDOW)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert funding_fingerprint(a.frame, IDENTITY) == funding_fingerprint(b.frame, IDENTITY)
    assert b.flags["duplicate_ts"] == len(again) - len(rows)


def fundings(n: int = 4) -> pd.DataFrame:
    rows = [
        row(T0 * 1000 + i * 8 * H * 1000 + 2, 0.0001 * i, "" if i == 1 else "100.5")
        for i in range(n)
    ]
    return conform_funding(rows, WINDOW).frame


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(FUNDING_COLUMNS), st.integers(0, 3), st.data())
def test_a_value_changes_the_fingerprint_exactly_when_it_changes(
    column: str, at: int, data: st.DataObject
) -> None:
    frame = fundings()
    old: Any = frame.at[at, column]
    if column == "ts":  # stays unique and sorted: other ts are 8h away
        new = old + data.draw(st.integers(-1000, 1000))
    else:
        new = data.draw(st.one_of(st.floats(), st.sampled_from([old, -old, math.nan])))
    changed = frame.copy()
    changed.at[at, column] = new
    same = new == old or (math.isnan(new) and math.isnan(old))  # -0.0 == 0.0 too
    moved = funding_fingerprint(changed, IDENTITY) != funding_fingerprint(frame, IDENTITY)
    assert moved is not same


def test_the_fingerprint_ignores_nan_payloads_negative_zero_and_layout() -> None:
    frame = fundings()
    fp = funding_fingerprint(frame, IDENTITY)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    other_nan = np.frombuffer(np.uint64(0x7FF8DEADBEEF0001).tobytes(), dtype="<f8")[0]
    variant = frame.copy()
    variant.at[1, "mark_price"] = other_nan
    variant.at[0, "funding_rate"] = -0.0
    variant = variant[["mark_price", "ts", "funding_rate"]].set_axis([7, 8, 9, 10])
    assert funding_fingerprint(variant, IDENTITY) == fp


def test_the_identity_is_part_of_the_fingerprint() -> None:
    frame = fundings()
    fp = funding_fingerprint(frame, IDENTITY)
    assert funding_fingerprint(frame, {**IDENTITY, "node_id": "funding:bybit:BTC/USDT:USDT"}) != fp
    assert funding_fingerprint(frame, {**IDENTITY, "range": Range(T0, T0 + 1)}) != fp
    assert funding_fingerprint(frame, {**IDENTITY, "conformance_version": "v1"}) != fp
    with pytest.raises(ValueError, match="reserved"):
        funding_fingerprint(frame, {**IDENTITY, "columns": []})
    with pytest.raises(ValueError, match="without columns"):
        funding_fingerprint(frame.drop(columns="mark_price"), IDENTITY)


# ------------------------------------------------------------------------- coverage


def test_coverage_is_the_answered_part_of_the_window() -> None:
    answered = [Range(10, 20), Range(15, 30), Range(90, 200), Range(300, 400)]
    coverage = funding_coverage(answered, Range(0, 100))
    assert coverage.covered == [Range(10, 30), Range(90, 100)]
    assert coverage.missing == [Range(0, 10), Range(30, 90)]
    assert coverage.ratio == 0.3
    assert funding_coverage([], Range(5, 5)).ratio == 1.0
    assert funding_coverage([Range(0, 9)], Range(0, 9)).missing == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=6),
    st.integers(0, 50),
    st.integers(0, 30),
)
def test_coverage_matches_counting_seconds(spans: list, start: int, length: int) -> None:
    answered = [Range(a, a + n) for a, n in spans]
    window = Range(start, start + length)
    seconds = {s for r in answered for s in range(r.start, r.end)}
    coverage = funding_coverage(answered, window)
    covered = {s for r in coverage.covered for s in range(r.start, r.end)}
    missing = {s for r in coverage.missing for s in range(r.start, r.end)}
    assert covered == seconds & set(range(window.start, window.end))
    assert missing == set(range(window.start, window.end)) - seconds
    assert coverage.ratio == (len(covered) / length if length else 1.0)


def test_a_window_answered_across_8h_4h_1h_is_whole_and_plausible() -> None:
    ts = jittered(TIMES)
    window = Range(T0 - 5 * H, TIMES[-1] + 5 * H)
    coverage = funding_coverage([window], window)
    assert coverage.missing == [] and coverage.ratio == 1.0
    assert interval_anomalies(ts, [window]) == []
    assert inferred_intervals(ts) == [
        (Range(TIMES[0], TIMES[9]), 8 * H),
        (Range(TIMES[9], TIMES[19]), 4 * H),
        (Range(TIMES[19], TIMES[29]), H),
    ]


@pytest.mark.parametrize(("gone", "regime"), [(4, 8 * H), (14, 4 * H), (25, H)])
def test_a_missing_funding_is_found_in_each_regime(gone: int, regime: int) -> None:
    ts = np.delete(jittered(TIMES), gone)
    assert interval_anomalies(ts, ALL) == [Range(TIMES[gone - 1], TIMES[gone + 1])]
    # The report still reads as the three regimes: the hole is not a regime of its own.
    assert [interval for _, interval in inferred_intervals(ts)] == [8 * H, 4 * H, H]
    assert (TIMES[gone + 1] - TIMES[gone - 1]) == 2 * regime


def test_a_missing_funding_in_every_regime_at_once() -> None:
    ts = np.delete(jittered(TIMES), [4, 14, 25])
    assert interval_anomalies(ts, ALL) == [
        Range(TIMES[3], TIMES[5]),
        Range(TIMES[13], TIMES[15]),
        Range(TIMES[24], TIMES[26]),
    ]


def test_jitter_is_tolerated_up_to_the_tolerance() -> None:
    late = [T0, T0 + 8 * H, T0 + 16 * H + 30, T0 + 24 * H]  # one funding 30 s late
    assert interval_anomalies(np.array(late) * 1000, [Range(T0, T0 + 25 * H)]) == []
    later = [T0, T0 + 8 * H, T0 + 16 * H + 90, T0 + 24 * H]
    assert interval_anomalies(np.array(later) * 1000, [Range(T0, T0 + 25 * H)]) == [
        Range(T0 + 8 * H, T0 + 16 * H + 90)
    ]
    assert (
        interval_anomalies(np.array(later) * 1000, [Range(T0, T0 + 25 * H)], tolerance_s=120) == []
    )


def test_windows_starting_and_ending_between_fundings() -> None:
    ts = jittered(TIMES)
    answered = [Range(TIMES[2] + 3 * H, TIMES[7] + 5 * H)]  # both edges between fundings
    assert interval_anomalies(ts, answered) == []
    coverage = funding_coverage(answered, Range(T0, TIMES[9]))
    assert coverage.missing == [Range(T0, TIMES[2] + 3 * H), Range(TIMES[7] + 5 * H, TIMES[9])]
    # The first funding after the start is missing: the edge span exceeds any interval.
    assert interval_anomalies(np.delete(ts, 3), answered) == [Range(answered[0].start, TIMES[4])]
    # The last funding before the end is missing.
    assert interval_anomalies(np.delete(ts, 7), answered) == [Range(TIMES[6], answered[0].end)]


def test_a_regime_change_at_a_window_edge_is_not_an_anomaly() -> None:
    ts = jittered(TIMES)
    # [2h edge][8h][4h][4h]...: the 8h has no known interval before it, so it is no hole.
    assert interval_anomalies(ts, [Range(TIMES[8] - 2 * H, TIMES[14])]) == []
    # ...[1h][1h][8h][3h edge]: the same when the interval grows just before the end.
    grows = np.append(ts, (TIMES[-1] + 8 * H) * 1000)
    assert interval_anomalies(grows, [Range(TIMES[20], TIMES[-1] + 11 * H)]) == []


def test_only_answered_time_is_judged_and_touching_answers_join() -> None:
    ts = np.delete(jittered(TIMES), 4)
    unanswered_hole = [Range(T0, TIMES[3] + 1), Range(TIMES[5], TIMES[-1])]
    assert interval_anomalies(ts, unanswered_hole) == []
    assert interval_anomalies(ts, []) == []
    split_at_the_hole = [Range(T0, TIMES[4]), Range(TIMES[4], TIMES[-1])]
    assert interval_anomalies(ts, split_at_the_hole) == [Range(TIMES[3], TIMES[5])]


def test_inferred_intervals_edges() -> None:
    assert inferred_intervals([]) == [] and inferred_intervals([T0 * 1000]) == []
    # A duplicated event is one event; a 12h gap between 8h runs stays a run of its own.
    ts = [T0, T0, T0 + 8 * H, T0 + 20 * H, T0 + 28 * H]
    assert inferred_intervals(np.array(ts) * 1000) == [
        (Range(T0, T0 + 8 * H), 8 * H),
        (Range(T0 + 8 * H, T0 + 20 * H), 12 * H),
        (Range(T0 + 20 * H, T0 + 28 * H), 8 * H),
    ]
