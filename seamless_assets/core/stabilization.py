"""When bars are closed and when they are stable enough to enter an immutable artifact.

A bar opening at `ts` is *closed* once `ts + interval_s <= now` (exchange clock). It is
*stable* once `stabilization_bars` further bars have closed after it, which leaves room
for the exchange's late revisions before the bar is sealed into a fingerprinted segment.
All boundaries are exclusive ends on the bar grid `origin_s + k * interval_s` (origin 0
for every timeframe but `1w`, whose bars open on Mondays): "bars with `ts < end`".
"""

from __future__ import annotations

from .coverage import align_range
from .frame import Range


def _check(interval_s: int, stabilization_bars: int = 0) -> None:
    if interval_s <= 0:
        raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
    if stabilization_bars < 0:
        raise ValueError(f"stabilization_bars must be >= 0, got {stabilization_bars!r}")


def closed_end(now_s: int, interval_s: int, *, origin_s: int = 0) -> int:
    """Bars with `ts < closed_end(...)` are closed: `ts + interval_s <= now_s`.

    That is `now_s` rounded down to the grid: the open time of the bar forming at `now_s`.
    """
    _check(interval_s)
    return (now_s - origin_s) // interval_s * interval_s + origin_s


def stable_end(now_s: int, interval_s: int, stabilization_bars: int, *, origin_s: int = 0) -> int:
    """Bars with `ts < stable_end(...)` are closed and `stabilization_bars` more have closed."""
    _check(interval_s, stabilization_bars)
    return closed_end(now_s, interval_s, origin_s=origin_s) - stabilization_bars * interval_s


def is_window_stable(
    window: Range, now_s: int, interval_s: int, stabilization_bars: int, *, origin_s: int = 0
) -> bool:
    """True when every bar opening inside `window` is stable at `now_s`."""
    bars = align_range(window, interval_s, origin_s=origin_s)
    return bars.end <= stable_end(now_s, interval_s, stabilization_bars, origin_s=origin_s)


def as_of_for(
    window: Range, now_s: int, interval_s: int, stabilization_bars: int, *, origin_s: int = 0
) -> int | None:
    """Close time (epoch s) of the last stable bar opening inside `window`, or None.

    This is the data watermark `as_of` of the window's stabilized part.
    """
    bars = align_range(window, interval_s, origin_s=origin_s)
    end = min(bars.end, stable_end(now_s, interval_s, stabilization_bars, origin_s=origin_s))
    return end if end > bars.start else None
