"""Conformance v2: one test per flag, the schema's checks, and properties against an oracle."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.core.conformance import (
    CONFORMANCE_VERSION,
    DROP_FLAGS,
    FLAGS,
    CanonicalFrameError,
    ConformanceInputError,
    Conformed,
    canonical_schema,
    columns_matrix,
    conform,
    rows_matrix,
    validate_canonical,
)
from seamless_assets.core.frame import (
    CANONICAL_COLUMNS,
    VALUE_COLUMNS,
    Range,
    empty_frame,
    frame_from_arrays,
    is_canonical,
)

BASE = 1_700_000_040  # aligned to 60 s; magnitudes place it in seconds (< 1e11)
NAN, INF = float("nan"), float("inf")


def row(ts: Any, o: Any = 10.0, h: Any = 12.0, lo: Any = 9.0, c: Any = 11.0, v: Any = 5.0):
    return [ts, o, h, lo, c, v]


def canonical(n: int, start: int = BASE, interval: int = 60) -> pd.DataFrame:
    ts = start + np.arange(n, dtype=np.int64) * interval
    price = 100.0 + np.arange(n)
    return frame_from_arrays(
        ts,
        {"open": price, "high": price + 2, "low": price - 1, "close": price + 1, "volume": price},
    )


def only(result: Conformed, **expected: int) -> None:
    """Every flag is zero except those given."""
    assert set(result.flags) == set(FLAGS)
    assert {k: v for k, v in result.flags.items() if v} == {k: v for k, v in expected.items() if v}


def dropped(result: Conformed) -> list[tuple[int, str]]:
    return list(zip(result.dropped["ts"].tolist(), result.dropped["flag"].tolist(), strict=True))


def test_contract_constants() -> None:
    assert CONFORMANCE_VERSION == "v2"
    assert FLAGS == (
        "duplicate_ts",
        "gap",
        "missing_column",
        "dtype_cast",
        "dtype_mismatch",
        "ts_cast",
        "ts_timezone_normalized",
        "non_finite",
        "invalid_timestamp",
        "ohlc_inconsistent",
        "non_positive_price",
        "zero_bar",
    )
    assert set(DROP_FLAGS) < set(FLAGS)


# ----------------------------------------------------------------------- per-flag tests


def test_clean_ccxt_rows_in_ms_convert_silently() -> None:
    rows = [row((BASE + 60 * i) * 1000) for i in range(3)]
    result = conform(rows, 60, source_ts_unit="ms")
    only(result)
    assert result.frame["ts"].tolist() == [BASE, BASE + 60, BASE + 120]
    assert is_canonical(result.frame)
    assert result.dropped.empty and result.corrected.empty


def test_duplicate_ts_keeps_the_last_occurrence() -> None:
    rows = [row(BASE + 60, v=1.0), row(BASE), row(BASE + 60, v=2.0), row(BASE + 60, v=3.0)]
    result = conform(rows, 60)
    only(result, duplicate_ts=2)
    assert result.frame["ts"].tolist() == [BASE, BASE + 60]
    assert result.frame["volume"].tolist() == [5.0, 3.0]
    assert dropped(result) == [(BASE + 60, "duplicate_ts"), (BASE + 60, "duplicate_ts")]


def test_duplicate_resolution_prefers_the_last_valid_version() -> None:
    rows = [row(BASE, v=1.0), row(BASE, v=NAN)]
    result = conform(rows, 60)
    only(result, non_finite=1)
    assert result.frame["volume"].tolist() == [1.0]


def test_gap_counts_missing_bars_between_kept_rows() -> None:
    rows = [row(BASE), row(BASE + 60), row(BASE + 300), row(BASE + 600)]
    result = conform(rows, 60)
    only(result, gap=3 + 4)
    assert result.dropped.empty


def test_missing_value_column_drops_rows_as_non_finite() -> None:
    frame = canonical(3).drop(columns=["volume"])
    result = conform(frame, 60)
    only(result, missing_column=1, non_finite=3)
    assert result.frame.empty and is_canonical(result.frame)
    assert [f for _, f in dropped(result)] == ["non_finite"] * 3


def test_missing_ts_column_drops_every_row_unlisted() -> None:
    result = conform(canonical(3).drop(columns=["ts", "open"]), 60)
    only(result, missing_column=2, invalid_timestamp=3)
    assert result.dropped.empty  # no parseable ts to list


def test_dtype_cast_counts_columns() -> None:
    frame = canonical(3).astype({"open": "float32", "volume": "int64", "close": object})
    result = conform(frame, 60)
    only(result, dtype_cast=3)
    assert is_canonical(result.frame)
    assert result.frame["open"].tolist() == [100.0, 101.0, 102.0]  # float32-exact values


def test_numeric_strings_are_cast_and_garbage_is_a_mismatch() -> None:
    frame = canonical(4).astype({"high": object})
    frame.loc[1, "high"] = "abc"
    frame.loc[2, "high"] = "103.5"
    frame.loc[3, "high"] = "NaN"  # text NaN is a non-finite value, not a type mismatch
    result = conform(frame, 60)
    only(result, dtype_cast=1, dtype_mismatch=1, non_finite=1, gap=1)
    assert result.frame["high"].tolist() == [102.0, 103.5]
    assert dropped(result) == [(BASE + 60, "dtype_mismatch"), (BASE + 180, "non_finite")]


def test_ccxt_rows_with_a_string_take_the_slow_path_with_the_same_rules() -> None:
    rows = [row((BASE + 60 * i) * 1000) for i in range(3)]
    rows[1][2] = "abc"
    rows[2][4] = "11.0"
    result = conform(rows, 60, source_ts_unit="ms")
    only(result, dtype_cast=2, dtype_mismatch=1, gap=1)
    assert result.frame["ts"].tolist() == [BASE, BASE + 120]


def test_ts_cast_when_magnitude_disagrees_with_the_source_unit() -> None:
    rows = [row(BASE * 1000), row((BASE + 60) * 10**6), row((BASE + 120) * 10**9), row(BASE + 180)]
    result = conform(rows, 60, source_ts_unit="ms")
    only(result, ts_cast=3)
    assert result.frame["ts"].tolist() == [BASE + 60 * i for i in range(4)]
    assert sorted(result.corrected["ts"].tolist()) == [BASE + 60, BASE + 120, BASE + 180]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_datetime_columns_are_cast_per_row(unit: str) -> None:
    frame = canonical(3)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s").astype(f"datetime64[{unit}]")
    result = conform(frame, 60)
    only(result, ts_cast=3)
    pd.testing.assert_frame_equal(result.frame, canonical(3))


def test_tz_aware_datetimes_are_normalised_to_utc() -> None:
    frame = canonical(3)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True).dt.tz_convert("Asia/Kolkata")
    frame.loc[1, "ts"] = pd.NaT
    result = conform(frame, 60)
    only(result, ts_cast=2, ts_timezone_normalized=2, invalid_timestamp=1, gap=1)
    assert result.frame["ts"].tolist() == [BASE, BASE + 120]
    assert Counter(result.corrected["flag"]) == {"ts_cast": 2, "ts_timezone_normalized": 2}


def test_non_finite_values() -> None:
    rows = [
        row(BASE, o=NAN),
        row(BASE + 60, h=INF),
        row(BASE + 120, lo=-INF),
        row(BASE + 180, v=None),
    ]
    result = conform(rows, 60)
    only(result, non_finite=4)
    assert [t for t, _ in dropped(result)] == [BASE, BASE + 60, BASE + 120, BASE + 180]


@pytest.mark.parametrize(
    ("ts", "listed"),
    [
        (None, None),
        (NAN, None),
        (-60, None),
        (BASE + 30, BASE + 30),  # unaligned: never floored into a bar
        (BASE + 0.5, BASE),  # fractional seconds: listed floored
        (BASE * 1000 + 1, BASE),  # 1 ms past the bar
    ],
)
def test_invalid_timestamps_are_dropped(ts: Any, listed: int | None) -> None:
    result = conform([row(BASE + 60), row(ts)], 60, source_ts_unit="ms")
    assert result.flags["invalid_timestamp"] == 1
    assert result.frame["ts"].tolist() == [BASE + 60]
    assert dropped(result) == ([] if listed is None else [(listed, "invalid_timestamp")])


def test_unparseable_timestamp_strings_and_iso_strings() -> None:
    frame = canonical(3).astype({"ts": object})
    frame.loc[0, "ts"] = "2023-11-14T22:14:00Z"  # == BASE
    frame.loc[1, "ts"] = "not a time"
    frame.loc[2, "ts"] = str(BASE + 120)
    result = conform(frame, 60)
    only(result, ts_cast=2, invalid_timestamp=1, gap=1)
    assert result.frame["ts"].tolist() == [BASE, BASE + 120]


@pytest.mark.parametrize(
    "bad",
    [
        {"h": 10.5},  # high below close
        {"h": 8.0},  # high below low
        {"lo": 10.5},  # low above open
        {"v": -1.0},
    ],
)
def test_ohlc_inconsistent(bad: dict[str, float]) -> None:
    result = conform([row(BASE), row(BASE + 60, **bad)], 60)
    only(result, ohlc_inconsistent=1)
    assert dropped(result) == [(BASE + 60, "ohlc_inconsistent")]


def test_flag_precedence_gives_each_dropped_row_one_flag() -> None:
    rows = [row(BASE + 30, o=NAN), row(BASE, o=NAN, h=1.0), row(BASE + 60, h=1.0)]
    result = conform(rows, 60)
    only(result, invalid_timestamp=1, non_finite=1, ohlc_inconsistent=1)
    rows = [
        row(BASE, 0.0, 0.0, 0.0, 0.0, NAN),  # non_finite > zero_bar
        row(BASE + 60, 0.0, 0.0, 0.0, 0.0, 0.0),  # zero_bar > non_positive_price
        row(BASE + 120, -1.0, 0.0, 0.0, 1.0, 1.0),  # non_positive > ohlc_inconsistent
        row(BASE + 150, 0.0, 0.0, 0.0, 0.0, 0.0),  # invalid_timestamp > zero_bar
    ]
    result = conform(rows, 60)
    only(result, non_finite=1, zero_bar=1, non_positive_price=1, invalid_timestamp=1)
    assert DROP_FLAGS.index("zero_bar") < DROP_FLAGS.index("non_positive_price")
    assert DROP_FLAGS.index("non_positive_price") < DROP_FLAGS.index("ohlc_inconsistent")


@pytest.mark.parametrize(
    "bad",
    [
        {"o": 0.0},
        {"lo": 0.0},
        {"lo": -9.0},
        {"o": -10.0, "h": -1.0, "lo": -12.0, "c": -11.0},  # consistent, all negative
        {"o": 0.0, "h": 0.0, "lo": 0.0, "c": 0.0},  # zero prices with volume
        {"c": -0.0, "lo": -0.0},
    ],
)
def test_non_positive_prices_are_dropped(bad: dict[str, float]) -> None:
    result = conform([row(BASE), row(BASE + 60, **bad), row(BASE + 120)], 60)
    only(result, non_positive_price=1, gap=1)
    assert dropped(result) == [(BASE + 60, "non_positive_price")]
    assert result.frame["ts"].tolist() == [BASE, BASE + 120]


@pytest.mark.parametrize("position", [0, 1, 2])
def test_all_zero_bars_are_dropped(position: int) -> None:
    rows = [row(BASE + 60 * k) for k in range(3)]
    rows[position] = row(BASE + 60 * position, 0.0, 0.0, 0.0, 0.0, 0.0)
    result = conform(rows, 60)
    assert result.flags["zero_bar"] == 1 and result.flags["non_positive_price"] == 0
    assert dropped(result) == [(BASE + 60 * position, "zero_bar")]
    assert BASE + 60 * position not in result.frame["ts"].tolist()
    # a bar with no trades repeats the last price: it is data, not a fault
    flat = conform([row(BASE, 5.0, 5.0, 5.0, 5.0, 0.0)], 60)
    only(flat)


# ------------------------------------------------------------ rows and their windows

WINDOW = (BASE, BASE + 600)


@pytest.mark.parametrize(
    ("ts", "placed"),
    [
        (0, False),  # open time 0
        (32_503_680_000_000, False),  # the year 3000, in ms
        ((BASE - 60) * 1000, False),  # the bar before the window
        ((BASE + 600) * 1000, False),  # the bar after it
        (None, False),  # no open time at all
        ("garbage", False),
        ((BASE + 120) * 1000, True),
        ((BASE + 120) * 1_000_000, True),  # µs, converted: inside the window
        ((BASE + 120) * 1000 + 30_000, True),  # misaligned inside: listed at its own time
    ],
)
def test_rows_outside_their_window_are_invalid_and_listed_at_its_start(
    ts: Any, placed: bool
) -> None:
    rows = [row(BASE * 1000), row(ts), row((BASE + 60) * 1000)]
    windows = np.array([WINDOW, (BASE + 300, BASE + 600), WINDOW], dtype=np.int64)
    if placed:
        windows[1] = WINDOW
    result = conform(rows, 60, source_ts_unit="ms", windows=windows)
    misaligned = placed and ts % 60_000 != 0
    if placed and not misaligned:
        assert BASE + 120 in result.frame["ts"].tolist()
        assert result.flags["invalid_timestamp"] == 0
        return
    assert result.flags["invalid_timestamp"] == 1
    assert result.frame["ts"].tolist() == [BASE, BASE + 60]
    listed = (BASE + 150) if misaligned else int(windows[1][0])
    assert dropped(result) == [(listed, "invalid_timestamp")]
    assert listed not in result.corrected["ts"].tolist()  # no unit is right for it


def test_a_misplaced_row_is_listed_at_the_slot_it_stood_in_for() -> None:
    invalid = "invalid_timestamp"
    window = (BASE, BASE + 300)
    rows = [row(t * 1000) for t in (BASE, BASE + 60, BASE + 180)] + [row(0)]
    windows = np.array([window] * 4, dtype=np.int64)
    result = conform(rows, 60, source_ts_unit="ms", windows=windows)
    assert dropped(result) == [(BASE + 120, "invalid_timestamp")]  # the empty slot
    # however the fetch was split: asked for just that slot, the row lands on it too
    alone = conform([row(0)], 60, source_ts_unit="ms", windows=np.array([(BASE + 120, BASE + 180)]))
    assert dropped(alone) == [(BASE + 120, "invalid_timestamp")]
    # a window with every slot filled: the window's start
    full = [row(t * 1000) for t in range(BASE, BASE + 300, 60)] + [row(None)]
    result = conform(full, 60, source_ts_unit="ms", windows=np.array([window] * 6))
    assert dropped(result) == [(BASE, "invalid_timestamp")]
    # several misplaced rows of one window name its empty slots in order, one each
    rows = [row(BASE * 1000), row(0), row(32_503_680_000_000)]
    result = conform(rows, 60, source_ts_unit="ms", windows=np.array([window] * 3))
    assert dropped(result) == [(BASE + 60, invalid), (BASE + 120, invalid)]
    # more misplaced rows than empty slots: the rest at the window's start
    rows = [*[row(t * 1000) for t in range(BASE, BASE + 240, 60)], row(0), row(0)]
    result = conform(rows, 60, source_ts_unit="ms", windows=np.array([window] * 6))
    assert sorted(dropped(result)) == [(BASE, invalid), (BASE + 240, invalid)]


def test_page_matrices_conform_like_the_joined_rows() -> None:
    ms = (BASE + 60 * np.arange(6)) * 1000
    pages = [
        [row(int(ms[0])), row(int(ms[2]), h=1.0), row(int(ms[1]))],  # unsorted, inconsistent
        [row(int(ms[3]), o=NAN), row(int(ms[3])), row(0), row(int(ms[5]) + 7)],  # dup, misplaced
        [],
    ]
    windows = np.array([(BASE, BASE + 360)] * 7)
    joined = conform([r for page in pages for r in page], 60, source_ts_unit="ms", windows=windows)
    matrices = [rows_matrix(page) for page in pages]
    assert all(m is not None for m in matrices)
    paged = conform(np.concatenate(matrices), 60, source_ts_unit="ms", windows=windows)
    pd.testing.assert_frame_equal(paged.frame, joined.frame)
    pd.testing.assert_frame_equal(paged.dropped, joined.dropped)
    pd.testing.assert_frame_equal(paged.corrected, joined.corrected)
    assert paged.flags == joined.flags


def test_columns_matrix_reads_like_the_rows() -> None:
    rows = [row((BASE + 60 * i) * 1000, o=10.0 + i, v=-0.0) for i in range(4)]
    opens = np.array([r[0] for r in rows], dtype=np.int64)
    values = np.array([r[1:] for r in rows], dtype=np.float64)
    matrix = columns_matrix(opens, values.T.copy().T)  # a transposed (strided) block too
    np.testing.assert_array_equal(matrix, rows_matrix(rows))
    assert columns_matrix(np.array([2**60]), np.ones((1, 5))) is None
    assert columns_matrix(np.empty(0, np.int64), np.empty((0, 5))).shape == (0, 6)


@pytest.mark.parametrize(
    "rows",
    [[row(BASE * 1000, o="abc")], [row(BASE * 1000)[:5]], [row(2**60)]],
    ids=["garbage", "ragged", "exact-int-only"],
)
def test_rows_matrix_declines_what_conform_reads_itself(rows: list[list[Any]]) -> None:
    assert rows_matrix(rows) is None


def test_windows_must_give_one_range_per_row() -> None:
    rows = [row(BASE * 1000), row((BASE + 60) * 1000)]
    for bad in (np.array([WINDOW]), np.array([WINDOW, WINDOW], dtype=float), np.zeros((2, 3))):
        with pytest.raises(ConformanceInputError, match="windows"):
            conform(rows, 60, source_ts_unit="ms", windows=bad)


def test_input_variants() -> None:
    frame = canonical(3)
    assert conform(frame.set_index("ts"), 60).frame.equals(frame)
    only(conform(frame.assign(extra="x"), 60))  # extra columns are not data
    shuffled = frame.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(conform(shuffled, 60).frame, frame)
    ints = frame.astype({"ts": "Int64"})
    ints.loc[1, "ts"] = pd.NA
    only(conform(ints, 60), invalid_timestamp=1, gap=1)
    only(conform(frame.astype({"ts": "float64"}), 60), ts_cast=3)
    only(conform(frame.assign(ts=frame["ts"] * 1000), 60, source_ts_unit="ms"))
    matrix = frame.to_numpy(dtype=np.float64)
    pd.testing.assert_frame_equal(conform(matrix, 60).frame, frame)


def test_empty_inputs() -> None:
    for raw, missing in (([], 0), (empty_frame(), 0), (pd.DataFrame(), 6)):
        result = conform(raw, 60)
        assert result.frame.empty and is_canonical(result.frame)
        only(result, missing_column=missing)


def test_nanosecond_integers_in_rows_stay_exact() -> None:
    ns = (BASE + 60) * 10**9
    result = conform(
        [row(BASE * 10**9), row(ns), row(ns + 120 * 10**9 + 1)], 60, source_ts_unit="ns"
    )
    only(result, invalid_timestamp=1)
    assert result.frame["ts"].tolist() == [BASE, BASE + 60]
    assert dropped(result) == [(BASE + 180, "invalid_timestamp")]


def test_output_never_aliases_the_input() -> None:
    frame = canonical(3)
    before = frame.copy()
    result = conform(frame, 60)
    result.frame.loc[0, "open"] = -1.0
    pd.testing.assert_frame_equal(frame, before)


def test_bad_arguments_raise_typed_errors() -> None:
    with pytest.raises(ConformanceInputError, match="interval_s"):
        conform([], 0)
    with pytest.raises(ConformanceInputError, match="source_ts_unit"):
        conform([], 60, source_ts_unit="minutes")
    with pytest.raises(ConformanceInputError, match="DataFrame or a list"):
        conform("ts,open", 60)  # type: ignore[arg-type]
    with pytest.raises(ConformanceInputError, match="each row"):
        conform([1, 2, 3], 60)  # type: ignore[list-item]
    dup = pd.concat([canonical(2), canonical(2)[["open"]]], axis=1)
    with pytest.raises(ConformanceInputError, match="open"):
        conform(dup, 60)
    assert issubclass(ConformanceInputError, ValueError)


# ------------------------------------------------------------------------ flags_within


def test_flags_within_attributes_rows_and_gaps_to_windows() -> None:
    rows = [row(BASE), row(BASE + 60, v=-1), row(BASE + 240), row(BASE + 240), row(BASE + 420)]
    result = conform(rows, 60)
    only(result, ohlc_inconsistent=1, duplicate_ts=1, gap=5)
    first, second = Range(BASE, BASE + 180), Range(BASE + 180, BASE + 600)
    a, b = result.flags_within(first, 60), result.flags_within(second, 60)
    assert {k: v for k, v in a.items() if v} == {"ohlc_inconsistent": 1, "gap": 2}
    assert {k: v for k, v in b.items() if v} == {"duplicate_ts": 1, "gap": 3}
    assert a["gap"] + b["gap"] == result.flags["gap"]
    assert set(a) == set(FLAGS)
    outside = result.flags_within(Range(0, 60), 60)
    assert not any(outside.values())


def test_flags_within_carries_column_flags_and_ts_corrections() -> None:
    frame = canonical(4).astype({"volume": "int64"})
    frame["ts"] = frame["ts"] * 1000
    result = conform(frame, 60)  # ms where seconds were declared
    window = Range(BASE, BASE + 120)
    within = result.flags_within(window, 60)
    assert within["dtype_cast"] == 1 and within["ts_cast"] == 2


# -------------------------------------------------------------------------- the schema


def test_canonical_frames_validate() -> None:
    frame = canonical(10)
    assert validate_canonical(frame, 60) is frame
    validate_canonical(empty_frame(), 60)
    assert canonical_schema(60).strict is True


@pytest.mark.parametrize(
    ("mutate", "check", "offending"),
    [
        (
            lambda f: f.assign(ts=f["ts"].to_numpy()[[0, 2, 1, 3]]),
            "ts_monotonic_increasing",
            [BASE + 60],
        ),
        (lambda f: f.assign(ts=f["ts"].to_numpy()[[0, 1, 1, 3]]), "ts_unique", [BASE + 60]),
        (lambda f: f.assign(ts=f["ts"] - BASE - 120), "ts_non_negative", [-120, -60]),
        (
            lambda f: f.assign(ts=f["ts"] + np.array([0, 0, 1, 1])),
            "ts_aligned",
            [BASE + 121, BASE + 181],
        ),
        (lambda f: f.assign(close=[1.0, NAN, 101.0, 102.0]), "values_finite", [BASE + 60]),
        (lambda f: f.assign(volume=[1.0, 2.0, INF, 1.0]), "values_finite", [BASE + 120]),
        (lambda f: f.assign(high=[0.0, 103.0, 104.0, 105.0]), "high_is_max", [BASE]),
        (lambda f: f.assign(low=[99.0, 100.0, 101.0, 104.5]), "low_is_min", [BASE + 180]),
        (lambda f: f.assign(volume=[1.0, -2.0, 1.0, 1.0]), "volume_non_negative", [BASE + 60]),
        (
            lambda f: f.assign(low=[0.0, 100.0, -1.0, 102.0]),
            "prices_positive",
            [BASE, BASE + 120],
        ),
        (
            lambda f: f.assign(open=0.0, high=0.0, low=0.0, close=0.0, volume=0.0),
            "prices_positive",
            [BASE, BASE + 60, BASE + 120, BASE + 180],
        ),
    ],
)
def test_schema_checks_name_the_rule_and_rows(mutate, check: str, offending: list[int]) -> None:
    bad = mutate(canonical(4))
    with pytest.raises(CanonicalFrameError) as info:
        validate_canonical(bad, 60)
    assert info.value.check == check
    assert list(info.value.offending_ts) == offending
    assert check in str(info.value) and "conform()" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (lambda f: f.assign(extra=1.0), "column_in_schema"),
        (lambda f: f.drop(columns=["low"]), "column_in_dataframe"),
        (lambda f: f[["open", "ts", "high", "low", "close", "volume"]], "column_ordered"),
        (lambda f: f.astype({"ts": "int32"}), "dtype('int64')"),
        (lambda f: f.astype({"open": "float32"}), "dtype('float64')"),
    ],
)
def test_schema_rejects_structure(mutate, check: str) -> None:
    with pytest.raises(CanonicalFrameError) as info:
        validate_canonical(mutate(canonical(3)), 60)
    assert info.value.check == check
    assert "want ['ts:int64'" in str(info.value)


# ------------------------------------------------------------------- property tests


def reference(rows: list[list[Any]], interval: int) -> tuple[dict[int, tuple], Counter]:
    """A slow, obviously-correct model of conform() for rows with ts in seconds."""
    kept: dict[int, tuple] = {}
    counts: Counter = Counter()
    for ts, *values in rows:
        if ts is None or not math.isfinite(ts) or ts < 0 or ts != int(ts) or int(ts) % interval:
            counts["invalid_timestamp"] += 1
        elif not all(v is not None and math.isfinite(v) for v in values):
            counts["non_finite"] += 1
        elif all(v == 0 for v in values):
            counts["zero_bar"] += 1
        elif any(v <= 0 for v in values[:4]):
            counts["non_positive_price"] += 1
        elif values[1] < max(values[0], values[3], values[2]) or (
            values[2] > min(values[0], values[3]) or values[4] < 0
        ):
            counts["ohlc_inconsistent"] += 1
        else:
            if int(ts) in kept:
                counts["duplicate_ts"] += 1
            kept[int(ts)] = tuple(float(v) for v in values)
    return dict(sorted(kept.items())), counts


slots = st.integers(0, 12)
timestamps = st.one_of(
    slots.map(lambda k: BASE + 60 * k),
    slots.map(lambda k: BASE + 60 * k + 7),
    st.sampled_from([None, NAN, -60, BASE + 0.5]),
)
prices = st.sampled_from([1.0, 2.0, 3.0])
anything = st.sampled_from([1.0, 2.0, 3.0, NAN, INF, -1.0, 0.0, None])


@st.composite
def consistent_row(draw: st.DrawFn) -> list[Any]:
    o, c = draw(prices), draw(prices)
    h = max(o, c) + draw(st.sampled_from([0.0, 0.5]))
    lo = min(o, c) - draw(st.sampled_from([0.0, 0.5]))
    return [draw(timestamps), o, h, lo, c, draw(st.sampled_from([0.0, 1.0, 7.0]))]


any_row = st.builds(lambda t, vs: [t, *vs], timestamps, st.lists(anything, min_size=5, max_size=5))
zero_row = timestamps.map(lambda t: [t, 0.0, 0.0, 0.0, 0.0, 0.0])
row_lists = st.lists(st.one_of(consistent_row(), consistent_row(), any_row, zero_row), max_size=30)


@settings(max_examples=300)
@given(row_lists)
def test_conform_matches_the_reference_model(rows: list[list[Any]]) -> None:
    result = conform(rows, 60)
    kept, counts = reference(rows, 60)
    validate_canonical(result.frame, 60)
    assert result.frame["ts"].tolist() == list(kept)
    values = result.frame[list(VALUE_COLUMNS)].itertuples(index=False, name=None)
    assert list(values) == list(kept.values())
    for flag in DROP_FLAGS:
        assert result.flags[flag] == counts[flag], flag
    # Every input row is kept or accounted for by exactly one drop flag.
    assert len(result.frame) + sum(result.flags[f] for f in DROP_FLAGS) == len(rows)
    listed = len(result.dropped)
    unlisted = sum(1 for r in rows if r[0] is None or r[0] != r[0] or r[0] < 0)
    assert listed + unlisted == sum(result.flags[f] for f in DROP_FLAGS)
    if len(kept) > 1:
        ts = list(kept)
        assert result.flags["gap"] == (ts[-1] - ts[0]) // 60 + 1 - len(ts)


@settings(max_examples=200)
@given(row_lists)
def test_conform_is_idempotent(rows: list[list[Any]]) -> None:
    first = conform(rows, 60)
    second = conform(first.frame, 60)
    pd.testing.assert_frame_equal(second.frame, first.frame)
    only(second, gap=first.flags["gap"])
    assert second.dropped.empty and second.corrected.empty


@settings(max_examples=100)
@given(st.lists(consistent_row(), max_size=20), st.sampled_from(["ms", "us", "ns"]))
def test_units_give_the_same_frame_as_seconds(rows: list[list[Any]], unit: str) -> None:
    rows = [r for r in rows if isinstance(r[0], int) and r[0] >= 0]
    factor = {"ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    seconds = conform(rows, 60, source_ts_unit="s")
    scaled_rows = [[r[0] * factor, *r[1:]] for r in rows]
    scaled = conform(scaled_rows, 60, source_ts_unit=unit)
    pd.testing.assert_frame_equal(scaled.frame, seconds.frame)
    assert scaled.flags == seconds.flags
    pd.testing.assert_frame_equal(scaled.dropped, seconds.dropped)
    # The same data as a typed DataFrame column in that unit.
    frame = pd.DataFrame(scaled_rows, columns=list(CANONICAL_COLUMNS)).astype(
        {c: "float64" for c in VALUE_COLUMNS}
    )
    if len(frame):
        frame = frame.astype({"ts": "int64"})
        via_frame = conform(frame, 60, source_ts_unit=unit)
        pd.testing.assert_frame_equal(via_frame.frame, seconds.frame)
        # Declaring the wrong unit converts the same way but reports every row as cast.
        mislabelled = conform(frame, 60, source_ts_unit="s")
        pd.testing.assert_frame_equal(mislabelled.frame, seconds.frame)
        assert mislabelled.flags["ts_cast"] == len(frame)


@settings(max_examples=100)
@given(
    st.integers(1, 40),
    st.lists(st.tuples(st.integers(0, 39), st.integers(1, 15)), min_size=1, max_size=5),
)
def test_duplicates_across_page_boundaries_are_resolved(
    n: int, pages: list[tuple[int, int]]
) -> None:
    """Overlapping fetch pages: the later page's version of a bar wins."""
    truth = canonical(n)
    expected = truth.copy()
    payload = []
    for version, (start, length) in enumerate(pages, start=1):
        page = truth.iloc[start : start + length].copy()
        page["volume"] = float(version)  # a later page revises the bars it repeats
        expected.loc[page.index, "volume"] = float(version)
        payload.append(page)
    raw = pd.concat(payload, ignore_index=True)
    result = conform(raw.to_numpy().tolist(), 60)
    covered = sorted(set(raw["ts"]))
    want = expected[expected["ts"].isin(covered)].reset_index(drop=True)
    pd.testing.assert_frame_equal(result.frame, want)
    assert result.flags["duplicate_ts"] == len(raw) - len(covered)


def test_schema_and_conform_agree_on_a_large_frame() -> None:
    frame = canonical(50_000)
    only(conform(frame, 60))
    validate_canonical(frame, 60)


def test_rows_as_records_and_exact_nanoseconds_next_to_missing_cells() -> None:
    records = [dict(zip(CANONICAL_COLUMNS, row(BASE + 60 * i), strict=True)) for i in range(2)]
    only(conform(records, 60))
    ns = BASE * 10**9
    result = conform([row(ns), row(None), row(ns + 60 * 10**9 + 1)], 60, source_ts_unit="ns")
    only(result, invalid_timestamp=2)
    assert result.frame["ts"].tolist() == [BASE]
    assert dropped(result) == [(BASE + 60, "invalid_timestamp")]


# ------------------------------------------------------------------- bar-grid origin

WEEK, MONDAY = 604_800, 345_600
MONDAY_TS = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday: MONDAY_TS % WEEK == MONDAY


def test_weekly_bars_on_mondays_are_kept_and_epoch_aligned_ones_dropped() -> None:
    mondays = [MONDAY_TS + WEEK * i for i in range(4)]
    thursdays = [t - 4 * 86_400 for t in mondays]  # the epoch grid: ts % WEEK == 0
    assert all(t % WEEK == MONDAY for t in mondays) and all(t % WEEK == 0 for t in thursdays)
    rows = [row(t * 1000) for t in sorted(mondays + thursdays)]
    result = conform(rows, WEEK, source_ts_unit="ms", origin_s=MONDAY)
    only(result, invalid_timestamp=4)
    assert result.frame["ts"].tolist() == mondays
    assert dropped(result) == [(t, "invalid_timestamp") for t in thursdays]
    validate_canonical(result.frame, WEEK, origin_s=MONDAY)
    # Without the origin (the old behaviour) every real weekly bar was dropped.
    epoch = conform([row(t * 1000) for t in mondays], WEEK, source_ts_unit="ms")
    only(epoch, invalid_timestamp=4)
    assert epoch.frame.empty


def test_schema_alignment_check_uses_the_origin() -> None:
    weekly = canonical(3, start=MONDAY_TS, interval=WEEK)
    assert validate_canonical(weekly, WEEK, origin_s=MONDAY) is weekly
    with pytest.raises(CanonicalFrameError, match="ts_aligned") as info:
        validate_canonical(weekly, WEEK)
    assert info.value.offending_ts == tuple(weekly["ts"].tolist())
    thursdays = canonical(2, start=MONDAY_TS - 4 * 86_400, interval=WEEK)
    with pytest.raises(CanonicalFrameError, match=r"\(ts - 345600\) % 604800 == 0"):
        validate_canonical(thursdays, WEEK, origin_s=MONDAY)
    with pytest.raises(ConformanceInputError, match="origin_s"):
        conform([], WEEK, origin_s=1.5)  # type: ignore[arg-type]


def test_flags_within_counts_gaps_on_the_origin_grid() -> None:
    rows = [row(MONDAY_TS), row(MONDAY_TS + 3 * WEEK)]
    result = conform(rows, WEEK, origin_s=MONDAY)
    only(result, gap=2)
    january = Range(MONDAY_TS, MONDAY_TS + 31 * 86_400)  # Mondays Jan 1 .. Jan 29
    within = result.flags_within(january, WEEK, origin_s=MONDAY)
    assert within["gap"] == 2  # Jan 8 and Jan 15 hold no row


@settings(max_examples=200)
@given(row_lists, st.integers(-59, 59))
def test_conform_with_origin_is_conform_of_the_shifted_rows(
    rows: list[list[Any]], origin: int
) -> None:
    """Results on the grid `origin + 60k` equal the epoch-grid results of the rows shifted
    by `-origin`, shifted back (a row's validity and values do not depend on the grid)."""
    moved = [[t if t is None else t + origin, *rest] for t, *rest in rows]
    result = conform(moved, 60, origin_s=origin)
    base = conform(rows, 60)
    want = base.frame.assign(ts=base.frame["ts"] + origin)
    pd.testing.assert_frame_equal(result.frame, want)
    validate_canonical(result.frame, 60, origin_s=origin)
    assert result.flags == base.flags
    window = Range(BASE + origin, BASE + origin + 360)
    assert result.flags_within(window, 60, origin_s=origin) == base.flags_within(
        Range(BASE, BASE + 360), 60
    )


@st.composite
def windowed_rows(draw: st.DrawFn) -> tuple[list[list[Any]], np.ndarray]:
    """ccxt-like ms rows, each with the window it was requested for; some open times are
    impossible for their window (0, the year 3000, another window's bar)."""
    n = draw(st.integers(0, 25))
    rows, windows = [], []
    for _ in range(n):
        start = BASE + 60 * draw(st.integers(0, 10))
        end = start + 60 * draw(st.integers(1, 6))
        ts = draw(
            st.one_of(
                st.integers(0, 16).map(lambda k: (BASE + 60 * k) * 1000),
                st.sampled_from([0, 32_503_680_000_000, None, (BASE + 30) * 1000]),
            )
        )
        rows.append([ts, *draw(st.sampled_from([[10.0, 12.0, 9.0, 11.0, 5.0], [0.0] * 5]))])
        windows.append((start, end))
    return rows, np.array(windows, dtype=np.int64).reshape(-1, 2)


@settings(max_examples=300)
@given(windowed_rows())
def test_windows_drop_exactly_the_misplaced_rows(case: tuple[list[list[Any]], np.ndarray]) -> None:
    rows, windows = case
    result = conform(rows, 60, source_ts_unit="ms", windows=windows)
    ts = [None if r[0] is None else r[0] // 1000 for r in rows]
    placed = [t is not None and a <= t < b for t, (a, b) in zip(ts, windows.tolist(), strict=True)]
    # the rows that are placed conform exactly as they would without windows
    alone = conform([r for r, ok in zip(rows, placed, strict=True) if ok], 60, source_ts_unit="ms")
    pd.testing.assert_frame_equal(result.frame, alone.frame)
    misplaced = placed.count(False)
    assert result.flags["invalid_timestamp"] == alone.flags["invalid_timestamp"] + misplaced
    for flag in set(DROP_FLAGS) - {"invalid_timestamp"}:
        assert result.flags[flag] == alone.flags[flag], flag
    # every row is accounted for, listed inside the window it was requested for
    assert len(result.dropped) == sum(result.flags[f] for f in DROP_FLAGS)
    assert len(result.frame) + len(result.dropped) == len(rows)
    for listed, _ in dropped(result):
        assert any(a <= listed < b for a, b in windows.tolist())
    # the k-th misplaced row of a window is listed at the k-th slot of that window no kept
    # bar fills (else at the window's start); a placed but off-grid one at its own time
    kept = set(result.frame["ts"].tolist())
    want: Counter = Counter()
    seen: Counter = Counter()
    for t, ok, (a, b) in zip(ts, placed, windows.tolist(), strict=True):
        if ok:
            if t % 60:
                want[t] += 1
            continue
        empty = [slot for slot in range(-(-a // 60) * 60, b, 60) if slot not in kept]
        k = seen[(a, b)]
        seen[(a, b)] += 1
        want[empty[k] if k < len(empty) else a] += 1
    assert Counter(t for t, f in dropped(result) if f == "invalid_timestamp") == want
