"""One node, a run of partitions: fetch what is missing, conform, store hot, publish segments.

Plain Python (no Dagster) so the asset, the CLI and the read resource share it. Order
matters for crash safety: bars reach the hot store (idempotent upsert) before any
segment is published, and a segment's manifest is written last by the artifact store.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from resources.artifacts.base import ArtifactStore
from resources.exchange import ExchangeClient, FetchedBars, RequestStats
from resources.hot_store.base import HotStore

from . import __version__
from .core.conformance import CONFORMANCE_VERSION, INVALID_TIMESTAMP, Conformed, conform
from .core.coverage import (
    LedgerGap,
    classify_empty_windows,
    coverage_ratio,
    merge_ranges,
    missing_ranges,
    ranges_from_timestamps,
    split_by_windows,
    unsettled_answers,
)
from .core.flag_ledger import FlagEvent, conformance_events, events_in
from .core.frame import TS, Range, empty_frame
from .core.manifest import (
    ManifestIdentity,
    build_manifest,
    clip_ledger,
    segment_coverage,
    segment_flags,
)
from .core.stabilization import closed_end, is_window_stable, stable_end
from .history import history_start_s
from .nodes import NodeId

PRODUCER = f"seamless@{__version__}"
PUBLISH_WORKERS = 4


@dataclass(frozen=True)
class PipelineSettings:
    stabilization_bars: int
    conformance_version: str = CONFORMANCE_VERSION


@dataclass(frozen=True)
class PartitionOutcome:
    """What happened to one partition of the run."""

    window: Range
    row_count: int
    coverage_ratio: float
    completeness_ratio: float
    missing: tuple[Range, ...]
    gaps: tuple[LedgerGap, ...]
    flags: dict[str, int]
    stable: bool
    bounds: tuple[int, int] | None = None  # [first bar, last bar + interval) if any bar
    fingerprint: str | None = None
    uri: str | None = None  # the segment's directory
    manifest_uri: str | None = None  # the segment's manifest.json
    written: bool = False
    encode_s: float = 0.0  # measured encode time when this run wrote the segment


@dataclass
class RunOutcome:
    """The whole run for one node, for metadata, checks and the CLI."""

    node: NodeId
    window: Range
    partitions: list[PartitionOutcome]
    frame: pd.DataFrame
    fetched_ranges: list[Range] = field(default_factory=list)
    fetched_rows: int = 0
    forming_dropped: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    requests: RequestStats | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def published(self) -> list[PartitionOutcome]:
        return [p for p in self.partitions if p.fingerprint is not None]

    @property
    def coverage_ratio(self) -> float:
        interval, origin = self.node.interval_s, self.node.timeframe.origin_s
        covered = ranges_from_timestamps(self.frame[TS].to_numpy(), interval)
        return coverage_ratio(covered, self.window, interval, origin_s=origin)


def _rows_in(frame: pd.DataFrame, ranges: Sequence[Range]) -> np.ndarray:
    """Boolean mask of rows whose ts falls in any of `ranges` (sorted, disjoint)."""
    ts = frame[TS].to_numpy()
    mask = np.zeros(len(ts), dtype=bool)
    for r in ranges:
        lo, hi = np.searchsorted(ts, [r.start, r.end])
        mask[lo:hi] = True
    return mask


async def _fetch(client: ExchangeClient, node: NodeId, ranges: list[Range]) -> list[FetchedBars]:
    return list(
        await asyncio.gather(*(client.fetch_bars(node.symbol, node.timeframe, r) for r in ranges))
    )


async def backfill(
    node: NodeId,
    partitions: Sequence[Range],
    *,
    hot: HotStore,
    artifacts: ArtifactStore,
    client_factory: Callable[[], ExchangeClient],
    settings: PipelineSettings,
    refetch_gaps: bool = False,
    refetch_stored: bool = False,
    log: Callable[[str], Any] = lambda _msg: None,
) -> RunOutcome:
    """Make `partitions` of `node` complete in the hot store and publish the stable ones.

    `refetch_gaps` retries windows the ledger marks confirmed-empty; `refetch_stored`
    downloads stored bars again too, so restated candles replace them (a restated
    partition then publishes a new segment; earlier snapshots keep the old one).
    """
    interval, origin = node.interval_s, node.timeframe.origin_s
    node_id = str(node)
    window = Range(partitions[0].start, partitions[-1].end)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    covered = [] if refetch_stored else hot.coverage(node_id, interval, window)
    retry_gaps = refetch_gaps or refetch_stored
    known = [] if retry_gaps else [g.range for g in hot.ledger_gaps(node_id, window)]
    local_closed = closed_end(int(time.time()), interval, origin_s=origin)
    wanted = window.intersect(Range(window.start, max(window.start, local_closed)))
    missing = missing_ranges(covered, wanted, interval, known, origin_s=origin) if wanted else []
    timings["plan_s"] = time.perf_counter() - t0

    flags: Counter[str] = Counter()
    fetched_frame = empty_frame()
    requests = None
    now_s = time.time()
    fetched_ranges = merge_ranges(missing)
    forming = 0
    conformed = None
    if fetched_ranges:
        log(
            f"{node_id}: fetching {len(fetched_ranges)} missing range(s): "
            + ", ".join(str(r) for r in fetched_ranges[:5])
        )
        t1 = time.perf_counter()
        client = client_factory()
        async with client:
            pages = await _fetch(client, node, fetched_ranges)
        requests = client.stats
        timings["fetch_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        server_closed = min(p.closed_end for p in pages)
        now_s = max(p.server_now_s for p in pages)
        rows = [row for page in pages for row in page.rows]
        row_windows = np.concatenate([page.row_windows for page in pages])
        conformed = conform(
            rows, interval, source_ts_unit="ms", origin_s=origin, windows=row_windows
        )
        closed_ranges = [
            c for r in fetched_ranges if (c := r.intersect(Range(r.start, server_closed)))
        ]
        keep = _rows_in(conformed.frame, closed_ranges)
        forming = int((~keep).sum())
        fetched_frame = conformed.frame[keep].reset_index(drop=True)
        flags.update({k: v for k, v in conformed.flags.items() if v})
        timings["conform_s"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        # Events before bars: a crash in between leaves the bars missing, so the rerun
        # fetches them again and restates the same events (replace, never accumulate).
        events = conformance_events(conformed, closed_ranges, partitions)
        log(f"{node_id}: storing {len(fetched_frame)} bar(s), {len(events)} conformance event(s)")
        hot.replace_flag_events(node_id, closed_ranges, events)
        hot.upsert(node_id, fetched_frame)
        earliest = hot.bounds(node_id)
        earliest_ts = earliest[0] if earliest else None
        # The listing recorded by history discovery also proves that an empty window after
        # it is not `before_listing`, e.g. a maintenance at the start of a first run.
        listed = history_start_s(artifacts, node)
        if listed is not None:
            earliest_ts = listed if earliest_ts is None else min(earliest_ts, listed)
        new_gaps = _confirmed_empty(
            node, pages, server_closed, fetched_frame, conformed, earliest_ts, settings
        )
        for r in closed_ranges:
            if retry_gaps:
                hot.clear_gaps(node_id, r)
        hot.record_gaps(node_id, new_gaps)
        _log_provisional(node, closed_ranges, fetched_frame, new_gaps, log)
        timings["hot_store_upsert_s"] = time.perf_counter() - t3

    t4 = time.perf_counter()
    stored = hot.read_range(node_id, window)
    ledger = hot.ledger_gaps(node_id, window)
    flag_ledger = hot.flag_events(node_id, window)
    timings["read_back_s"] = time.perf_counter() - t4

    t5 = time.perf_counter()
    ts = stored[TS].to_numpy()
    slices = split_by_windows(ts, partitions)

    def settle(index: int) -> PartitionOutcome:
        part = partitions[index]
        part_frame = stored.iloc[slices[index]].reset_index(drop=True)
        outcome = _partition_outcome(node, part, part_frame, ledger, flag_ledger, now_s, settings)
        if not outcome.stable:
            return outcome
        return _publish(node, part_frame, outcome, ledger, flag_ledger, artifacts, settings)

    log(f"{node_id}: settling {len(partitions)} partition(s), publishing the stable ones")
    # Segments are independent files: publish them in parallel (fsync and zstd release the GIL).
    with ThreadPoolExecutor(max_workers=PUBLISH_WORKERS) as pool:
        outcomes = list(pool.map(settle, range(len(partitions))))
    timings["publish_s"] = time.perf_counter() - t5
    timings["encode_s"] = sum(p.encode_s for p in outcomes)  # parallel: summed, not wall
    timings["total_s"] = time.perf_counter() - t0

    return RunOutcome(
        node=node,
        window=window,
        partitions=outcomes,
        frame=stored,
        fetched_ranges=fetched_ranges,
        fetched_rows=len(fetched_frame),
        forming_dropped=forming,
        flags=flags,
        requests=requests,
        timings_s=timings,
    )


def _confirmed_empty(
    node: NodeId,
    pages: Sequence[FetchedBars],
    server_closed: int,
    fetched: pd.DataFrame,
    conformed: Conformed,
    earliest_ts: int | None,
    settings: PipelineSettings,
) -> list[LedgerGap]:
    """The windows the exchange's answers confirm empty (`classify_empty_windows`): stable by
    the exchange's clock when it answered, and answered by responses that placed every row
    they sent. Fresher or unsettled empty windows stay provisional: not ledgered, so they
    are still missing and the next run fetches them again."""
    interval, origin = node.interval_s, node.timeframe.origin_s
    dropped = conformed.dropped
    dropped_ts = dropped[TS].to_numpy(dtype=np.int64)
    misplaced_ts = dropped_ts[(dropped["flag"] == INVALID_TIMESTAMP).to_numpy()]
    fetched_ts = fetched[TS].to_numpy()
    gaps: list[LedgerGap] = []
    for page in pages:
        r = page.window.intersect(Range(page.window.start, server_closed))
        if r is None:
            continue
        lo, hi = np.searchsorted(fetched_ts, [r.start, r.end])
        in_r = (dropped_ts >= r.start) & (dropped_ts < r.end)
        stable = stable_end(
            page.server_now_s, interval, settings.stabilization_bars, origin_s=origin
        )
        gaps += classify_empty_windows(
            r,
            fetched_ts[lo:hi],
            interval,
            dropped_ts[in_r],
            earliest_ts,
            stable_end_s=stable,
            origin_s=origin,
            unsettled=unsettled_answers(page.answers, misplaced_ts),
        )
    return gaps


def _log_provisional(
    node: NodeId,
    closed: Sequence[Range],
    fetched: pd.DataFrame,
    confirmed: Sequence[LedgerGap],
    log: Callable[[str], Any],
) -> None:
    """Say which closed bars came back empty or bad without being confirmed empty."""
    interval, origin = node.interval_s, node.timeframe.origin_s
    got = ranges_from_timestamps(fetched[TS].to_numpy(), interval)
    known = [g.range for g in confirmed]
    left = [m for r in closed for m in missing_ranges(got, r, interval, known, origin_s=origin)]
    if left:
        bars = sum(r.bars(interval, origin_s=origin) for r in left)
        log(
            f"{node}: {bars} closed bar(s) in {len(left)} window(s) stay missing work, not "
            "confirmed empty (bad rows, not yet stable by the exchange's clock, or answered "
            f"with rows it could not place); the next run asks again, e.g. {left[0]}"
        )


def _partition_outcome(
    node: NodeId,
    part: Range,
    frame: pd.DataFrame,
    ledger: Sequence[LedgerGap],
    flag_ledger: Sequence[FlagEvent],
    now_s: float,
    settings: PipelineSettings,
) -> PartitionOutcome:
    """The partition as its manifest states it: from its bars and ledger only."""
    interval, origin = node.interval_s, node.timeframe.origin_s
    gaps = clip_ledger(ledger, part)
    cov = segment_coverage(frame[TS].to_numpy(), part, interval, origin, gaps)
    return PartitionOutcome(
        window=part,
        row_count=cov.row_count,
        bounds=cov.bounds,
        coverage_ratio=cov.ratio,
        completeness_ratio=cov.completeness,
        missing=cov.missing,
        gaps=gaps,
        flags=segment_flags(cov, events_in(flag_ledger, part)),
        stable=is_window_stable(
            part, int(now_s), interval, settings.stabilization_bars, origin_s=origin
        ),
    )


def manifest_identity(node: NodeId, window: Range, settings: PipelineSettings) -> ManifestIdentity:
    """What a segment's manifest states besides its bars and ledger."""
    return ManifestIdentity(
        node_id=str(node),
        exchange=node.exchange,
        symbol=node.symbol,
        timeframe=node.timeframe.code,
        interval_s=node.interval_s,
        origin_s=node.timeframe.origin_s,
        window=window,
        conformance_version=settings.conformance_version,
        stabilization_bars=settings.stabilization_bars,
        producer=PRODUCER,
    )


def _publish(
    node: NodeId,
    frame: pd.DataFrame,
    outcome: PartitionOutcome,
    ledger: Sequence[LedgerGap],
    flag_ledger: Sequence[FlagEvent],
    artifacts: ArtifactStore,
    settings: PipelineSettings,
) -> PartitionOutcome:
    identity = manifest_identity(node, outcome.window, settings)
    manifest = build_manifest(identity, frame, ledger, flag_ledger)
    fingerprint = manifest["fingerprint"]
    if artifacts.head(node, outcome.window) == fingerprint:
        uri = artifacts.uri_for(node, fingerprint)
    else:
        result = artifacts.publish(node, frame, manifest)
        fingerprint, uri = result.fingerprint, result.uri
        outcome = replace(outcome, written=result.written, encode_s=result.encode_s)
    return replace(
        outcome,
        fingerprint=fingerprint,
        uri=uri,
        manifest_uri=artifacts.manifest_uri_for(node, fingerprint),
    )
