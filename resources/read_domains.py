"""The domain policy of one read (ARCHITECTURE decision 10): what backtest, research and
dryrun read, in what order, and how a shortfall or an SLA breach is reported; the live
domain is `read_live.py`. The top layer below the resource: it asks `ReadPlan` for
sources and never touches a store itself.

Every SLA breach follows `on_violation` on every path, by construction: a path records
what it has gathered in `self.got` as it goes, and `run()` is the one place a breach
(`SeamlessSLAExceeded`, raised by any bounded call below) becomes an error or a partial
result (`_overrun`). Store errors (`ArtifactIntegrityError` for a tampered artifact,
`SnapshotNotFound`, ...) pass through unchanged: they are never a partial result.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd

from seamless_assets.core.coverage import merge_ranges, subtract_ranges
from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.core.read_context import (
    BACKFILLING,
    SNAPSHOT_ONLY,
    ExecutionDomain,
    SeamlessFetchMetadata,
    Strategy,
)
from seamless_assets.core.sla import SLATracker, violation_outcome
from seamless_assets.errors import ExchangeUnavailable, MissingPartitions, SeamlessSLAExceeded

from .read_echo import Assembled, ReadRequest, bars_span, concat, coverage_ratio, echo, first_line
from .read_missing import missing_partitions
from .read_plan import ReadPlan
from .read_runtime import ReaderRuntime
from .read_storage import BoundedCalls
from .read_windows import closed_end_at, partition_keys, partition_windows


class DomainRead:
    """One fetch of a snapshot domain (backtest, research, dryrun): its path, its SLA
    account and the metadata it echoes."""

    def __init__(self, rt: ReaderRuntime, request: ReadRequest) -> None:
        self.rt, self.request = rt, request
        self.node, self.window = request.node, request.window
        self.context, self.strategy = request.context, request.strategy
        domain = self.context.domain
        self.tracker = SLATracker(rt.budget(domain), clock_ms=lambda: time.perf_counter() * 1000)
        self.violation = violation_outcome(self.strategy.value, rt.slas[domain].on_violation)
        calls = BoundedCalls(self.tracker, rt.storage, rt.loop)
        self.plan = ReadPlan(rt, self.node, self.window, calls)
        self.got = Assembled()
        self.now_s: float | None = None  # the exchange clock, once a path knows it

    def run(self) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        try:
            self.path()
        except SeamlessSLAExceeded as exc:
            if self.violation == "raise":
                raise
            self._overrun(exc)
        return self._result()

    def path(self) -> None:
        if self.context.domain in SNAPSHOT_ONLY:
            self._snapshot_only()
        elif self.context.domain is ExecutionDomain.DRYRUN:
            self._dryrun()
        else:
            raise ValueError(f"{type(self).__name__} does not read {self.context.domain}")

    # -- backtest / research ------------------------------------------------------------

    def _snapshot_only(self) -> None:
        as_of_s = self.context.as_of_s
        assert as_of_s is not None
        got, plan = self.got, self.plan
        snapshot = plan.resolve(as_of_s)
        got.snapshot, got.as_of_s = snapshot, snapshot.as_of_s
        uncovered = snapshot.uncovered(self.window)
        if uncovered:
            raise missing_partitions(plan, self.request, uncovered, snapshot)
        got.frame = plan.read_snapshot(snapshot, self.window)
        got.fingerprints = [s.fingerprint for s in plan.overlapping(snapshot, self.window)]
        got.flags = plan.window_flags(snapshot, self.window)

    # -- dryrun -------------------------------------------------------------------------

    def _dryrun(self) -> None:
        as_of_s = self.context.as_of_s
        assert as_of_s is not None
        got, plan, window = self.got, self.plan, self.window
        # Only bars closed by as_of belong to the run.
        limit = Range(window.start, max(window.start, closed_end_at(self.node, as_of_s)))
        bounded = window.intersect(limit) or Range(limit.start, limit.start)
        snapshot = plan.snapshot_at(as_of_s)
        got.snapshot = snapshot
        uncovered = snapshot.uncovered(window) if snapshot else [window]
        frames: list[pd.DataFrame] = []
        fingerprints: list[str] = []
        if snapshot is not None:
            frames.append(plan.read_snapshot(snapshot, window))
            fingerprints += [s.fingerprint for s in plan.overlapping(snapshot, window)]
            got.frame = concat(frames, bounded)
        fresh: list[Range] = []
        wanted = [c for r in uncovered if (c := r.intersect(limit))]
        if wanted:
            fresh_frames, fresh, fresh_fps = self._artifactize(wanted)
            frames += fresh_frames
            fingerprints += fresh_fps
            got.frame = concat(frames, bounded)
        if fresh:
            got.source = "snapshot+artifacts"
        still = subtract_ranges(uncovered, fresh)
        if still and self.strategy is Strategy.FAIL_FAST:
            raise missing_partitions(plan, self.request, still, snapshot)
        ends = [r.end for r in fresh] + ([snapshot.watermark_s] if snapshot else [])
        got.as_of_s = min(max(ends), limit.end) if ends else None
        got.missing = still
        got.flags = plan.segment_flags(fingerprints)
        got.fingerprints = fingerprints
        pending = [c for r in still if (c := r.intersect(limit))]
        if pending:
            got.partial = True
            got.reasons.append("not artifactized yet: " + ", ".join(str(r) for r in pending[:5]))
        if window.end > limit.end:
            got.partial = True
            got.reasons.append(
                f"bars after the run's as_of {iso_utc(as_of_s)} are not delivered "
                f"({Range(limit.end, window.end)})"
            )

    def _artifactize(
        self, wanted: list[Range]
    ) -> tuple[list[pd.DataFrame], list[Range], list[str]]:
        """Publish the partitions of `wanted` from fresh bars (backfilled first when the
        strategy allows) and read them back from the artifact store: dry runs only use
        bars that exist as verified segments."""
        plan, got = self.plan, self.got
        span = Range(wanted[0].start, wanted[-1].end)
        missing = plan.stored_missing(span)
        if missing and self.strategy in BACKFILLING:
            try:
                plan.fill(missing, "backfill_wait")
            except ExchangeUnavailable as exc:
                got.reasons.append(f"backfill failed: {first_line(exc)}")
            missing = plan.stored_missing(span)
        partitions = partition_windows(self.rt.config, self.node, span)
        # Publishing needs every bar of a partition stored (an exchange fetch is not
        # allowed here, or failed): publish only the partitions the hot store holds.
        partitions = [p for p in partitions if not any(p.intersect(m) for m in missing)]
        if not partitions:
            return [], [], []
        try:
            published = plan.publish(partitions).published
        except ExchangeUnavailable as exc:
            got.reasons.append(first_line(exc))
            return [], [], []
        fingerprints = [p.fingerprint for p in published if p.fingerprint]
        if not fingerprints:
            return [], [], []
        frames = plan.read_segments(fingerprints)
        return frames, merge_ranges([p.window for p in published]), fingerprints

    # -- outcome ------------------------------------------------------------------------

    def _overrun(self, exc: SeamlessSLAExceeded) -> None:
        """Return what the read has so far, flagged partial with the reason."""
        have = self.got.frame
        delivered = "what it had" if len(have) else "nothing"
        before = self.got
        self.got = Assembled(have, before.source, partial=True, as_of_s=before.as_of_s)
        self.got.reasons = [
            f"{exc.phase} budget of {exc.budget_ms:.0f} ms ran out ({exc.detail}); the work "
            f"was cancelled and the read returns {delivered} ({len(have)} bars)",
            *before.reasons,
        ]
        self.got.missing = subtract_ranges([self.window], bars_span(have, self.node.interval_s))

    def _result(self) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        got, ctx = self.got, self.context
        shortfall = coverage_ratio(self.node, self.window, got.frame) < ctx.min_coverage
        if shortfall and self.strategy is Strategy.FAIL_FAST:
            keys = partition_keys(self.rt.config, self.node, got.missing)
            raise MissingPartitions(
                f"{self.node} {self.window}: delivered coverage is below min_coverage "
                f"{ctx.min_coverage}",
                keys,
                list(got.missing),
            )
        meta = echo(self.request, got, self.tracker.timings(), coverage_shortfall=shortfall)
        counts = self.plan.cache_counts
        if counts is not None:
            meta = replace(meta, segment_cache=counts.as_dict())
        return got.frame, meta
