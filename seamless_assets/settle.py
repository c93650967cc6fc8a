"""Settling a streamed run's chunk: conform, store hot, read back, publish stable segments.

Order matters for crash safety: bars reach the hot store (idempotent upsert) before any
segment is published, and a segment's manifest is written last by the artifact store.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from resources.artifacts.base import ArtifactStore
from resources.artifacts.blobs import concurrent_writes
from resources.exchange import (
    FetchedBars,
)
from resources.hot_store.base import HotStore

from .core.conformance import (
    INVALID_TIMESTAMP,
    Conformed,
    columns_matrix,
    conform,
    rows_matrix,
)
from .core.coverage import (
    LedgerGap,
    classify_empty_windows,
    missing_ranges,
    ranges_from_timestamps,
    split_by_windows,
    unsettled_answers,
)
from .core.flag_ledger import FlagEvent, conformance_events, events_in
from .core.frame import TS, Range
from .core.manifest import (
    ManifestIdentity,
    build_manifest,
    clip_ledger,
    segment_coverage,
    segment_flags,
)
from .core.provenance import ARCHIVE, REST, bars_by_source, provenance_events
from .core.stabilization import is_window_stable, stable_end
from .nodes import NodeId
from .run_outcome import PRODUCER, PartitionOutcome, PipelineSettings, StoredBars

PUBLISH_AHEAD_CHUNKS = 1  # chunks whose segments may still be publishing while others settle
_NO_ROWS = np.empty((0, 2), dtype=np.int64)


@dataclass
class FetchedChunk:
    """One chunk of the run as fetched: its partitions, the ranges asked for, the answers
    (settling keeps the answers but lets their raw rows go once they are conformed)."""

    partitions: list[Range]
    ranges: list[Range]
    pages: list[FetchedBars]


class ChunkSettler:
    """Settles the run's chunks in order (in a worker thread) and collects the outcome.

    A context manager: its publishing threads live for the run, and leaving waits for the
    segments being published."""

    def __init__(
        self,
        node: NodeId,
        settings: PipelineSettings,
        hot: HotStore,
        artifacts: ArtifactStore,
        retry_gaps: bool,
        log: Callable[[str], Any],
        listed_s: int | None = None,
    ) -> None:
        self.node, self.settings, self.hot, self.artifacts = node, settings, hot, artifacts
        self.retry_gaps, self.log = retry_gaps, log
        self.listed_s = listed_s  # the node's recorded first bar (`history`), read by the run
        self.timings: defaultdict[str, float] = defaultdict(float, fetch_s=0.0)
        self.outcomes: list[PartitionOutcome] = []
        self.stored = StoredBars()  # the run's stored bars, summed chunk by chunk
        self.flags: Counter[str] = Counter()
        self.fetched_rows = 0
        self.forming = 0
        self.now_s: float | None = None  # the exchange's clock when it last answered
        # as many publishing threads as the artifact backend is best given writes at once
        workers = concurrent_writes(artifacts.blobs)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="publish")
        self._publishing: list[list[Future[PartitionOutcome]]] = []  # per chunk, in order

    def __enter__(self) -> ChunkSettler:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)  # what is stored gets published, even after a failure

    def settle_chunks(self, chunks: Sequence[FetchedChunk]) -> None:
        """Store chunks (in order) and publish their stable partitions.

        The hot store's part of the chunks given together (those fetched by the time the
        settling thread is free) runs in one session (on DuckDB: one connection and one
        checkpoint, not one per operation; other threads and processes wait for the file
        only while they settle). A chunk's bars are committed before any of its segments is
        published; the segments are published on the run's publishing threads while the
        next chunks are stored, at most `PUBLISH_AHEAD_CHUNKS` chunks behind."""
        with self.hot.session():
            for chunk in chunks:
                if chunk.pages:
                    self.now_s = max(p.server_now_s for p in chunk.pages)
                    self._store(chunk)
                now_s = self.now_s if self.now_s is not None else time.time()
                bars, ledger, flag_ledger = self._read_back(chunk.partitions)
                t5 = time.perf_counter()
                self._publishing.append(
                    self._start_publishing(chunk.partitions, bars, ledger, flag_ledger, now_s)
                )
                self.stored = self.stored.add(bars, self.node.interval_s)
                self.timings["publish_s"] += time.perf_counter() - t5
        self._collect(PUBLISH_AHEAD_CHUNKS)

    def finish(self) -> None:
        """Wait for every segment being published (a failed one raises here)."""
        self._collect(0)

    def _collect(self, ahead: int) -> None:
        """The outcomes of the chunks published before the last `ahead`, in order."""
        t = time.perf_counter()
        while len(self._publishing) > ahead:
            self.outcomes += [future.result() for future in self._publishing.pop(0)]
        self.timings["publish_s"] += time.perf_counter() - t

    def _store(self, chunk: FetchedChunk) -> None:
        """Conform what the exchange answered for the chunk; store bars, flags and gaps."""
        node, hot, pages = self.node, self.hot, chunk.pages
        node_id, interval, origin = str(node), node.interval_s, node.timeframe.origin_s
        t2 = time.perf_counter()
        server_closed = min(p.closed_end for p in pages)
        conformed = conform(
            _raw_rows(pages),
            interval,
            source_ts_unit="ms",
            origin_s=origin,
            windows=np.concatenate([page.row_windows for page in pages]),
        )
        sourced = _sourced_ts(pages)  # which bars archive/trades pages gave, before they go
        # The raw rows are conformed: let them go now, not when the chunk is settled.
        pages = chunk.pages = [
            replace(p, rows=[], row_windows=_NO_ROWS, packed=None) for p in pages
        ]
        closed_ranges = [
            c for r in chunk.ranges if (c := r.intersect(Range(r.start, server_closed)))
        ]
        keep = _rows_in(conformed.frame, closed_ranges)
        self.forming += int((~keep).sum())
        fetched_frame = conformed.frame[keep].reset_index(drop=True)
        self.fetched_rows += len(fetched_frame)
        self.flags.update({k: v for k, v in conformed.flags.items() if v})
        self.timings["conform_s"] += time.perf_counter() - t2

        t3 = time.perf_counter()
        # Events before bars: a crash in between leaves the bars missing, so the rerun
        # fetches them again and restates the same events (replace, never accumulate).
        events = conformance_events(conformed, closed_ranges, chunk.partitions)
        events += _provenance(sourced, fetched_frame, chunk.partitions)
        self.log(
            f"{node_id}: storing {len(fetched_frame)} bar(s), {len(events)} conformance "
            f"event(s) of {Range(chunk.partitions[0].start, chunk.partitions[-1].end)}"
        )
        hot.replace_flag_events(node_id, closed_ranges, events)
        hot.upsert(node_id, fetched_frame)
        earliest = hot.bounds(node_id)
        earliest_ts = earliest[0] if earliest else None
        # The listing recorded by history discovery also proves that an empty window after
        # it is not `before_listing`, e.g. a maintenance at the start of a first run.
        listed = self.listed_s
        if listed is not None:
            earliest_ts = listed if earliest_ts is None else min(earliest_ts, listed)
        new_gaps = _confirmed_empty(
            node, pages, server_closed, fetched_frame, conformed, earliest_ts, self.settings
        )
        for r in closed_ranges:
            if self.retry_gaps:
                hot.clear_gaps(node_id, r)
        hot.record_gaps(node_id, new_gaps)
        _log_provisional(node, closed_ranges, fetched_frame, new_gaps, self.log)
        self.timings["hot_store_upsert_s"] += time.perf_counter() - t3

    def _read_back(
        self, partitions: list[Range]
    ) -> tuple[pd.DataFrame, list[LedgerGap], list[FlagEvent]]:
        """The chunk's bars, gap ledger and conformance events as the hot store holds them."""
        node_id, window = str(self.node), Range(partitions[0].start, partitions[-1].end)
        t4 = time.perf_counter()
        stored = self.hot.read_range(node_id, window)
        ledger = self.hot.ledger_gaps(node_id, window)
        flag_ledger = self.hot.flag_events(node_id, window)
        self.timings["read_back_s"] += time.perf_counter() - t4
        return stored, ledger, flag_ledger

    def _start_publishing(
        self,
        partitions: list[Range],
        stored: pd.DataFrame,
        ledger: list[LedgerGap],
        flag_ledger: list[FlagEvent],
        now_s: float,
    ) -> list[Future[PartitionOutcome]]:
        """Each partition's outcome, its segment published if it is stable, on the run's
        publishing threads:
        segments are independent files, written in parallel (fsync and zstd release the
        GIL)."""
        node, settings, artifacts = self.node, self.settings, self.artifacts
        chunk_window = Range(partitions[0].start, partitions[-1].end)
        slices = split_by_windows(stored[TS].to_numpy(), partitions)

        def settle(index: int) -> PartitionOutcome:
            part = partitions[index]
            frame = stored.iloc[slices[index]].reset_index(drop=True)
            outcome = _partition_outcome(node, part, frame, ledger, flag_ledger, now_s, settings)
            if not outcome.stable:
                return outcome
            return _publish(node, frame, outcome, ledger, flag_ledger, artifacts, settings)

        self.log(
            f"{node}: settling {len(partitions)} partition(s) of {chunk_window}, "
            "publishing the stable ones"
        )
        return [self._pool.submit(settle, index) for index in range(len(partitions))]


def _raw_rows(pages: Sequence[FetchedBars]) -> np.ndarray | list[list[Any]]:
    """The pages' rows for `conform`: one float matrix built page by page, from a packed
    page's arrays as they are (no joined list of every row, no list per row), or the joined
    rows when some page needs `conform`'s general reading."""
    matrices = []
    for page in pages:
        packed = page.packed
        matrix = rows_matrix(page.rows) if packed is None else columns_matrix(*packed)
        if matrix is None:
            return [row for page in pages for row in page.unpack().rows]
        matrices.append(matrix)
    return np.concatenate(matrices)


def _sourced_ts(pages: Sequence[FetchedBars]) -> dict[str, np.ndarray]:
    """Open times (s) of the rows each source besides REST gave (packed pages)."""
    found: dict[str, list[np.ndarray]] = {}
    for page in pages:
        if page.source != REST and page.packed is not None:
            found.setdefault(page.source, []).append(page.packed[0] // 1000)
    return {source: np.concatenate(parts) for source, parts in found.items()}


def _provenance(
    sourced: dict[str, np.ndarray], fetched: pd.DataFrame, partitions: Sequence[Range]
) -> list[FlagEvent]:
    """Provenance events of the stored bars that pages from sources besides REST gave:
    per partition and source, the first such bar and how many (`core.provenance`)."""
    ts = fetched[TS].to_numpy()
    events = []
    for source, given in sourced.items():
        events += provenance_events(ts[np.isin(ts, given)], source, partitions)
    return events


def _rows_in(frame: pd.DataFrame, ranges: Sequence[Range]) -> np.ndarray:
    """Boolean mask of rows whose ts falls in any of `ranges` (sorted, disjoint)."""
    ts = frame[TS].to_numpy()
    mask = np.zeros(len(ts), dtype=bool)
    for r in ranges:
        lo, hi = np.searchsorted(ts, [r.start, r.end])
        mask[lo:hi] = True
    return mask


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
        if page.source.startswith(ARCHIVE):
            continue  # an archive file proves bars, not their absence: REST is asked there
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
    own_events = events_in(flag_ledger, part)
    return PartitionOutcome(
        window=part,
        row_count=cov.row_count,
        bounds=cov.bounds,
        coverage_ratio=cov.ratio,
        completeness_ratio=cov.completeness,
        missing=cov.missing,
        gaps=gaps,
        flags=segment_flags(cov, own_events),
        sources=bars_by_source(own_events, cov.row_count),
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
        outcome = replace(
            outcome,
            written=result.written,
            encode_s=result.encode_s,
            bytes_written=result.bytes_written,
        )
    return replace(
        outcome,
        fingerprint=fingerprint,
        uri=uri,
        manifest_uri=artifacts.manifest_uri_for(node, fingerprint),
    )
