"""The hot store protocol: mutable OHLCV bars keyed by `(node_id, ts)` plus a gap ledger.

Every backend (embedded DuckDB, QuestDB) implements `HotStore` and passes the one contract
suite in `tests/resources/test_hot_store_contract.py`. The helpers below hold the rules
every backend shares, so backends differ only in how they talk to their database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from seamless_assets.core.coverage import LedgerGap
from seamless_assets.core.flag_ledger import FlagEvent, merge_events
from seamless_assets.core.frame import CANONICAL_COLUMNS, TS, Range, is_canonical


@runtime_checkable
class HotStore(Protocol):
    """Recent bars of every node, mutable, with coverage computed inside the store."""

    def upsert(self, node_id: str, frame: pd.DataFrame) -> int:
        """Write a canonical frame; the last write wins per `(node_id, ts)`. Returns rows."""
        ...

    def read_range(self, node_id: str, window: Range) -> pd.DataFrame:
        """The canonical frame of stored bars with `ts` in `[window.start, window.end)`."""
        ...

    def coverage(self, node_id: str, interval_s: int, window: Range | None = None) -> list[Range]:
        """Contiguous islands of stored bars, each `[first_ts, last_ts + interval_s)`.

        Bars are contiguous when their open times are exactly `interval_s` apart. With a
        window, islands are clipped to it (a bar opening before the window but closing
        inside it covers the part inside).
        """
        ...

    def bounds(self, node_id: str) -> tuple[int, int] | None:
        """`(first_ts, last_ts)`: open times of the first and last stored bar (both
        inclusive), or None when the node has no bars. The covered span is
        `Range(first_ts, last_ts + interval_s)`."""
        ...

    def record_gaps(self, node_id: str, gaps: Sequence[LedgerGap]) -> None:
        """Add confirmed-empty windows; idempotent. Same-reason entries that overlap or
        touch are merged into one."""
        ...

    def ledger_gaps(self, node_id: str, window: Range | None = None) -> list[LedgerGap]:
        """Ledger entries overlapping the window, clipped to it, sorted."""
        ...

    def clear_gaps(self, node_id: str, window: Range) -> int:
        """Remove the window from the ledger (entries inside go, entries across it are
        trimmed or split). Returns how many entries were removed or trimmed."""
        ...

    def replace_flag_events(
        self, node_id: str, windows: Sequence[Range], events: Sequence[FlagEvent]
    ) -> None:
        """Make `events` the node's conformance events inside `windows`, atomically: what
        was recorded there goes, events outside every window are ignored (a refetch of a
        window restates its events; recording the same fetch twice changes nothing)."""
        ...

    def flag_events(self, node_id: str, window: Range | None = None) -> list[FlagEvent]:
        """Conformance events about bars opening inside the window, sorted."""
        ...

    def node_ids(self) -> list[str]:
        """Every node with stored bars or ledger entries, sorted."""
        ...

    def session(self) -> AbstractContextManager[None]:
        """Hold the store's connection across the operations inside (one thread): each
        operation still commits on its own; only opening and closing are saved (for an
        embedded file, a checkpoint per operation). Nested sessions are one session."""
        ...

    def close(self) -> None:
        """Release resources; the store cannot be used afterwards."""
        ...


def validate_upsert_frame(frame: pd.DataFrame) -> None:
    """Reject a frame a store must not write: non-canonical or with duplicate `ts`."""
    if not is_canonical(frame):
        got = {str(c): str(frame[c].dtype) for c in frame.columns}
        raise ValueError(
            f"hot store writes only canonical frames with columns {list(CANONICAL_COLUMNS)} "
            f"(ts int64, the rest float64); got {got}. Conform the frame first."
        )
    ts = frame[TS].to_numpy()
    if len(ts) > 1:
        ordered = ts if bool(np.all(ts[1:] > ts[:-1])) else np.sort(ts)
        duplicated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(duplicated):
            raise ValueError(
                f"frame has {len(duplicated)} duplicate ts values (first {int(duplicated[0])}); "
                "a store keeps one bar per ts, so deduplicate (conform) the frame first"
            )


def islands_to_ranges(
    islands: Iterable[tuple[int, int]], interval_s: int, window: Range | None
) -> list[Range]:
    """`(first_ts, last_ts)` islands as half-open ranges clipped to the window."""
    out = []
    for first_ts, last_ts in islands:
        island = Range(int(first_ts), int(last_ts) + interval_s)
        clipped = island.intersect(window) if window is not None else island
        if clipped is not None:
            out.append(clipped)
    return out


def merge_gaps(gaps: Iterable[LedgerGap]) -> list[LedgerGap]:
    """Merge same-reason gaps that overlap or touch; the result is sorted."""
    by_reason: dict[str, list[Range]] = {}
    for gap in gaps:
        if not gap.range.empty:
            by_reason.setdefault(gap.reason, []).append(gap.range)
    merged: list[LedgerGap] = []
    for reason, ranges in by_reason.items():
        ranges.sort()
        start, end = ranges[0].start, ranges[0].end
        for r in ranges[1:]:
            if r.start <= end:
                end = max(end, r.end)
            else:
                merged.append(LedgerGap(Range(start, end), reason))
                start, end = r.start, r.end
        merged.append(LedgerGap(Range(start, end), reason))
    return sorted(merged)


def clip_gaps(gaps: Iterable[LedgerGap], window: Range | None) -> list[LedgerGap]:
    """Gaps overlapping the window, clipped to it, sorted."""
    out = []
    for gap in gaps:
        clipped = gap.range.intersect(window) if window is not None else gap.range
        if clipped is not None:
            out.append(LedgerGap(clipped, gap.reason))
    return sorted(out)


def subtract_window(gap: LedgerGap, window: Range) -> list[LedgerGap]:
    """What remains of a ledger entry once the window is cleared from it (0, 1 or 2)."""
    parts = [
        (gap.range.start, min(gap.range.end, window.start)),
        (max(gap.range.start, window.end), gap.range.end),
    ]
    return [LedgerGap(Range(start, end), gap.reason) for start, end in parts if start < end]


def events_to_store(windows: Sequence[Range], events: Sequence[FlagEvent]) -> list[FlagEvent]:
    """The events a `replace_flag_events` call writes: inside a window, one per
    `(ts, flag)` (counts summed), positive counts only; validated."""
    for event in events:
        if not isinstance(event, FlagEvent) or not event.flag or event.count < 0:
            raise ValueError(f"flag events need a ts, a flag and a count >= 0, got {event!r}")
    inside = [e for e in events if any(w.start <= e.ts < w.end for w in windows)]
    return merge_events(inside)
