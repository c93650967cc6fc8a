"""Per-partition coverage of a node over its whole history, from two store queries.

The hot store computes the node's islands of stored bars in SQL (`coverage`) and returns
the confirmed-empty windows of its gap ledger (`ledger_gaps`); both are short lists of
ranges however long the history. Bars per partition then come from prefix sums over
those ranges (numpy, no per-partition query and no per-bar data in Python).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.definitions.partitions.context import partition_loading_context

from seamless_assets.core.coverage import merge_ranges, subtract_ranges
from seamless_assets.core.frame import Range
from seamless_assets.core.provenance import TRADES, source_flag
from seamless_assets.core.stabilization import stable_end
from seamless_assets.nodes import NodeId

if TYPE_CHECKING:  # numpy and the stores (pandas, pyarrow, pandera) load on a tick
    import numpy as np

    from resources.artifacts.base import ArtifactStore
    from resources.hot_store.base import HotStore

TRADES_FLAG = source_flag(TRADES)
_I64 = "int64"  # a dtype name: numpy loads with the first function that needs it
_HEAD_NAME = re.compile(
    r"^(?P<start>-?[0-9]+)-(?P<end>-?[0-9]+)\.json$"
)  # heads/{start}-{end}.json


def _grid_index(values: np.ndarray, interval_s: int, origin_s: int) -> np.ndarray:
    """How many grid points `origin + k·interval` lie below each value (ceil division)."""
    return -((origin_s - values) // interval_s)


def bars_before(
    ranges: Sequence[Range], points: np.ndarray, interval_s: int, origin_s: int = 0
) -> np.ndarray:
    """For each point t: bar open times inside the (sorted, disjoint) ranges with ts < t."""
    import numpy as np

    points = np.asarray(points, dtype=_I64)
    if not ranges:
        return np.zeros(len(points), dtype=_I64)
    starts = np.array([r.start for r in ranges], dtype=_I64)
    ends = np.array([r.end for r in ranges], dtype=_I64)
    first = _grid_index(starts, interval_s, origin_s)
    sizes = np.maximum(_grid_index(ends, interval_s, origin_s) - first, 0)
    before = np.concatenate([[0], np.cumsum(sizes)])  # bars in ranges[:k]
    k = np.searchsorted(starts, points, side="right") - 1  # last range starting <= t
    inside = np.where(k >= 0, k, 0)
    partial = np.clip(_grid_index(points, interval_s, origin_s) - first[inside], 0, sizes[inside])
    return np.where(k >= 0, before[inside] + partial, 0)


@dataclass(frozen=True)
class PartitionCoverage:
    """Stored vs expected bars of one closed partition; confirmed-empty bars excluded."""

    key: str
    window: Range
    expected_bars: int  # bars on the grid minus bars the ledger confirms empty
    stored_bars: int
    empty_bars: int
    published: bool
    stable: bool
    trades_bars: int = 0  # stored bars rebuilt from trades (provenance `trades`)

    @property
    def ratio(self) -> float:
        return 1.0 if self.expected_bars <= 0 else min(1.0, self.stored_bars / self.expected_bars)


@dataclass(frozen=True)
class HistorySpan:
    """The closed partitions a scan looks at: history start up to the newest closed one."""

    keys: tuple[str, ...]
    windows: tuple[Range, ...]

    @property
    def window(self) -> Range | None:
        return Range(self.windows[0].start, self.windows[-1].end) if self.windows else None


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def closed_partitions(
    partitions_def: dg.TimeWindowPartitionsDefinition,
    now_s: float,
    *,
    not_before_s: float | None = None,
) -> HistorySpan:
    """Every partition whose window has ended at `now_s`, optionally from `not_before_s`."""
    with partition_loading_context(effective_dt=datetime.fromtimestamp(now_s, tz=UTC)):
        last = partitions_def.get_last_partition_window()
        first = partitions_def.get_first_partition_window()
    if last is None or first is None:
        return HistorySpan((), ())
    start = first.start
    if not_before_s is not None and not_before_s > _epoch(first.start):
        key = partitions_def.get_partition_key_for_timestamp(not_before_s)
        start = partitions_def.time_window_for_partition_key(key).start
    windows = partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(start, last.end))
    keys = tuple(windows)
    ranges = tuple(
        Range(_epoch(w.start), _epoch(w.end))
        for w in (partitions_def.time_window_for_partition_key(k) for k in keys)
    )
    return HistorySpan(keys, ranges)


def scan_coverage(
    node: NodeId,
    span: HistorySpan,
    hot: HotStore,
    published: frozenset[Range],
    now_s: float,
    stabilization_bars: int,
    *,
    history_start_s: int | None = None,
) -> list[PartitionCoverage]:
    """Coverage of every partition in `span`: three store queries (islands, the gap ledger,
    the bars-from-trades events), then array arithmetic.

    Bars before `history_start_s` (the node's first bar on the exchange) are not expected:
    they count like confirmed-empty ones."""
    import numpy as np

    window = span.window
    if window is None:
        return []
    interval, origin = node.interval_s, node.timeframe.origin_s
    stored = merge_ranges(hot.coverage(str(node), interval, window))
    ledger = [g.range for g in hot.ledger_gaps(str(node), window)]
    if history_start_s is not None and history_start_s > window.start:
        ledger.append(Range(window.start, history_start_s))
    empty = subtract_ranges(merge_ranges(ledger), stored)
    from_trades = [e for e in hot.flag_events(str(node), window) if e.flag == TRADES_FLAG]
    starts = np.array([w.start for w in span.windows], dtype=_I64)
    ends = np.array([w.end for w in span.windows], dtype=_I64)
    grid = _grid_index(ends, interval, origin) - _grid_index(starts, interval, origin)
    stored_bars = bars_before(stored, ends, interval, origin) - bars_before(
        stored, starts, interval, origin
    )
    empty_bars = bars_before(empty, ends, interval, origin) - bars_before(
        empty, starts, interval, origin
    )
    # A partition is stable once its last bar is (the bar grid may overrun an unaligned end).
    last_bar_end = _grid_index(ends, interval, origin) * interval + origin
    stable = last_bar_end <= stable_end(int(now_s), interval, stabilization_bars, origin_s=origin)
    trades_bars = np.zeros(len(starts), dtype=_I64)
    if from_trades:
        where = np.searchsorted(starts, [e.ts for e in from_trades], side="right") - 1
        np.add.at(trades_bars, where, [e.count for e in from_trades])
    return [
        PartitionCoverage(
            key=key,
            window=w,
            expected_bars=int(grid[i] - empty_bars[i]),
            stored_bars=int(stored_bars[i]),
            empty_bars=int(empty_bars[i]),
            published=w in published,
            stable=bool(stable[i]),
            trades_bars=int(trades_bars[i]),
        )
        for i, (key, w) in enumerate(zip(span.keys, span.windows, strict=True))
    ]


def below_threshold(
    coverage: Sequence[PartitionCoverage], threshold: float
) -> list[PartitionCoverage]:
    """Partitions with bars to expect (not all confirmed empty) stored below `threshold`."""
    return [p for p in coverage if p.expected_bars > 0 and p.ratio < threshold]


def published_partitions(store: ArtifactStore, node: NodeId) -> frozenset[Range]:
    """Partitions with a head pointer: one listing of key names, no object reads."""
    prefix = f"{store.segment_prefix(node)}/heads/"
    out = set()
    for key in store.blobs.list(prefix):
        match = _HEAD_NAME.match(key[len(prefix) :])
        if match is not None:
            out.add(Range(int(match["start"]), int(match["end"])))
    return frozenset(out)
