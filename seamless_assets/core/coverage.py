"""Coverage and gap math over half-open ranges of epoch seconds (pure, vectorized).

Bar membership rule, used everywhere in this module: a bar belongs to a range when its
*open time* lies in the range. A range therefore "holds" the aligned open times
`t ≡ origin_s (mod interval_s)` with `start <= t < end`; aligning a range (`align_range`)
maps it to exactly those bars, `[first_open, last_open + interval_s)`.

The bar grid is `origin_s + k * interval_s`. `origin_s` is 0 (epoch-aligned) for every
timeframe but `1w`, whose bars open on Mondays (`Timeframe.origin_s`); rounding a time
`t` down to the grid is `(t - origin_s) // interval_s * interval_s + origin_s`.

Ranges are processed as int64 numpy arrays of starts and ends; only the final list of
`Range` values is built in Python (one object per resulting range, not per bar).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .frame import Range

if TYPE_CHECKING:
    import numpy as np

REASON_BEFORE_LISTING = "before_listing"
"""The window precedes the first bar the exchange has ever produced for the market."""
REASON_NO_BARS = "exchange_returned_no_bars"
"""The exchange was asked for a closed window and returned no bar (maintenance, no trades)."""
GAP_REASONS: tuple[str, ...] = (REASON_BEFORE_LISTING, REASON_NO_BARS)


@dataclass(frozen=True, order=True)
class LedgerGap:
    """A window the exchange confirmed empty (maintenance, no trades, before listing)."""

    range: Range
    reason: str


_I64 = "int64"  # a dtype name: numpy loads with the first function that needs it


def _check_interval(interval_s: int) -> None:
    if int(interval_s) <= 0:
        raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")


def _arrays(ranges: Iterable[Range]) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    items = list(ranges)
    starts = np.fromiter((r.start for r in items), dtype=_I64, count=len(items))
    ends = np.fromiter((r.end for r in items), dtype=_I64, count=len(items))
    return starts, ends


def _to_ranges(starts: np.ndarray, ends: np.ndarray) -> list[Range]:
    return [Range(s, e) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def _ceil_to(values: np.ndarray, interval_s: int, origin_s: int = 0) -> np.ndarray:
    """Round up to the grid `origin_s + k * interval_s`."""
    return -(-(values - origin_s) // interval_s) * interval_s + origin_s


def _merge_arrays(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, coalesced (overlapping or touching) non-empty ranges as arrays."""
    import numpy as np

    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    # A new island begins where a start lies beyond everything reached so far.
    new = np.empty(starts.size, dtype=bool)
    new[0] = True
    new[1:] = starts[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, starts.size - 1)
    return starts[first], reach[last]


def _subtract_arrays(
    a_starts: np.ndarray, a_ends: np.ndarray, b_starts: np.ndarray, b_ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A minus B for merged (sorted, disjoint, non-touching) arrays."""
    import numpy as np

    if a_starts.size == 0 or b_starts.size == 0:
        return a_starts, a_ends
    # Elementary segments between every boundary; keep those inside A and outside B.
    points = np.unique(np.concatenate([a_starts, a_ends, b_starts, b_ends]))
    seg_start, seg_end = points[:-1], points[1:]

    def inside(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(starts, seg_start, side="right") - 1
        ok = idx >= 0
        result = np.zeros(seg_start.size, dtype=bool)
        result[ok] = seg_start[ok] < ends[idx[ok]]
        return result

    keep = inside(a_starts, a_ends) & ~inside(b_starts, b_ends)
    return _merge_arrays(seg_start[keep], seg_end[keep])


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted ranges with overlapping *and* touching ones coalesced; empty ranges vanish."""
    return _to_ranges(*_merge_arrays(*_arrays(ranges)))


def subtract_ranges(ranges: Iterable[Range], minus: Iterable[Range]) -> list[Range]:
    """The parts of `ranges` not in `minus`, merged and sorted."""
    return _to_ranges(
        *_subtract_arrays(*_merge_arrays(*_arrays(ranges)), *_merge_arrays(*_arrays(minus)))
    )


def intersect_ranges(ranges: Iterable[Range], window: Range) -> list[Range]:
    """The parts of `ranges` inside `window`, merged and sorted."""
    import numpy as np

    starts, ends = _merge_arrays(*_arrays(ranges))
    starts, ends = np.maximum(starts, window.start), np.minimum(ends, window.end)
    keep = ends > starts
    return _to_ranges(starts[keep], ends[keep])


def align_range(window: Range, interval_s: int, *, origin_s: int = 0) -> Range:
    """The bars of `window`: `[ceil(start), ceil(end))` on the grid `origin_s + k*interval_s`.

    A bar belongs to the window when its open time `t` satisfies `start <= t < end`, so
    the first bar opens at `start` rounded up and the range ends at `end` rounded up (the
    close of the last such bar, which may lie past `window.end` when `end` is unaligned).
    An aligned window maps to itself; a window holding no bar open time maps to an empty
    range.
    """
    _check_interval(interval_s)
    start = -(-(window.start - origin_s) // interval_s) * interval_s + origin_s
    end = -(-(window.end - origin_s) // interval_s) * interval_s + origin_s
    return Range(start, end)


def missing_ranges(
    covered: Iterable[Range],
    window: Range,
    interval_s: int,
    known_gaps: Iterable[Range] = (),
    *,
    origin_s: int = 0,
) -> list[Range]:
    """Aligned sub-ranges of `window` whose bars are neither covered nor known gaps.

    Every range and the window are first aligned by the bar membership rule, so the result
    always starts and ends on the interval grid: a partially covered bar does not exist.
    """
    import numpy as np

    _check_interval(interval_s)
    target = align_range(window, interval_s, origin_s=origin_s)
    if target.empty:
        return []
    c_starts, c_ends = _arrays([*covered, *known_gaps])
    done = _merge_arrays(
        _ceil_to(c_starts, interval_s, origin_s), _ceil_to(c_ends, interval_s, origin_s)
    )
    target_arrays = (np.array([target.start], _I64), np.array([target.end], _I64))
    return _to_ranges(*_subtract_arrays(*target_arrays, *done))


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """`values` sorted without repeats: the array itself when it is already (the usual
    bars, checked in one pass), else `np.unique`'s."""
    import numpy as np

    if values.size > 1 and not bool(np.all(values[1:] > values[:-1])):
        return np.unique(values)
    return values


def ranges_from_timestamps(ts: np.ndarray, interval_s: int) -> list[Range]:
    """Islands of consecutive bars: each is `[first_ts, last_ts + interval_s)`.

    `ts` are bar open times in seconds; order and duplicates do not matter.
    """
    import numpy as np

    _check_interval(interval_s)
    values = sorted_unique(np.asarray(ts, dtype=_I64))
    if values.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(values) > interval_s)
    starts = values[np.concatenate(([0], breaks + 1))]
    ends = values[np.concatenate((breaks, [values.size - 1]))] + interval_s
    return _to_ranges(starts, ends)


def _bar_count_arrays(
    starts: np.ndarray, ends: np.ndarray, interval_s: int, origin_s: int = 0
) -> int:
    import numpy as np

    starts, ends = _merge_arrays(starts, ends)
    first, stop = _ceil_to(starts, interval_s, origin_s), _ceil_to(ends, interval_s, origin_s)
    return int(np.sum((stop - first) // interval_s))


def bar_count(ranges: Iterable[Range], interval_s: int, *, origin_s: int = 0) -> int:
    """Number of distinct bar open times held by the union of `ranges`."""
    _check_interval(interval_s)
    return _bar_count_arrays(*_arrays(ranges), interval_s, origin_s)


def _bars_in_window(
    ranges: Iterable[Range], window: Range, interval_s: int, origin_s: int = 0
) -> int:
    import numpy as np

    starts, ends = _arrays(ranges)
    starts, ends = np.maximum(starts, window.start), np.minimum(ends, window.end)
    return _bar_count_arrays(starts, ends, interval_s, origin_s)


def coverage_ratio(
    covered: Iterable[Range], window: Range, interval_s: int, *, origin_s: int = 0
) -> float:
    """Bars present in `window` / bars expected in `window` (1.0 for a window of no bars)."""
    _check_interval(interval_s)
    expected = window.bars(interval_s, origin_s=origin_s)
    if expected == 0:
        return 1.0
    return _bars_in_window(covered, window, interval_s, origin_s) / expected


def completeness_ratio(
    covered: Iterable[Range],
    known_gaps: Iterable[Range],
    window: Range,
    interval_s: int,
    *,
    origin_s: int = 0,
) -> float:
    """(Bars present + bars confirmed empty) / bars expected in `window`; 1.0 if none."""
    _check_interval(interval_s)
    expected = window.bars(interval_s, origin_s=origin_s)
    if expected == 0:
        return 1.0
    return _bars_in_window([*covered, *known_gaps], window, interval_s, origin_s) / expected


def split_by_windows(ts: np.ndarray, windows: Sequence[Range]) -> list[slice]:
    """Row slices of a sorted `ts` array falling in each window (`start <= ts < end`)."""
    import numpy as np

    values = np.asarray(ts, dtype=_I64)
    starts, ends = _arrays(windows)
    lo = np.searchsorted(values, starts, side="left").tolist()
    hi = np.searchsorted(values, ends, side="left").tolist()
    return [slice(a, b) for a, b in zip(lo, hi, strict=True)]


def unsettled_answers(answers: Iterable[Range], misplaced_ts: np.ndarray) -> list[Range]:
    """The answered windows holding a row conformance could not place (`invalid_timestamp`).

    `answers` are the windows of the exchange's responses (each response answers for the
    bars of its window); `misplaced_ts` are where those rows were listed: their own open
    time when it lay in the window (off the grid), else the start of their window.
    """
    import numpy as np

    points = np.sort(np.asarray(misplaced_ts, dtype=_I64))
    starts, ends = _arrays(answers)
    hit = np.searchsorted(points, ends, "left") > np.searchsorted(points, starts, "left")
    return merge_ranges(_to_ranges(starts[hit], ends[hit]))


def classify_empty_windows(
    fetched: Range,
    bars_ts: np.ndarray,
    interval_s: int,
    dropped_ts: np.ndarray,
    earliest_known_ts: int | None,
    *,
    stable_end_s: int,
    origin_s: int = 0,
    unsettled: Iterable[Range] = (),
) -> list[LedgerGap]:
    """Windows of a fetched closed range that the exchange confirmed empty.

    `fetched` was requested and answered with bars at `bars_ts` (open times in seconds);
    `dropped_ts` are the timestamps of rows conformance removed. An aligned missing range
    inside `fetched` is confirmed empty only where all of these hold:

    * its bars open before `stable_end_s` (`core.stabilization.stable_end` by the
      exchange's clock when it answered): a fresher bar may just be late, so its window
      stays *provisional* (not ledgered, still missing, fetched again by the next run);
    * no dropped row lies in the missing range (bad data there is not an empty window);
    * it is outside `unsettled`: windows whose answer held a row with an impossible or
      unreadable open time (`unsettled_answers`). That row may have been meant for any
      empty slot of its answer, so none of them is evidence of emptiness.

    The reason is `before_listing` when no bar is known at or before the gap (neither in
    `bars_ts`, `dropped_ts` nor at `earliest_known_ts`), else `exchange_returned_no_bars`.
    """
    import numpy as np

    _check_interval(interval_s)
    bars = np.asarray(bars_ts, dtype=_I64)
    dropped = np.sort(np.asarray(dropped_ts, dtype=_I64))
    covered = ranges_from_timestamps(bars, interval_s)
    stable = Range(fetched.start, max(fetched.start, min(fetched.end, stable_end_s)))
    missing = missing_ranges(covered, stable, interval_s, origin_s=origin_s)
    if not missing:
        return []
    starts, ends = _arrays(missing)
    clean = np.searchsorted(dropped, ends, "left") <= np.searchsorted(dropped, starts, "left")
    settled = subtract_ranges(_to_ranges(starts[clean], ends[clean]), unsettled)
    evidence = [int(a.min()) for a in (bars, dropped) if a.size]
    if earliest_known_ts is not None:
        evidence.append(int(earliest_known_ts))
    first_known = min(evidence) if evidence else None
    gaps = []
    for gap in settled:
        gap = align_range(gap, interval_s, origin_s=origin_s)
        if gap.empty:
            continue
        leading = first_known is None or first_known >= gap.end
        gaps.append(LedgerGap(gap, REASON_BEFORE_LISTING if leading else REASON_NO_BARS))
    return gaps
