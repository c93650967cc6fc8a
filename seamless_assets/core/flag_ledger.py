"""The conformance-event ledger: what conformance reported about which bar, persisted.

A segment's flag counts must not depend on which run happened to fetch its rows (a rerun
after a crash fetches nothing for bars already stored). So every row-level finding of
`conform` is recorded in the hot store as a `FlagEvent` `(ts, flag, count)`, next to the
gap ledger, and manifests count flags from these events. A row flag's count is 1 per bar
it concerns (a row flag counts bars, not repeats of a bad row: those depend on how a run
split its requests); a column flag's count is the number of columns. Events are keyed by
`(node_id, ts, flag)`: recording the same fetch twice changes nothing, and a refetch of a
window replaces that window's events (`HotStore.replace_flag_events`).

Column-level flags (`missing_column`, `dtype_cast`) describe a payload, not a row; they are
recorded once per partition the payload touched, at the partition's start (the same
attribution `Conformed.flags_within` uses).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .conformance import COLUMN_FLAGS, GAP, Conformed
from .frame import TS, Range


@dataclass(frozen=True, order=True)
class FlagEvent:
    """`count` findings of `flag` about the bar opening at `ts` (epoch seconds)."""

    ts: int
    flag: str
    count: int = 1

    def to_json(self) -> list[int | str]:
        return [self.ts, self.flag, self.count]

    @classmethod
    def from_json(cls, item: Sequence[object]) -> FlagEvent:
        ts, flag, count = item
        if not isinstance(ts, int) or not isinstance(flag, str) or not isinstance(count, int):
            raise ValueError(f"a flag event is [ts:int, flag:str, count:int], got {item!r}")
        return cls(ts, flag, count)


def merge_events(events: Iterable[FlagEvent]) -> list[FlagEvent]:
    """One event per `(ts, flag)` with the counts summed, sorted; zero counts dropped."""
    totals: dict[tuple[int, str], int] = {}
    for event in events:
        key = (int(event.ts), str(event.flag))
        totals[key] = totals.get(key, 0) + int(event.count)
    return [FlagEvent(ts, flag, n) for (ts, flag), n in sorted(totals.items()) if n]


def events_in(events: Iterable[FlagEvent], window: Range) -> list[FlagEvent]:
    """Events about bars opening inside `window`, sorted."""
    return sorted(e for e in events if window.start <= e.ts < window.end)


def flag_counts(events: Iterable[FlagEvent], flags: Iterable[str]) -> dict[str, int]:
    """Per-flag totals over `flags` (every key present, 0 when no event names it)."""
    counts = dict.fromkeys(flags, 0)
    for event in events:
        counts[event.flag] = counts.get(event.flag, 0) + event.count
    return counts


def _table_events(table: pd.DataFrame) -> list[FlagEvent]:
    """One event per distinct `(ts, flag)`: a row flag counts the bars it concerns, not
    how many times the exchange sent a bad row for them (a row a page repeats, or a bad
    row two requests of one run both received), which depends on how a run split its
    requests and would make manifests depend on run history."""
    if table.empty:
        return []
    pairs = set(zip(table[TS].tolist(), table["flag"].tolist(), strict=True))
    return sorted(FlagEvent(int(ts), str(flag)) for ts, flag in pairs)


def conformance_events(
    conformed: Conformed, windows: Sequence[Range], partitions: Sequence[Range]
) -> list[FlagEvent]:
    """The events of one `conform` call that concern bars inside `windows` (the fetched,
    closed ranges), row flags at their bar and column flags at the start of each of
    `partitions` holding a kept or flagged row of the payload. `gap` is not an event: it
    is derived from the stored bars and the gap ledger (`core.manifest`)."""
    rows = pd.concat([conformed.dropped, conformed.corrected], ignore_index=True)
    ts = rows[TS].to_numpy(dtype=np.int64)
    inside = _inside(ts, windows)
    events = [e for e in _table_events(rows[inside]) if e.flag != GAP]
    column_flags = {f: conformed.flags.get(f, 0) for f in COLUMN_FLAGS}
    if any(column_flags.values()):
        kept = conformed.frame[TS].to_numpy(dtype=np.int64)
        touched = np.concatenate([ts[inside], kept[_inside(kept, windows)]])
        for part in partitions:
            if bool(np.any((touched >= part.start) & (touched < part.end))):
                events += [FlagEvent(part.start, f, n) for f, n in column_flags.items() if n]
    return merge_events(events)


def _inside(ts: np.ndarray, windows: Sequence[Range]) -> np.ndarray:
    mask = np.zeros(ts.size, dtype=bool)
    for window in windows:
        mask |= (ts >= window.start) & (ts < window.end)
    return mask
