"""Funding-rate events of a perpetual (`funding:{exchange}:{contract}`): canonical frame,
conformance, coverage and fingerprint.

A funding frame holds one row per funding event: `ts` (int64, the funding time in epoch
*milliseconds* exactly as the exchange states it: Binance's carry a few ms of jitter, e.g.
1569888000002, and rounding would make a stored value the exchange never gave),
`funding_rate` (float64) and `mark_price` (float64, NaN when the exchange gives none).

`conform_funding` never drops a row silently: each removed row carries exactly one drop
flag, in the precedence `invalid_timestamp` (unreadable, or outside the requested window)
> `dtype_mismatch` (a rate or mark price that is not a number) > `non_finite` (no finite
rate, or an infinite mark price) > `non_positive_price` (mark price <= 0) >
`duplicate_ts` (of rows sharing a ts the last valid one is kept, as for OHLCV bars: a
later answer is the newer version). `dtype_cast` counts *kept rows* (not columns, unlike
OHLCV) whose timestamp or rate came as a string (or a float ts) and was cast; the mark
price is not counted: ccxt passes it through from the raw `info`, where it is a string
by protocol. Rows dropped as `invalid_timestamp` are listed at the window's start.

Coverage: funding events lie on no grid known in advance (8h, then 4h, then 1h over a
contract's life), so coverage is the *answered* windows (time ranges the exchange's
answers are known complete for), not counted slots; `interval_anomalies` then checks the
events inside them for a funding that should have been.

Row reading, `ConformedEvents` and `table_fingerprint` are `core.event_rows`, shared
with `core.trade_rows` (the other exchange-event table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from .coverage import intersect_ranges, merge_ranges, subtract_ranges
from .event_rows import (
    ConformedEvents,
    account,
    empty_table,
    integer_column,
    number_column,
    records,
    table_fingerprint,
    table_schema,
    validate_table,
    window_ms,
)
from .flags import (
    DTYPE_CAST,
    DTYPE_MISMATCH,
    DUPLICATE_TS,
    INVALID_TIMESTAMP,
    NON_FINITE,
    NON_POSITIVE_PRICE,
)
from .frame import TS, Range

FUNDING_COLUMNS: tuple[str, ...] = (TS, "funding_rate", "mark_price")
FUNDING_DTYPES: dict[str, str] = {TS: "int64", "funding_rate": "float64", "mark_price": "float64"}
FUNDING_DROP_FLAGS: tuple[str, ...] = (
    INVALID_TIMESTAMP,
    DTYPE_MISMATCH,
    NON_FINITE,
    NON_POSITIVE_PRICE,
    DUPLICATE_TS,
)
FUNDING_FLAGS: tuple[str, ...] = (*FUNDING_DROP_FLAGS, DTYPE_CAST)
JITTER_TOLERANCE_S = 60
_HOUR_MS = 3_600_000


def empty_funding_frame() -> pd.DataFrame:
    """A canonical funding frame with no rows."""
    return empty_table(FUNDING_DTYPES)


def funding_schema() -> pa.DataFrameSchema:
    """The pandera contract of a canonical funding frame."""
    return table_schema(
        "canonical_funding",
        {
            TS: pa.Column(np.int64, pa.Check.ge(0), unique=True),
            "funding_rate": pa.Column(np.float64, pa.Check(np.isfinite, name="finite")),
            "mark_price": pa.Column(
                np.float64,
                pa.Check(lambda s: np.isfinite(s) & (s > 0), name="finite_positive"),
                nullable=True,  # NaN: the exchange gave no mark price
            ),
        },
        pa.Check(lambda df: df[TS].is_monotonic_increasing, name="ts_sorted"),
    )


def validate_funding(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` if it is a canonical funding frame, else `CanonicalFrameError`."""
    return validate_table(frame, funding_schema())


ConformedFunding = ConformedEvents


def conform_funding(rows: Sequence[Mapping[str, Any]], window: Range) -> ConformedFunding:
    """Conform ccxt `fetch_funding_rate_history` rows (`timestamp` in ms, `fundingRate`,
    `info.markPrice` possibly "") requested for `window` to the canonical funding frame."""
    items = records(rows)
    n = len(items)
    infos = [r.get("info") for r in items]
    ts = integer_column([r.get("timestamp") for r in items])
    rate = number_column([r.get("fundingRate") for r in items])
    mark = number_column([i.get("markPrice") if isinstance(i, Mapping) else None for i in infos])
    inside = window_ms(ts, window)

    code = np.zeros(n, dtype=np.int8)  # lowest precedence first: the highest one wins
    code[mark.values <= 0] = FUNDING_DROP_FLAGS.index(NON_POSITIVE_PRICE) + 1
    code[~np.isfinite(rate.values) | np.isinf(mark.values)] = (
        FUNDING_DROP_FLAGS.index(NON_FINITE) + 1
    )
    code[rate.mismatch | mark.mismatch] = FUNDING_DROP_FLAGS.index(DTYPE_MISMATCH) + 1
    code[~inside] = FUNDING_DROP_FLAGS.index(INVALID_TIMESTAMP) + 1

    kept = np.flatnonzero(code == 0)
    kept = kept[np.argsort(ts.values[kept], kind="stable")]
    last = np.ones(kept.size, dtype=bool)  # of rows sharing a ts, the last valid one
    last[:-1] = ts.values[kept][1:] != ts.values[kept][:-1]
    code[kept[~last]] = FUNDING_DROP_FLAGS.index(DUPLICATE_TS) + 1
    kept = kept[last]
    frame = pd.DataFrame(
        {TS: ts.values[kept], "funding_rate": rate.values[kept], "mark_price": mark.values[kept]},
        columns=list(FUNDING_COLUMNS),
    )
    listed = np.where(inside, ts.values, window.start * 1000)
    return account(items, code, FUNDING_DROP_FLAGS, listed, ts.cast | rate.cast, frame)


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class FundingCoverage:
    """How much of a window the exchange's answers cover (seconds, not slots)."""

    window: Range
    covered: list[Range]
    missing: list[Range]
    ratio: float


def funding_coverage(answered: Sequence[Range], window: Range) -> FundingCoverage:
    """`covered`: the answered parts of `window`; `missing`: the rest; `ratio`: covered
    seconds / window seconds (1.0 for an empty window)."""
    covered = intersect_ranges(answered, window)
    missing = subtract_ranges([window], answered)
    seconds = sum(r.duration_s for r in covered)
    ratio = seconds / window.duration_s if window.duration_s else 1.0
    return FundingCoverage(window, covered, missing, ratio)


def interval_anomalies(
    ts_ms: np.ndarray | Sequence[int],
    answered: Sequence[Range],
    *,
    max_interval_s: int = 8 * 3600,
    tolerance_s: int = JITTER_TOLERANCE_S,
) -> list[Range]:
    """Spans inside `answered` windows (all their events known) holding no funding where
    one should have been: from one event (or a window's edge) to the next, floored to
    seconds. A span is anomalous when it is longer than `max_interval_s` (the longest
    interval the contract may have) or, between two events, longer than both neighbouring
    intervals (also between events inside the window): that finds a missing funding in
    any regime (8h, 4h, 1h) while a change of interval (8,8,4,4) is never anomalous.
    `tolerance_s` absorbs the exchange's timestamp jitter.

    Sound: an edge span is a lower bound on its true interval (the funding before the
    window is unknown), so it is only held against `max_interval_s`, and a regime change
    within one interval of a window's edge is never flagged. Limitation: two missing
    fundings one event apart in a regime shorter than `max_interval_s` (4,8,8,4) read as a
    brief longer regime.
    """
    ts = np.unique(np.asarray(ts_ms, dtype=np.int64))
    tol = tolerance_s * 1000
    spans: list[Range] = []
    for piece in merge_ranges(answered):
        lo, hi = piece.start * 1000, piece.end * 1000
        bounds = np.concatenate(([lo], ts[(ts >= lo) & (ts < hi)], [hi]))
        length = np.diff(bounds)  # [0] and [-1] touch the edges: lower bounds only
        bad = length > max_interval_s * 1000 + tol
        if length.size >= 5:  # the inner spans with an inner span on both sides
            neighbours = np.maximum(length[1:-3], length[3:-1])
            bad[2:-2] |= length[2:-2] > neighbours + tol
        spans += [
            Range(int(bounds[i] // 1000), int(bounds[i + 1] // 1000)) for i in np.flatnonzero(bad)
        ]
    return spans


def inferred_intervals(ts_ms: np.ndarray | Sequence[int]) -> list[tuple[Range, int]]:
    """Runs of a constant funding interval (seconds, rounded to the hour), each as the
    range from its first to its last event (floored to seconds; runs share the event
    between them): "8h until 2023-…, then 4h". A single longer interval that is a
    multiple of the equal intervals on both sides (a missing funding) joins them."""
    ts = np.unique(np.asarray(ts_ms, dtype=np.int64))
    if ts.size < 2:
        return []
    gaps = np.rint(np.diff(ts) / _HOUR_MS).astype(np.int64) * 3600
    change = np.flatnonzero(gaps[1:] != gaps[:-1]) + 1
    starts, ends = np.r_[0, change].tolist(), np.r_[change, gaps.size].tolist()
    runs = [[s, e, int(gaps[s])] for s, e in zip(starts, ends, strict=True)]
    i = 1
    while i < len(runs) - 1:
        (s0, _, before), (s1, e1, interval), (_, e2, after) = runs[i - 1 : i + 2]
        if e1 - s1 == 1 and before == after > 0 and interval % before == 0:
            runs[i - 1 : i + 2] = [[s0, e2, before]]
        else:
            i += 1
    return [(Range(int(ts[s] // 1000), int(ts[e] // 1000)), v) for s, e, v in runs]


def funding_fingerprint(frame: pd.DataFrame, identity: Mapping[str, Any]) -> str:
    """Fingerprint of a canonical funding frame under `identity` (node id, range, version)."""
    return table_fingerprint(frame, FUNDING_COLUMNS, FUNDING_DTYPES, identity)
