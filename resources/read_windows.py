"""Partition math of the read path: which partitions a window touches, their Dagster keys,
where the closed bars end. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from seamless_assets.config import SeamlessConfig
from seamless_assets.core.frame import Range
from seamless_assets.core.stabilization import closed_end
from seamless_assets.nodes import NodeId
from seamless_assets.partitions import partition_keys_for, timeframe_class_name, timeframe_classes


def closed_end_at(node: NodeId, now_s: float) -> int:
    """Bars of `node` opening before this are closed at `now_s`."""
    return closed_end(int(now_s), node.interval_s, origin_s=node.timeframe.origin_s)


def partition_windows(config: SeamlessConfig, node: NodeId, window: Range) -> list[Range]:
    """The partitions (their `[start, end)`) of the node overlapping `window`, including
    ones Dagster does not list yet (the partition forming now)."""
    if timeframe_class_name(node.timeframe) == "intraday":
        day = 86_400
        first = window.start // day * day
        return [Range(s, s + day) for s in range(first, max(window.end, first + 1), day)]
    out = []
    moment = datetime.fromtimestamp(window.start, tz=UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    while True:
        following = (
            moment.replace(year=moment.year + 1, month=1)
            if moment.month == 12
            else moment.replace(month=moment.month + 1)
        )
        out.append(Range(int(moment.timestamp()), int(following.timestamp())))
        if following.timestamp() >= window.end:
            return out
        moment = following


def partition_keys(config: SeamlessConfig, node: NodeId, ranges: Sequence[Range]) -> list[str]:
    """Dagster partition keys of the node's asset overlapping `ranges`, in time order."""
    partitions_def = timeframe_classes(config.seamless.partitions)[
        timeframe_class_name(node.timeframe)
    ].partitions_def
    keys: dict[str, None] = {}
    for r in ranges:
        start = datetime.fromtimestamp(r.start, tz=UTC)
        end = datetime.fromtimestamp(r.end, tz=UTC)
        keys.update(dict.fromkeys(partition_keys_for(partitions_def, start, end)))
    return list(keys)


def clip(ranges: Sequence[Range], start: int, end: int) -> list[Range]:
    """The parts of `ranges` inside `[start, end)`."""
    if end <= start:
        return []
    bound = Range(start, end)
    return [c for r in ranges if (c := r.intersect(bound))]
