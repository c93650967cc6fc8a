"""Reads of event nodes (`funding:`, `trades:`) under the domain rules of bar reads.

backtest, research and dryrun read the snapshot resolved at `as_of` only (required): a
window the snapshot does not cover fails with `MissingPartitions` naming the days and
what adds them, and every segment is verified against its manifest and the snapshot's
manifest digest. (Dryrun does not fill events from the exchange: an event day is
published only once wholly answered, which a read cannot wait for within its budget.)
live reads the hot store: every stored event of the window, with the answered share of it
as coverage, `partial` when some of the window is not answered yet.

The echo is the bar reads' `SeamlessFetchMetadata` with `interval_s` 0 (events lie on no
grid): `dataset_fingerprint` over the listed segments the window touches, `as_of` and the
snapshot's fingerprint, `coverage_bounds` in epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from seamless_assets.core.coverage import intersect_ranges, merge_ranges, subtract_ranges
from seamless_assets.core.fingerprint import combine_fingerprints
from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.core.read_context import (
    ComputeContext,
    ExecutionDomain,
    Instant,
    SeamlessFetchMetadata,
    Strategy,
)
from seamless_assets.errors import AsOfRequired, MissingPartitions
from seamless_assets.event_nodes import EventNodeId

from .read_metrics import record_fetch

if TYPE_CHECKING:
    from seamless_assets.config import SeamlessConfig

    from .artifacts.event_segments import EventSegmentStore
    from .hot_store.event_tables import EventStore
    from .read_runtime import ReaderRuntime


@dataclass
class EventStores:
    """The stores event reads use, opened once per reader."""

    hot: EventStore
    artifacts: EventSegmentStore

    @classmethod
    def open(cls, config: SeamlessConfig) -> EventStores:
        from seamless_assets.runtime import (
            ArtifactStoreResource,
            HotStoreResource,
            resources_from_config,
        )

        resources = resources_from_config(config)
        hot, artifacts = resources["hot_store"], resources["artifacts"]
        assert isinstance(hot, HotStoreResource) and isinstance(artifacts, ArtifactStoreResource)
        return cls(hot.open_events(), artifacts.open_events())

    def close(self) -> None:
        self.hot.close()


def fetch_events(
    rt: ReaderRuntime, node_id: str, start: Instant, end: Instant, context: ComputeContext
) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
    """`SeamlessReader.fetch` of an event node: its stores opened once per reader."""
    from seamless_assets.core.snapshot import parse_as_of

    node = rt.config.event_node(node_id)
    with rt.state_lock:
        if rt.event_stores is None:
            rt.event_stores = EventStores.open(rt.config)
        stores: EventStores = rt.event_stores
    window = Range(parse_as_of(start), parse_as_of(end))
    strategy = Strategy(context.strategy or rt.config.seamless.strategy)
    rt.note_domain(context.world_id, context.domain)
    frame, meta = read_events(stores, node, window, context, strategy)
    record_fetch(rt, meta)
    return frame, meta


def read_events(
    stores: EventStores,
    node: EventNodeId,
    window: Range,
    context: ComputeContext,
    strategy: Strategy,
) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
    """Events of `node` with time in `window` (epoch s, half-open) under `context`."""
    if context.domain is ExecutionDomain.LIVE:
        return _live(stores.hot, node, window, context, strategy)
    if context.as_of_s is None:
        raise AsOfRequired(
            f"{context.domain.value} reads immutable snapshots and needs an as_of: pass "
            "ComputeContext(as_of=...), e.g. the as_of of the node's latest snapshot"
        )
    return _snapshot(stores.artifacts, node, window, context, strategy, context.as_of_s)


def _snapshot(
    artifacts: EventSegmentStore,
    node: EventNodeId,
    window: Range,
    context: ComputeContext,
    strategy: Strategy,
    as_of_s: int,
) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
    snapshot = artifacts.resolve_snapshot(node, as_of_s)
    missing = snapshot.uncovered(window)
    if missing:
        days = [iso_utc(r.start)[:10] for r in _days(missing)]
        raise MissingPartitions(
            f"{node}: the snapshot as of {snapshot.as_of_iso} does not cover "
            f"{', '.join(str(r) for r in missing)} (days {', '.join(days[:10])}"
            f"{' …' if len(days) > 10 else ''}); materialize those partitions of "
            f"{'/'.join(node.asset_key_path())} and read at a later as_of",
            days,
            list(missing),
        )
    frame = artifacts.read_snapshot_range(node, snapshot, window)
    listed = snapshot.segments_overlapping(window)
    meta = _meta(
        node,
        window,
        context,
        strategy,
        frame,
        source="snapshot",
        fingerprint=combine_fingerprints([s.fingerprint for s in listed]) if listed else None,
        covered=intersect_ranges(list(snapshot.covered), window),
        as_of_s=snapshot.as_of_s,
        snapshot_fingerprint=snapshot.fingerprint,
    )
    return frame, meta


def _live(
    hot: EventStore,
    node: EventNodeId,
    window: Range,
    context: ComputeContext,
    strategy: Strategy,
) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
    frame = hot.read_events(node.kind, str(node), window)
    answered = hot.answered(node.kind, str(node), window)
    missing = subtract_ranges([window], answered)
    if missing and strategy is Strategy.FAIL_FAST:
        raise MissingPartitions(
            f"{node}: the hot store has no complete answer for {missing[0]}"
            f"{f' and {len(missing) - 1} more span(s)' if len(missing) > 1 else ''}; "
            f"materialize those days of {'/'.join(node.asset_key_path())}",
            [iso_utc(r.start)[:10] for r in _days(missing)],
            list(missing),
        )
    meta = _meta(
        node,
        window,
        context,
        strategy,
        frame,
        source="hot_store",
        covered=answered,
        missing=missing,
    )
    return frame, meta


def _meta(
    node: EventNodeId,
    window: Range,
    context: ComputeContext,
    strategy: Strategy,
    frame: pd.DataFrame,
    *,
    source: str,
    covered: list[Range],
    fingerprint: str | None = None,
    as_of_s: int | None = None,
    snapshot_fingerprint: str | None = None,
    missing: list[Range] | None = None,
) -> SeamlessFetchMetadata:
    merged = merge_ranges(covered)
    seconds = sum(r.duration_s for r in merged)
    return SeamlessFetchMetadata(
        node_id=str(node),
        interval_s=0,
        requested=window,
        world_id=context.world_id,
        execution_domain=context.domain.value,
        strategy=strategy.value,
        dataset_fingerprint=fingerprint,
        as_of=iso_utc(as_of_s) if as_of_s is not None else None,
        as_of_s=as_of_s,
        coverage_bounds=(merged[0].start, merged[-1].end) if merged else None,
        coverage_ratio=seconds / window.duration_s if window.duration_s else 1.0,
        conformance_flags={},
        sla={},
        sla_exceeded=(),
        source=source,
        snapshot_fingerprint=snapshot_fingerprint,
        partial=bool(missing),
        downgrade_reason=f"{len(missing)} span(s) not answered yet" if missing else None,
        missing=tuple(missing or ()),
        rows=len(frame),
    )


def _days(ranges: list[Range]) -> list[Range]:
    """The UTC days the ranges touch, in order."""
    days: dict[int, Range] = {}
    for r in ranges:
        for start in range(r.start - r.start % 86_400, r.end, 86_400):
            days[start] = Range(start, start + 86_400)
    return [days[k] for k in sorted(days)]
