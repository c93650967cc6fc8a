"""The sources of one read: snapshot resolution, snapshot and segment reads, hot-store
reads, fills and publication, the exchange clock. Every store call goes through
`BoundedCalls` (the read's SLA); this layer decides nothing about domains, it answers the
questions the domain policy (`read_domains.py`) asks.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from seamless_assets.core.conformance import FLAGS
from seamless_assets.core.coverage import LedgerGap, missing_ranges
from seamless_assets.core.frame import Range
from seamless_assets.core.read_context import CoverageReport
from seamless_assets.core.snapshot import Snapshot, SnapshotSegment
from seamless_assets.errors import ExchangeUnavailable, SeamlessSLAExceeded, SnapshotNotFound
from seamless_assets.nodes import NodeId
from seamless_assets.pipeline import RunOutcome, backfill

from .read_fill import ensure, server_now, stored_missing
from .read_runtime import ReaderRuntime
from .read_segment_files import CacheCounts
from .read_storage import BoundedCalls

if TYPE_CHECKING:  # ccxt loads when a client is built, not with the reader resource
    from resources.exchange import ExchangeClient


class ReadPlan:
    """Where the bars of one node and window come from, read under the SLA."""

    def __init__(self, rt: ReaderRuntime, node: NodeId, window: Range, calls: BoundedCalls):
        self.rt, self.node, self.window, self.calls = rt, node, window, calls
        self.cache_counts: CacheCounts | None = None  # what the segment cache did, if used

    # -- snapshots and segments ---------------------------------------------------------

    def resolve(self, as_of_s: int) -> Snapshot:
        """The snapshot a pinned read sees (memoized: it can never change)."""
        memo, key = self.rt.resolved, (str(self.node), as_of_s)
        snapshot = memo.get(key)
        if snapshot is None:
            snapshot = self.calls.store(
                lambda: self.rt.artifacts.resolve_snapshot(self.node, as_of_s)
            )
            memo[key] = snapshot  # resolve_snapshot refuses as_of beyond the latest one
        return snapshot

    def snapshot_at(self, as_of_s: int) -> Snapshot | None:
        """The snapshot at `as_of_s`, or the latest if it is older; None if there is none."""
        artifacts, node = self.rt.artifacts, self.node

        def lookup() -> Snapshot | None:
            try:
                return artifacts.resolve_snapshot(node, as_of_s)
            except SnapshotNotFound:
                latest = artifacts.latest_snapshot(node)
                return latest if latest is not None and latest.as_of_s <= as_of_s else None

        return self.calls.store(lookup)

    def latest_snapshot(self) -> Snapshot | None:
        return self.calls.store(lambda: self.rt.artifacts.latest_snapshot(self.node))

    def unsnapshotted(self, stable_end_s: int) -> list[Range]:
        """Published partitions (ending by `stable_end_s`) the newest snapshot lacks."""
        return self.calls.store(lambda: self.rt.artifacts.unsnapshotted(self.node, stable_end_s))

    def read_snapshot(self, snapshot: Snapshot, window: Range) -> pd.DataFrame:
        """Bars of the snapshot in `window`, verified: through the segment cache when it is
        on and the snapshot pins manifest digests (version 2), else from the segments."""
        rt, artifacts, node = self.rt, self.rt.artifacts, self.node
        cache = rt.segment_cache
        if cache is None or any(s.manifest_sha256 is None for s in snapshot.segments):
            return self.calls.store(
                lambda: artifacts.read_snapshot_range(node, snapshot, window, verify=True)
            )
        counts, listed = CacheCounts(), self.overlapping(snapshot, window)
        flags = self.manifest_flags
        frame, opened = self.calls.store(
            lambda: cache.read(node, snapshot, listed, window, counts, flags)
        )
        with rt.state_lock:
            counts.add_to(rt.metrics)
            for segment in opened:  # the committed manifests' flags: no manifest reads
                rt.manifest_flags.setdefault(segment.fingerprint, segment.flags)
        self.cache_counts = counts
        return frame

    def overlapping(self, snapshot: Snapshot, window: Range) -> list[SnapshotSegment]:
        """`snapshot.segments_overlapping(window)`."""
        lo, hi = self._overlap(snapshot, window)
        return list(snapshot.segments[lo:hi])

    def _overlap(self, snapshot: Snapshot, window: Range) -> tuple[int, int]:
        """The indices `[lo, hi)` of the snapshot's segments overlapping `window` (listed in
        time order without overlap, so they are consecutive), by a vectorized test over the
        spans of its segments (kept per snapshot: it is immutable)."""
        spans = self.rt.segment_spans.get(snapshot.fingerprint)
        if spans is None:
            starts = np.array([s.range.start for s in snapshot.segments], dtype=np.int64)
            ends = np.array([s.range.end for s in snapshot.segments], dtype=np.int64)
            spans = self.rt.segment_spans[snapshot.fingerprint] = (starts, ends)
        starts, ends = spans
        if window.start >= window.end:
            return 0, 0
        hits = np.flatnonzero((starts < window.end) & (ends > window.start))
        return (int(hits[0]), int(hits[-1]) + 1) if len(hits) else (0, 0)

    def window_flags(self, snapshot: Snapshot, window: Range) -> Counter[str]:
        """`segment_flags` of the snapshot's segments overlapping `window`; once every
        segment's flags are known, from running totals kept per snapshot (one subtraction
        however many segments the window spans)."""
        rt = self.rt
        running = rt.flag_totals.get(snapshot.fingerprint)
        if running is None:
            known = rt.manifest_flags
            if any(s.fingerprint not in known for s in snapshot.segments):
                return self.segment_flags(
                    [s.fingerprint for s in self.overlapping(snapshot, window)]
                )
            counts = np.zeros((len(snapshot.segments) + 1, len(FLAGS)), dtype=np.int64)
            for i, segment in enumerate(snapshot.segments, start=1):
                flags = known[segment.fingerprint]
                counts[i] = [flags.get(name, 0) for name in FLAGS]
            running = rt.flag_totals[snapshot.fingerprint] = np.cumsum(counts, axis=0)
        lo, hi = self._overlap(snapshot, window)
        return Counter(dict(zip(FLAGS, (running[hi] - running[lo]).tolist(), strict=True)))

    def read_segments(self, fingerprints: Sequence[str]) -> list[pd.DataFrame]:
        artifacts, node = self.rt.artifacts, self.node
        return self.calls.store(
            lambda: [artifacts.read_segment(node, fp, verify=True) for fp in fingerprints]
        )

    def segment_flags(self, fingerprints: Sequence[str]) -> Counter[str]:
        """Conformance flags of the segments behind a read (manifests are immutable, so
        each is read once per process)."""
        rt = self.rt
        if any(fp not in rt.manifest_flags for fp in fingerprints):
            self.calls.store(lambda: self.manifest_flags(fingerprints))
        total = dict.fromkeys(FLAGS, 0)
        for fp in fingerprints:
            for name, count in rt.manifest_flags.get(fp, {}).items():
                total[name] = total.get(name, 0) + count
        return Counter(total)

    def manifest_flags(self, fingerprints: Sequence[str]) -> dict[str, dict[str, int]]:
        """The flags of each segment's manifest, read (in parallel) once per process: a
        storage call's body (the caller bounds it)."""
        rt, node = self.rt, self.node
        todo = [fp for fp in fingerprints if fp not in rt.manifest_flags]
        reads = [
            rt.io_pool.submit(functools.partial(rt.artifacts.read_manifest, node, fp))
            for fp in todo
        ]
        for fp, read in zip(todo, reads, strict=True):
            flags = ((read.result() or {}).get("conformance") or {}).get("flags") or {}
            rt.manifest_flags[fp] = {str(k): int(v) for k, v in flags.items()}
        return {fp: rt.manifest_flags[fp] for fp in fingerprints}

    # -- the hot store ------------------------------------------------------------------

    def hot_frame(self) -> pd.DataFrame:
        hot, node, window = self.rt.hot, self.node, self.window
        return self.calls.store(lambda: hot.read_range(str(node), window))

    def hot_coverage(self) -> tuple[list[Range], list[LedgerGap]]:
        hot, node, window = self.rt.hot, self.node, self.window

        def coverage() -> tuple[list[Range], list[LedgerGap]]:
            covered = hot.coverage(str(node), node.interval_s, window)
            return covered, hot.ledger_gaps(str(node), window)

        return self.calls.store(coverage)

    def stored_missing(self, span: Range) -> list[Range]:
        """Closed bars of `span` neither stored nor confirmed empty."""
        return self.calls.store(lambda: stored_missing(self.rt, self.node, span))

    def missing_in(
        self, target: Range | None, covered: list[Range], gaps: list[LedgerGap]
    ) -> list[Range]:
        if target is None:
            return []
        node = self.node
        known = [g.range for g in gaps]
        return missing_ranges(
            covered, target, node.interval_s, known, origin_s=node.timeframe.origin_s
        )

    # -- the exchange -------------------------------------------------------------------

    def fill(self, ranges: list[Range], phase: str) -> CoverageReport:
        """Fill `ranges` (what the store lacks, just computed) through the single flight
        under `phase`'s budget; the caller re-reads the store."""
        span = Range(ranges[0].start, ranges[-1].end)
        tracker = self.calls.tracker
        started = time.perf_counter()
        try:
            return ensure(
                self.rt, self.node, span, tracker.timeout_s(phase), phase,
                missing=ranges, recheck=False,
            )  # fmt: skip
        except SeamlessSLAExceeded:
            raise self.calls.breach(phase, started, f"{phase} work cancelled") from None
        finally:
            tracker.record(phase, (time.perf_counter() - started) * 1000)

    def publish(self, partitions: list[Range]) -> RunOutcome:
        """Publish `partitions` from the hot store's bars (no exchange fetch)."""
        rt = self.rt
        return self.calls.on_loop(
            "backfill_wait",
            backfill(self.node, partitions, hot=rt.hot, artifacts=rt.artifacts,
                     client_factory=_no_client, settings=rt.pipeline),
        )  # fmt: skip

    def exchange_now(self) -> float:
        """The exchange's clock (one /time request under `live_wait`); remembers the
        offset from the local clock for `exchange_now_estimate`."""
        now = float(self.calls.on_loop("live_wait", server_now(self.rt, self.node)))
        with self.rt.state_lock:
            self.rt.clock_offset_s[self.node.exchange] = now - time.time()
        return now

    def exchange_now_estimate(self) -> float:
        return self.rt.exchange_now_estimate(self.node.exchange)


def _no_client() -> ExchangeClient:
    raise ExchangeUnavailable(
        "publishing fresh bars for a dry run needed an exchange fetch, which this "
        "strategy does not allow"
    )
