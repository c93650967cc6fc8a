"""Conformance v2: turn whatever an exchange or a file gave us into the canonical frame.

`conform` never drops a row silently: each removed row carries exactly one drop flag
(precedence `invalid_timestamp` > `dtype_mismatch` > `non_finite` > `zero_bar` >
`non_positive_price` > `ohlc_inconsistent` > `duplicate_ts`, so that, of several versions
of one bar, the last *valid* one is kept). Other flags count corrections: `missing_column`
and `dtype_cast` count columns, `ts_cast` and `ts_timezone_normalized` count rows, `gap`
counts bars missing between the first and last kept bar. `canonical_schema` is the
pandera contract every store relies on.

Flags beside the blueprint's v2 taxonomy (which lacks a name for them), both drop flags:

* `zero_bar`: open, high, low, close and volume are all 0 (an exchange's placeholder for
  a bar it has not computed, not a market without trades: that repeats the last close);
* `non_positive_price`: some price (open, high, low or close) is 0 or below.

Policy for every drop flag: the row is not stored (nothing is stored wrong), it is listed
in `Conformed.dropped` with its flag (nothing is dropped silently), and its slot is never
taken as confirmed-empty, so a later run fetches it again.

`invalid_timestamp` also covers open times that are *impossible for the request* when
`conform` is told which window each row answered (`windows`): open time 0, the year 3000,
a bar of another range. Such a row's own timestamp means nothing, so it is listed inside
the window it was requested for (the partition that asked gets the flag): at the first
slot of that window no kept bar fills (the bar it most likely stood in for; a property of
the exchange's data, not of how a run split its requests), else at the window's start.

Everything is vectorized over numpy arrays: no per-row Python code runs on any path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from .flags import (  # noqa: F401 - re-exported: conformance is where flags are defined for callers
    COLUMN_FLAGS,
    CONFORMANCE_VERSION,
    DROP_FLAGS,
    DTYPE_CAST,
    DTYPE_MISMATCH,
    DUPLICATE_TS,
    FLAGS,
    GAP,
    INVALID_TIMESTAMP,
    MISSING_COLUMN,
    NON_FINITE,
    NON_POSITIVE_PRICE,
    OHLC_INCONSISTENT,
    TS_CAST,
    TS_TIMEZONE_NORMALIZED,
    ZERO_BAR,
    conformance_warnings,
)
from .frame import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    PRICE_COLUMNS,
    TS,
    VALUE_COLUMNS,
    Range,
    empty_frame,
    frame_from_arrays,
)

TS_UNITS: dict[str, int] = {"s": 0, "ms": 1, "us": 2, "µs": 2, "ns": 3}
_FACTORS = np.array([1, 10**3, 10**6, 10**9], dtype=np.int64)
# Magnitude bands that reveal the unit: s < 1e11 <= ms < 1e14 <= µs < 1e17 <= ns.
_THRESHOLDS = np.array([10**11, 10**14, 10**17], dtype=np.int64)
_NS = TS_UNITS["ns"]
_INT64_LIMIT = 2.0**63
_FLOAT_EXACT_LIMIT = 2.0**53
_DROP_NAMES = np.array(["", *DROP_FLAGS], dtype=object)  # indexed by drop code
_CORRECTION_NAMES = np.array([TS_CAST, TS_TIMEZONE_NORMALIZED], dtype=object)
_FLAG_COLUMNS = [TS, "flag"]


class CanonicalFrameError(ValueError):
    """A frame breaks the canonical contract: names the check and offending timestamps."""

    def __init__(self, check: str, detail: str, offending_ts: Sequence[int] = ()) -> None:
        self.check, self.detail, self.offending_ts = check, detail, tuple(offending_ts)
        example = f"; e.g. ts={list(self.offending_ts)}" if self.offending_ts else ""
        super().__init__(
            f"frame is not canonical: check `{check}` failed: {detail}{example}. "
            "Pass raw data through conform() before storing or publishing it."
        )


class ConformanceInputError(ValueError):
    """`conform` was given something it cannot read at all (wrong type, bad unit...)."""


# ---------------------------------------------------------------------------- schema


def _after_previous(ts: np.ndarray, op: Callable[[Any, Any], Any]) -> np.ndarray:
    ok = np.ones(ts.size, dtype=bool)
    ok[1:] = op(ts[1:], ts[:-1])
    return ok


def _row_checks(
    interval_s: int, origin_s: int = 0
) -> dict[str, tuple[Callable[[pd.DataFrame], np.ndarray], str]]:
    """Vectorized row-level checks: name -> (mask of passing rows, what it requires)."""
    grid = f"(ts - {origin_s}) % {interval_s} == 0" if origin_s else f"ts % {interval_s} == 0"

    def values(df: pd.DataFrame, column: str) -> np.ndarray:
        return df[column].to_numpy()

    def finite(df: pd.DataFrame) -> np.ndarray:
        ok = np.isfinite(values(df, VALUE_COLUMNS[0]))
        for column in VALUE_COLUMNS[1:]:
            ok &= np.isfinite(values(df, column))
        return ok

    def high_is_max(df: pd.DataFrame) -> np.ndarray:
        top = np.maximum(np.maximum(values(df, "open"), values(df, "close")), values(df, "low"))
        return values(df, "high") >= top

    def low_is_min(df: pd.DataFrame) -> np.ndarray:
        return values(df, "low") <= np.minimum(values(df, "open"), values(df, "close"))

    def prices_positive(df: pd.DataFrame) -> np.ndarray:
        # low is the smallest price of a consistent bar, but check all: the checks are
        # independent and each must name its own failing rows.
        ok = values(df, PRICE_COLUMNS[0]) > 0
        for column in PRICE_COLUMNS[1:]:
            ok &= values(df, column) > 0
        return ok

    return {
        "ts_monotonic_increasing": (
            lambda df: _after_previous(values(df, TS), np.greater_equal),
            "ts sorted ascending",
        ),
        "ts_unique": (lambda df: _after_previous(values(df, TS), np.not_equal), "unique ts"),
        "ts_non_negative": (lambda df: values(df, TS) >= 0, "ts >= 0"),
        "ts_aligned": (
            lambda df: (values(df, TS) - origin_s) % interval_s == 0,
            f"{grid} (bar open times on the interval grid)",
        ),
        "values_finite": (finite, "finite open/high/low/close/volume"),
        "high_is_max": (high_is_max, "high >= max(open, close, low)"),
        "low_is_min": (low_is_min, "low <= min(open, close)"),
        "volume_non_negative": (lambda df: values(df, "volume") >= 0, "volume >= 0"),
        "prices_positive": (prices_positive, "open, high, low, close > 0"),
    }


def canonical_schema(interval_s: int, *, origin_s: int = 0) -> pa.DataFrameSchema:
    """The pandera contract of a canonical frame for bars of `interval_s` seconds.

    Bar open times lie on the grid `origin_s + k * interval_s` (`Timeframe.origin_s`).
    """
    _check_interval(interval_s, origin_s)
    columns = {TS: pa.Column(np.int64, nullable=False)}
    # NaN is rejected by the `values_finite` check, which also names the offending rows.
    columns.update({c: pa.Column(np.float64, nullable=True) for c in VALUE_COLUMNS})

    def as_series(fn: Callable[[pd.DataFrame], np.ndarray]) -> Callable[[pd.DataFrame], pd.Series]:
        return lambda df: pd.Series(fn(df), index=df.index)

    checks = [
        pa.Check(as_series(fn), name=name, error=requirement, ignore_na=False)
        for name, (fn, requirement) in _row_checks(interval_s, origin_s).items()
    ]
    return pa.DataFrameSchema(
        columns, checks=checks, strict=True, ordered=True, coerce=False, name="canonical_ohlcv"
    )


def validate_canonical(frame: pd.DataFrame, interval_s: int, *, origin_s: int = 0) -> pd.DataFrame:
    """Return `frame` if it is canonical for `interval_s` (and the grid origin `origin_s`),
    else raise CanonicalFrameError."""
    try:
        canonical_schema(interval_s, origin_s=origin_s).validate(frame, lazy=False)
    except (SchemaError, SchemaErrors) as raised:
        error = raised.schema_errors[0] if isinstance(raised, SchemaErrors) else raised
        check = getattr(error.check, "name", None) or str(error.check)
        row_checks = _row_checks(interval_s, origin_s)
        if check not in row_checks:  # structure: columns, order, dtypes
            got = [f"{c}:{dtype}" for c, dtype in frame.dtypes.items()]
            want = [f"{c}:{CANONICAL_DTYPES[c]}" for c in CANONICAL_COLUMNS]
            reason = str(error).splitlines()[0].split(" {")[0].split(". Columns in")[0]
            raise CanonicalFrameError(check, f"{reason}; want {want}, got {got}") from None
        fn, requirement = row_checks[check]
        failing = np.flatnonzero(~fn(frame))
        offending = frame[TS].to_numpy()[failing[:5]].tolist()
        raise CanonicalFrameError(
            check, f"{failing.size} row(s) break `{requirement}`", offending
        ) from None
    return frame


# --------------------------------------------------------------------------- results


def _flag_frame(ts: np.ndarray, flags: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {TS: np.asarray(ts, dtype=np.int64), "flag": np.asarray(flags, dtype=object)},
        columns=_FLAG_COLUMNS,
    )


def _empty_flag_frame() -> pd.DataFrame:
    return _flag_frame(np.empty(0, np.int64), np.empty(0, object))


@dataclass(frozen=True, eq=False)
class Conformed:
    """A canonical frame plus the account of everything conformance did to get it.

    `dropped` lists every removed row with a parseable timestamp (`ts` in seconds,
    floored; with `windows`, every removed row, an impossible one inside its window)
    and its drop flag; `corrected` lists rows whose timestamp was cast or
    normalised (`ts_cast`, `ts_timezone_normalized`). `flags` holds every key of FLAGS.
    """

    frame: pd.DataFrame
    flags: dict[str, int]
    dropped: pd.DataFrame = field(default_factory=_empty_flag_frame)
    corrected: pd.DataFrame = field(default_factory=_empty_flag_frame)

    @property
    def warnings(self) -> int:
        """Total corrections and drops (every flag except `gap`)."""
        return conformance_warnings(self.flags)

    def flags_within(self, window: Range, interval_s: int, *, origin_s: int = 0) -> dict[str, int]:
        """Flag counts attributable to `window` (bar open times in `[start, end)`).

        Row flags come from `dropped`/`corrected` by timestamp; `gap` counts bars of the
        window between the frame's first and last bar that hold no row, so windows that
        partition the frame's span sum to the frame's `gap`. The column-level flags
        (`missing_column`, `dtype_cast`) describe the payload and are carried whole to
        every window holding at least one of its rows.
        """
        counts = dict.fromkeys(FLAGS, 0)
        touched = False
        for table in (self.dropped, self.corrected):
            ts = table[TS].to_numpy()
            inside = (ts >= window.start) & (ts < window.end)
            if inside.any():
                touched = True
                for flag, n in table["flag"][inside].value_counts().items():
                    counts[str(flag)] += int(n)
        ts = self.frame[TS].to_numpy()
        kept = int(np.searchsorted(ts, window.end) - np.searchsorted(ts, window.start))
        if ts.size:
            span = Range(int(ts[0]), int(ts[-1]) + interval_s).intersect(window)
            counts[GAP] = span.bars(interval_s, origin_s=origin_s) - kept if span else 0
        if touched or kept:
            for flag in COLUMN_FLAGS:
                counts[flag] = self.flags[flag]
        return counts


# ------------------------------------------------------------------ timestamp parsing


@dataclass
class _Timestamps:
    """Raw integer timestamps of each row in some unit, before conversion to seconds."""

    ints: np.ndarray  # int64 count of `unit` since the epoch (0 where not ok)
    ok: np.ndarray  # parseable and non-negative
    exact: np.ndarray  # an integer number of its unit (a float 1.5 is not)
    unit: np.ndarray | None = None  # forced unit index per row; None = by magnitude
    representation_cast: np.ndarray | bool = False  # coerced from another representation
    tz_normalized: np.ndarray | bool = False


def _check_interval(interval_s: int, origin_s: int = 0) -> None:
    if not isinstance(interval_s, int | np.integer) or interval_s <= 0:
        raise ConformanceInputError(f"interval_s must be a positive int, got {interval_s!r}")
    if not isinstance(origin_s, int | np.integer):
        raise ConformanceInputError(f"origin_s must be an int, got {origin_s!r}")


def _from_floats(values: np.ndarray) -> _Timestamps:
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (values >= 0) & (values < _INT64_LIMIT)
        floor = np.floor(np.where(ok, values, 0.0))
    return _Timestamps(floor.astype(np.int64), ok, floor == values)


def _from_datetimes(series: pd.Series) -> _Timestamps:
    aware = getattr(series.dtype, "tz", None) is not None
    ns = series.to_numpy(dtype="datetime64[ns]").view(np.int64)  # tz-aware: UTC instants
    ok = ns >= 0  # NaT is the most negative int64
    unit = np.full(ns.size, _NS, dtype=np.int8)
    return _Timestamps(np.where(ok, ns, 0), ok, ok.copy(), unit, True, aware)


def _from_objects(series: pd.Series) -> _Timestamps:
    # Nullable dtypes keep integers exact next to missing cells (ns > 2**53).
    numeric = pd.to_numeric(series, errors="coerce", dtype_backend="numpy_nullable")
    if pd.api.types.is_integer_dtype(numeric.dtype):
        ints = numeric.to_numpy(dtype=np.int64, na_value=-1)
        parsed = _Timestamps(np.maximum(ints, 0), ints >= 0, np.ones(ints.size, bool))
    else:
        parsed = _from_floats(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    parsed.representation_cast = True
    leftover = np.flatnonzero(numeric.isna().to_numpy() & series.notna().to_numpy())
    if leftover.size:  # ISO-8601 strings, datetime objects
        try:
            dt = pd.to_datetime(series.iloc[leftover], utc=True, errors="coerce", format="ISO8601")
            ns = dt.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)
        except (TypeError, ValueError):
            ns = np.full(leftover.size, np.iinfo(np.int64).min)
        parsed.unit = np.full(series.size, -1, dtype=np.int8)
        good = ns >= 0
        rows = leftover[good]
        parsed.ints[rows], parsed.ok[rows], parsed.exact[rows] = ns[good], True, True
        parsed.unit[rows] = _NS
    return parsed


def _parse_ts_column(series: pd.Series, typed: bool) -> _Timestamps:
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return _from_datetimes(series)
    if pd.api.types.is_integer_dtype(dtype):
        if isinstance(dtype, np.dtype):
            ints = series.to_numpy(dtype=np.int64)
            ok = ints >= 0
        else:  # nullable Int64 & co.
            ok = series.notna().to_numpy() & (series.fillna(-1).to_numpy(dtype=np.int64) >= 0)
            ints = series.fillna(0).to_numpy(dtype=np.int64)
        return _Timestamps(np.where(ok, ints, 0), ok, np.ones(ints.size, bool))
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        parsed = _from_floats(series.to_numpy(dtype=np.float64, na_value=np.nan))
        parsed.representation_cast = typed
        return parsed
    return _from_objects(series.astype(object))


def _to_seconds(
    parsed: _Timestamps, source_unit: int, interval_s: int, origin_s: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(seconds floored, listable, valid & aligned, ts_cast rows, tz-normalised rows)."""
    ints, ok = parsed.ints, parsed.ok
    by_magnitude = ok if parsed.unit is None else ok & (parsed.unit < 0)
    magnitudes = ints[by_magnitude]
    bounds = [int(magnitudes.min()), int(magnitudes.max())] if magnitudes.size else [0, 0]
    lo_unit, hi_unit = np.searchsorted(_THRESHOLDS, bounds, side="right")
    unit: np.ndarray | int
    if lo_unit == hi_unit:  # the common case: one unit for the whole payload
        unit = int(lo_unit)
    else:
        unit = np.searchsorted(_THRESHOLDS, ints, side="right").astype(np.int8)
    if parsed.unit is not None:
        unit = np.where(parsed.unit >= 0, parsed.unit, unit).astype(np.int8)
    factor = _FACTORS[unit]
    if np.isscalar(factor) and factor == 1:
        seconds, exact = ints, parsed.exact
    else:
        seconds, remainder = np.divmod(ints, factor)
        exact = parsed.exact & (remainder == 0)
    valid = ok & exact & ((seconds - origin_s) % interval_s == 0)
    cast = ok & ((unit != source_unit) | parsed.representation_cast)
    tz = ok & parsed.tz_normalized
    return seconds, ok, valid, np.broadcast_to(cast, ok.shape), np.broadcast_to(tz, ok.shape)


# ---------------------------------------------------------------------- value parsing


def _parse_value_column(
    series: pd.Series, typed: bool
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(float64 values, rows whose cell could not be parsed or None, column was cast)."""
    dtype = series.dtype
    if dtype == np.float64:
        return series.to_numpy(), None, False
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), None, typed
    objects = series.astype(object)
    parsed = pd.to_numeric(objects, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    unparsed = np.isnan(parsed) & objects.notna().to_numpy()
    if unparsed.any():  # text spelling NaN is a non-finite value, not a type mismatch
        text = objects[unparsed].astype(str).str.strip().str.lower()
        unparsed[np.flatnonzero(unparsed)[text.isin(["nan", "+nan", "-nan"]).to_numpy()]] = False
    return parsed, unparsed, True


# ---------------------------------------------------------------------------- conform


@dataclass
class _Parsed:
    ts: _Timestamps
    values: dict[str, np.ndarray]
    mismatch: np.ndarray
    missing_columns: int = 0
    cast_columns: int = 0


def _parse_frame(raw: pd.DataFrame, typed: bool) -> _Parsed:
    if TS not in raw.columns and raw.index.name == TS:
        raw = raw.reset_index()
    duplicated = sorted({str(c) for c in raw.columns[raw.columns.duplicated()]})
    if duplicated:
        raise ConformanceInputError(f"columns {duplicated} appear more than once; rename them")
    n = len(raw)
    missing = [c for c in CANONICAL_COLUMNS if c not in raw.columns]
    if TS in raw.columns:
        ts = _parse_ts_column(raw[TS], typed)
    else:
        ts = _Timestamps(np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool))
    values, mismatch, cast = {}, np.zeros(n, dtype=bool), 0
    for column in VALUE_COLUMNS:
        if column not in raw.columns:
            values[column] = np.full(n, np.nan)
            continue
        values[column], unparsed, was_cast = _parse_value_column(raw[column], typed)
        cast += was_cast
        if unparsed is not None:
            mismatch |= unparsed
    return _Parsed(ts, values, mismatch, len(missing), cast)


def _float_matrix(rows: Sequence[Sequence[Any]] | np.ndarray) -> np.ndarray | None:
    """Rows of six numbers as a float64 `(n, 6)` matrix (C loops, no Python per row); None
    when some row is not six numbers (strings, objects, ragged rows)."""
    n = len(rows)
    if n == 0:
        return np.empty((0, len(CANONICAL_COLUMNS)))
    try:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n)
    except TypeError:
        raise ConformanceInputError("each row must be a sequence [ts, o, h, l, c, v]") from None
    if not lengths.min() == lengths.max() == len(CANONICAL_COLUMNS):
        return None
    try:
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * 6)
    except (TypeError, ValueError):
        return None
    return flat.reshape(n, 6)


def rows_matrix(rows: Sequence[Sequence[Any]]) -> np.ndarray | None:
    """ccxt-style rows as the float64 `(n, 6)` matrix `conform` reads them as, so that
    `conform(np.concatenate([rows_matrix(a), rows_matrix(b)]))` is `conform(a + b)` without
    building the joined list; None when `conform` must read these rows themselves (not all
    six numbers, or open times float64 cannot hold exactly)."""
    matrix = _float_matrix(rows)
    if matrix is None or bool(np.any(np.abs(matrix[:, 0]) >= _FLOAT_EXACT_LIMIT)):
        return None
    return matrix


def columns_matrix(opens: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """`rows_matrix` of the rows `[opens[i], *values[i]]` (integer open times, an `(n, 5)`
    float64 array of open, high, low, close, volume), read from the arrays themselves."""
    if opens.size and bool(np.any(np.abs(opens) >= _FLOAT_EXACT_LIMIT)):
        return None
    return np.column_stack((opens.astype(np.float64), values.astype(np.float64, copy=False)))


def _parse_rows(rows: Sequence[Sequence[Any]] | np.ndarray) -> _Parsed:
    """ccxt-style `[ts, open, high, low, close, volume]` rows; JSON numbers are not casts."""
    n = len(rows)
    matrix: np.ndarray | None = np.empty((0, 6)) if n == 0 else None
    if isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.shape[1] == len(CANONICAL_COLUMNS):
        if pd.api.types.is_numeric_dtype(rows.dtype):
            matrix = rows.astype(np.float64, copy=False)
    elif n:
        matrix = _float_matrix(rows)
    if matrix is None:  # strings, objects or ragged rows: read them as an untyped frame
        frame = pd.DataFrame(list(rows) if isinstance(rows, np.ndarray) else rows)
        if not isinstance(rows[0], Mapping):  # records keep their names; lists are positional
            frame = frame.iloc[:, : len(CANONICAL_COLUMNS)]
            frame.columns = list(CANONICAL_COLUMNS[: frame.shape[1]])
        return _parse_frame(frame, typed=False)
    ts_column = matrix[:, 0]
    ts = _from_floats(ts_column)
    if bool(np.any(np.abs(ts_column) >= _FLOAT_EXACT_LIMIT)):
        # Nanosecond integers do not survive float64: re-read that column exactly.
        source = rows[:, 0] if isinstance(rows, np.ndarray) else list(map(itemgetter(0), rows))
        ts = _from_objects(pd.Series(source, dtype=object))
        ts.representation_cast = False
    values = {c: matrix[:, i + 1] for i, c in enumerate(VALUE_COLUMNS)}
    return _Parsed(ts, values, np.zeros(n, dtype=bool))


def conform(
    raw: pd.DataFrame | Sequence[Sequence[Any]] | np.ndarray,
    interval_s: int,
    source_ts_unit: str = "s",
    *,
    origin_s: int = 0,
    windows: np.ndarray | None = None,
) -> Conformed:
    """Conform raw OHLCV (a DataFrame or ccxt-style rows) to the canonical frame.

    Timestamp units are read from magnitude (s < 1e11 <= ms < 1e14 <= µs < 1e17 <= ns,
    i.e. epoch timestamps after 1973); a unit other than `source_ts_unit` counts as
    `ts_cast`. Timestamps off the bar grid `origin_s + k * interval_s` (`origin_s` is
    `Timeframe.origin_s`: Monday for `1w`, else 0) are dropped as `invalid_timestamp`,
    never floored.

    `windows`, when given, is an int64 array of shape `(rows, 2)`: the `[start, end)`
    (epoch seconds) in which row `i` was requested, so where its open time must lie. A row
    whose open time is outside its window (or unreadable) is dropped as
    `invalid_timestamp` and listed in `dropped` at a bar slot of its window that no kept
    row fills (the k-th such row at the k-th free slot: the bars they most likely stood in
    for), else at the window's start.
    """
    _check_interval(interval_s, origin_s)
    interval_s, origin_s = int(interval_s), int(origin_s)
    if source_ts_unit not in TS_UNITS:
        raise ConformanceInputError(
            f"source_ts_unit must be one of {sorted(TS_UNITS)}, got {source_ts_unit!r}"
        )
    if isinstance(raw, pd.DataFrame):
        parsed = _parse_frame(raw, typed=True)
    elif isinstance(raw, np.ndarray | Sequence) and not isinstance(raw, str | bytes):
        parsed = _parse_rows(raw)
    else:
        raise ConformanceInputError(
            f"conform() takes a DataFrame or a list of [ts, o, h, l, c, v] rows, "
            f"not {type(raw).__name__}"
        )
    return _finish(parsed, interval_s, origin_s, TS_UNITS[source_ts_unit], windows)


def _stand_in_slots(
    kept: np.ndarray, windows: np.ndarray, interval_s: int, origin_s: int
) -> np.ndarray:
    """Where to list rows whose open time is impossible for their `[start, end)` window:
    the k-th such row of a window (in input order) at the k-th bar slot of that window that
    no kept row fills (the bars such rows most likely stood in for, in order), else at the
    window's start.

    Why not simply the window's start: the slot is a property of the exchange's data,
    while a window's start depends on how a run split its fetch (a rerun after a crash
    asks for just the missing slots), and each flag must land on the same bar either way;
    one slot per row also keeps two bad rows of one window two findings.
    """
    out = windows[:, 0].copy()
    unique, inverse = np.unique(windows, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    for index, (start, end) in enumerate(unique.tolist()):
        first = -(-(start - origin_s) // interval_s) * interval_s + origin_s
        slots = np.arange(first, end, interval_s, dtype=np.int64)
        lo, hi = np.searchsorted(kept, [start, end])
        free = slots[~np.isin(slots, kept[lo:hi])]
        rows = np.flatnonzero(inverse == index)
        take = min(rows.size, free.size)
        out[rows[:take]] = free[:take]
    return out


def _check_windows(windows: np.ndarray | None, n: int) -> np.ndarray | None:
    if windows is None:
        return None
    array = np.asarray(windows)
    if array.shape != (n, 2) or not np.issubdtype(array.dtype, np.integer):
        raise ConformanceInputError(
            f"windows must be an integer array of shape ({n}, 2) ([start, end) per row), "
            f"got {array.dtype} {array.shape}"
        )
    return array.astype(np.int64, copy=False)


def _finish(
    parsed: _Parsed,
    interval_s: int,
    origin_s: int,
    source_unit: int,
    windows: np.ndarray | None = None,
) -> Conformed:
    seconds, listable, valid_ts, cast, tz = _to_seconds(
        parsed.ts, source_unit, interval_s, origin_s
    )
    n = seconds.size
    bounds = _check_windows(windows, n)
    misplaced = np.zeros(n, dtype=bool)
    if bounds is not None:
        # A row outside the window it was requested for cannot be that window's bar, and
        # its own open time (0, the year 3000) says nothing: it is listed in its window
        # (where, once the kept bars are known: `_stand_in_slots`).
        misplaced = ~(listable & (seconds >= bounds[:, 0]) & (seconds < bounds[:, 1]))
        valid_ts = valid_ts & ~misplaced
        seconds = np.where(misplaced, bounds[:, 0], seconds)
        cast, tz = cast & ~misplaced, tz & ~misplaced  # no unit is right for such a time
        listable = np.ones(n, dtype=bool)
    o, h, lo, c, v = (parsed.values[col] for col in VALUE_COLUMNS)
    finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
    consistent = (h >= np.maximum(np.maximum(o, c), lo)) & (lo <= np.minimum(o, c)) & (v >= 0)
    positive = (o > 0) & (h > 0) & (lo > 0) & (c > 0)
    zero = (o == 0) & (h == 0) & (lo == 0) & (c == 0) & (v == 0)

    # Assign from lowest to highest precedence so the highest applicable flag wins.
    code = np.zeros(n, dtype=np.int8)
    code[~consistent] = DROP_FLAGS.index(OHLC_INCONSISTENT) + 1
    code[~positive] = DROP_FLAGS.index(NON_POSITIVE_PRICE) + 1
    code[zero] = DROP_FLAGS.index(ZERO_BAR) + 1
    code[~finite] = DROP_FLAGS.index(NON_FINITE) + 1
    code[parsed.mismatch] = DROP_FLAGS.index(DTYPE_MISMATCH) + 1
    code[~valid_ts] = DROP_FLAGS.index(INVALID_TIMESTAMP) + 1

    # Of rows sharing a ts keep the last valid one in input order; sort as we go.
    candidates = np.flatnonzero(code == 0)
    ts = seconds[candidates]
    identity = candidates.size == n
    if ts.size > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        identity = False
        order = np.argsort(ts, kind="stable")
        candidates, ts = candidates[order], ts[order]
        last = np.append(ts[1:] != ts[:-1], True)
        code[candidates[~last]] = DROP_FLAGS.index(DUPLICATE_TS) + 1
        candidates, ts = candidates[last], ts[last]

    if identity:
        frame = frame_from_arrays(ts, parsed.values)
    elif candidates.size:
        frame = frame_from_arrays(ts, {k: a[candidates] for k, a in parsed.values.items()})
    else:
        frame = empty_frame()

    drop_counts = np.bincount(code, minlength=len(DROP_FLAGS) + 1)
    flags = dict.fromkeys(FLAGS, 0)
    flags.update({f: int(drop_counts[i + 1]) for i, f in enumerate(DROP_FLAGS)})
    flags[MISSING_COLUMN] = parsed.missing_columns
    flags[DTYPE_CAST] = parsed.cast_columns
    flags[TS_CAST] = int(np.count_nonzero(cast))
    flags[TS_TIMEZONE_NORMALIZED] = int(np.count_nonzero(tz))
    if ts.size > 1:
        flags[GAP] = int((ts[-1] - ts[0]) // interval_s + 1 - ts.size)

    if bounds is not None and misplaced.any():
        rows = np.flatnonzero(misplaced)
        seconds = seconds.copy()
        seconds[rows] = _stand_in_slots(ts, bounds[rows], interval_s, origin_s)
    dropped_rows = np.flatnonzero((code != 0) & listable)
    dropped = _flag_frame(seconds[dropped_rows], _DROP_NAMES[code[dropped_rows]])
    if flags[TS_CAST] or flags[TS_TIMEZONE_NORMALIZED]:
        which = np.repeat(
            np.arange(2, dtype=np.int8), [flags[TS_CAST], flags[TS_TIMEZONE_NORMALIZED]]
        )
        corrected = _flag_frame(
            np.concatenate([seconds[cast], seconds[tz]]), _CORRECTION_NAMES[which]
        )
    else:
        corrected = _empty_flag_frame()
    return Conformed(frame, flags, dropped, corrected)
