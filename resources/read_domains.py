"""One read through `SeamlessReader`: the domain policy applied to one node and window.

`DomainRead` is created per `fetch` by the reader (`resources/reader.py`), which owns the
runtime (stores, event loop, single-flight fills, SLA-bounded calls); this module holds
what each execution domain reads, in what order, and how a shortfall is reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from resources.exchange import ExchangeClient
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.conformance import FLAGS
from seamless_assets.core.coverage import LedgerGap, merge_ranges, missing_ranges, subtract_ranges
from seamless_assets.core.fingerprint import ALGO, FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import CANONICAL_COLUMNS, TS, Range, empty_frame, iso_utc
from seamless_assets.core.read_context import (
    BACKFILLING,
    ComputeContext,
    CoverageReport,
    Downgrade,
    ExecutionDomain,
    SeamlessFetchMetadata,
    Strategy,
)
from seamless_assets.core.sla import SLATracker, violation_outcome
from seamless_assets.core.snapshot import Snapshot
from seamless_assets.core.stabilization import closed_end
from seamless_assets.errors import (
    AsOfRegression,
    ExchangeUnavailable,
    MissingPartitions,
    SeamlessError,
    SeamlessSLAExceeded,
    SnapshotNotFound,
)
from seamless_assets.nodes import NodeId
from seamless_assets.partitions import partition_keys_for, timeframe_class_name, timeframe_classes
from seamless_assets.pipeline import RunOutcome, backfill

if TYPE_CHECKING:
    from resources.reader import ReaderRuntime, SeamlessReader

log = logging.getLogger(__name__)


def closed_end_at(node: NodeId, now_s: float) -> int:
    """Bars of `node` opening before this are closed at `now_s`."""
    return closed_end(int(now_s), node.interval_s, origin_s=node.timeframe.origin_s)


@dataclass
class Assembled:
    """What a domain path gathered, before it becomes metadata."""

    frame: pd.DataFrame
    source: str
    missing: list[Range]
    reasons: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)  # segments behind the frame
    snapshot: Snapshot | None = None
    flags: Counter[str] = field(default_factory=Counter)
    as_of_s: int | None = None
    downgrade: Downgrade | None = None
    staleness_s: float | None = None
    partial: bool = False


class DomainRead:
    """One fetch: the domain path, its SLA account and the metadata it echoes."""

    def __init__(
        self,
        reader: SeamlessReader,
        rt: ReaderRuntime,
        node: NodeId,
        window: Range,
        context: ComputeContext,
        strategy: Strategy,
        tracker: SLATracker,
    ) -> None:
        self.reader, self.rt, self.node, self.window = reader, rt, node, window
        self.context, self.strategy, self.tracker = context, strategy, tracker
        self.violation = violation_outcome(strategy.value, rt.config.seamless.sla.on_violation)

    # -- backtest / research ------------------------------------------------------------

    def snapshot_only(self) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        as_of_s = self.context.as_of_s
        assert as_of_s is not None
        try:
            snapshot = self.reader._storage(self.rt, self.tracker, lambda: self._resolve(as_of_s))
            uncovered = snapshot.uncovered(self.window)
            if uncovered:
                raise self._missing_error(uncovered, snapshot)
            frame = self._read_snapshot(snapshot, self.window)
        except SeamlessSLAExceeded as exc:
            return self._overrun(exc, "snapshot")
        fingerprints = [s.fingerprint for s in snapshot.segments_overlapping(self.window)]
        got = Assembled(
            frame, "snapshot", [], fingerprints=fingerprints, snapshot=snapshot,
            flags=self._segment_flags(fingerprints), as_of_s=snapshot.as_of_s,
        )  # fmt: skip
        return self._result(got)

    def _resolve(self, as_of_s: int) -> Snapshot:
        memo, key = self.rt.resolved, (str(self.node), as_of_s)
        snapshot = memo.get(key)
        if snapshot is None:
            snapshot = self.rt.artifacts.resolve_snapshot(self.node, as_of_s)
            memo[key] = snapshot  # resolve_snapshot refuses as_of beyond the latest one
        return snapshot

    def _read_snapshot(self, snapshot: Snapshot, window: Range) -> pd.DataFrame:
        node, artifacts = self.node, self.rt.artifacts
        return self.reader._storage(
            self.rt,
            self.tracker,
            lambda: artifacts.read_snapshot_range(node, snapshot, window, verify=True),
        )

    def _segment_flags(self, fingerprints: Sequence[str]) -> Counter[str]:
        """Conformance flags of the segments behind a read (manifests are immutable, so
        each is read once per process)."""
        rt, node = self.rt, self.node
        todo = [fp for fp in fingerprints if fp not in rt.manifest_flags]
        if todo:

            def load() -> list[dict[str, Any] | None]:
                return list(rt.io_pool.map(lambda fp: rt.artifacts.read_manifest(node, fp), todo))

            manifests = self.reader._storage(rt, self.tracker, load)
            for fp, manifest in zip(todo, manifests, strict=True):
                flags = ((manifest or {}).get("conformance") or {}).get("flags") or {}
                rt.manifest_flags[fp] = {str(k): int(v) for k, v in flags.items()}
        total: Counter[str] = Counter(dict.fromkeys(FLAGS, 0))
        for fp in fingerprints:
            total.update(rt.manifest_flags.get(fp, {}))
        return total

    def _missing_error(self, uncovered: list[Range], snapshot: Snapshot | None) -> SeamlessError:
        keys = partition_keys(self.rt.config, self.node, uncovered)
        where = (
            f"snapshot as_of {snapshot.as_of_iso} ({snapshot.fingerprint})"
            if snapshot is not None
            else "the stores"
        )
        after = [r for r in uncovered if snapshot is not None and r.end > snapshot.as_of_s]
        hint = (
            f"; bars after {snapshot.as_of_iso} are not in this snapshot: pick a later as_of"
            if after and snapshot is not None
            else ""
        )
        shown = ", ".join(keys[:10]) + (f" … ({len(keys)} in all)" if len(keys) > 10 else "")
        return MissingPartitions(
            f"{self.node}: {where} does not cover {', '.join(str(r) for r in uncovered[:5])}; "
            f"missing partitions: {shown or 'none yet (in the future)'}{hint}. Materialize "
            f"them (`seamless backfill {self.node} --start … --end …`) and let the as_of "
            "sensor advance the snapshot",
            keys,
            list(uncovered),
        )

    # -- dryrun -------------------------------------------------------------------------

    def dryrun(self) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        rt, node = self.rt, self.node
        as_of_s = self.context.as_of_s
        assert as_of_s is not None
        # Only bars closed by as_of belong to the run.
        limit = Range(self.window.start, max(self.window.start, closed_end_at(node, as_of_s)))
        frames: list[pd.DataFrame] = []
        fingerprints: list[str] = []
        reasons: list[str] = []
        fresh: list[Range] = []
        try:
            snapshot = self.reader._storage(rt, self.tracker, lambda: self._snapshot_at(as_of_s))
            uncovered = snapshot.uncovered(self.window) if snapshot else [self.window]
            if snapshot is not None:
                frames.append(self._read_snapshot(snapshot, self.window))
                fingerprints += [s.fingerprint for s in snapshot.segments_overlapping(self.window)]
            wanted = [c for r in uncovered if (c := r.intersect(limit))]
            if wanted:
                fresh_frames, fresh, fresh_fps, why = self._artifactize(wanted)
                frames += fresh_frames
                fingerprints += fresh_fps
                reasons += why
        except SeamlessSLAExceeded as exc:
            have = _concat(frames, self.window.intersect(limit) or Range(limit.start, limit.start))
            return self._overrun(exc, "snapshot+artifacts", have)
        frame = _concat(frames, self.window.intersect(limit) or Range(limit.start, limit.start))
        still = subtract_ranges(uncovered, fresh)
        if still and self.strategy is Strategy.FAIL_FAST:
            raise self._missing_error(still, snapshot)
        ends = [r.end for r in fresh] + ([snapshot.as_of_s] if snapshot else [])
        watermark = min(max(ends), limit.end) if ends else None
        got = Assembled(
            frame, "snapshot+artifacts" if fresh else "snapshot", still, reasons,
            fingerprints, snapshot, self._segment_flags(fingerprints), as_of_s=watermark,
        )  # fmt: skip
        pending = [c for r in still if (c := r.intersect(limit))]
        if pending:
            got.partial = True
            got.reasons.append("not artifactized yet: " + ", ".join(str(r) for r in pending[:5]))
        if self.window.end > limit.end:
            got.partial = True
            got.reasons.append(
                f"bars after the run's as_of {iso_utc(as_of_s)} are not delivered "
                f"({Range(limit.end, self.window.end)})"
            )
        return self._result(got)

    def _snapshot_at(self, as_of_s: int) -> Snapshot | None:
        try:
            return self.rt.artifacts.resolve_snapshot(self.node, as_of_s)
        except SnapshotNotFound:
            latest = self.rt.artifacts.latest_snapshot(self.node)
            return latest if latest is not None and latest.as_of_s <= as_of_s else None

    def _artifactize(
        self, wanted: list[Range]
    ) -> tuple[list[pd.DataFrame], list[Range], list[str], list[str]]:
        """Publish the partitions of `wanted` from fresh bars (backfilled first when the
        strategy allows) and read them back from the artifact store: dry runs only use
        bars that exist as verified segments."""
        rt, node = self.rt, self.node
        reasons: list[str] = []
        if self.strategy in BACKFILLING:
            try:
                self._fill(wanted, "backfill_wait")
            except ExchangeUnavailable as exc:
                reasons.append(f"backfill failed: {exc}")
        span = Range(wanted[0].start, wanted[-1].end)
        partitions = partition_windows(rt.config, node, span)
        missing = self.reader._storage(
            rt, self.tracker, lambda: self.reader._missing(rt, node, span)
        )
        if missing:
            # Publishing would need an exchange fetch the strategy does not allow (or that
            # failed): publish only the partitions the hot store holds completely.
            partitions = [p for p in partitions if not any(p.intersect(m) for m in missing)]
        if not partitions:
            return [], [], [], reasons
        try:
            outcome: RunOutcome = self.reader._on_loop(
                rt, self.tracker, "backfill_wait",
                backfill(node, partitions, hot=rt.hot, artifacts=rt.artifacts,
                         client_factory=_no_client, settings=rt.pipeline),
            )  # fmt: skip
        except ExchangeUnavailable as exc:
            return [], [], [], [*reasons, _first_line(exc)]
        published = outcome.published
        if not published:
            return [], [], [], reasons
        fps = [p.fingerprint for p in published if p.fingerprint]
        windows = [p.window for p in published]

        def read_back() -> list[pd.DataFrame]:
            return [rt.artifacts.read_segment(node, fp, verify=True) for fp in fps]

        frames = self.reader._storage(rt, self.tracker, read_back)
        return frames, merge_ranges(windows), fps, reasons

    # -- live ---------------------------------------------------------------------------

    def live(self) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        rt, node, window = self.rt, self.node, self.window
        session = (self.context.world_id, str(node))
        with rt.state_lock:
            session_as_of = rt.session_as_of.get(session)
        if (
            self.context.as_of_s is not None
            and session_as_of is not None
            and self.context.as_of_s < session_as_of
        ):
            raise AsOfRegression(
                f"{node}: as_of {iso_utc(self.context.as_of_s)} is before "
                f"{iso_utc(session_as_of)}, which this live session already saw (world "
                f"{self.context.world_id}); live as_of only moves forward"
            )
        reasons: list[str] = []
        flags: Counter[str] = Counter(dict.fromkeys(FLAGS, 0))
        source = "hot_store"
        frame = empty_frame()
        now_s = self.reader._exchange_now_estimate(rt, node)
        try:
            # Storage first: a hung store costs no more than its own budget.
            frame = self._hot_frame()
            covered, gaps = self._hot_coverage()
            now_s, clock_reason = self._live_now()
            if clock_reason:
                reasons.append(clock_reason)
            closed = closed_end_at(node, now_s)
            target = window.intersect(Range(window.start, max(window.start, closed)))
            missing = self._missing_in(target, covered, gaps)
            if missing and self.strategy in BACKFILLING:
                # The live edge: bars after the newest stored one, in the newest partition.
                # With nothing stored there yet, everything is history (backfill_wait).
                newest = partition_windows(rt.config, node, Range(closed - 1, closed))[0]
                stored_end = covered[-1].end if covered else None
                edge_start = (
                    stored_end if stored_end is not None and stored_end >= newest.start else closed
                )
                history = _clip(missing, missing[0].start, edge_start)
                edge = _clip(missing, edge_start, missing[-1].end)
                edge_phase = "live_wait" if self.strategy is Strategy.SEAMLESS else "backfill_wait"
                filled = False
                for ranges, phase in ((history, "backfill_wait"), (edge, edge_phase)):
                    if not ranges:
                        continue
                    try:
                        report = self._fill(ranges, phase, known_missing=True, recheck=False)
                        flags.update(report.flags)
                        filled = True
                    except ExchangeUnavailable as exc:
                        reasons.append(f"exchange unavailable: {_first_line(exc)}")
                    except SeamlessSLAExceeded as exc:
                        if self.violation == "raise":
                            raise
                        reasons.append(f"{exc.phase} budget ran out: backfill cancelled")
                if filled:
                    source = "hot_store+backfill"
                    frame = self._hot_frame()
                    covered, gaps = self._hot_coverage()
                    missing = self._missing_in(target, covered, gaps)
        except SeamlessSLAExceeded as exc:
            return self._overrun(exc, source, frame, now_s, reasons)
        if missing and self.strategy is Strategy.FAIL_FAST:
            raise self._missing_error(missing, None)
        got = Assembled(frame, source, missing, reasons, flags=flags)
        if missing:
            got.partial = True
            got.reasons.append("missing closed bars: " + ", ".join(str(r) for r in missing[:5]))
        self._gate_lag(got, now_s)
        return self._result(got)

    def _live_now(self) -> tuple[float, str | None]:
        """The exchange's clock (one /time request under `live_wait`), else the last
        known offset from it."""
        rt, node = self.rt, self.node
        try:
            server_now = self.reader._on_loop(
                rt, self.tracker, "live_wait", self.reader._server_now(rt, node)
            )
        except (ExchangeUnavailable, SeamlessSLAExceeded) as exc:
            if isinstance(exc, SeamlessSLAExceeded) and self.violation == "raise":
                raise
            return self.reader._exchange_now_estimate(rt, node), (
                f"exchange clock unavailable ({_first_line(exc)}); lag measured on the last "
                "known clock offset"
            )
        with rt.state_lock:
            rt.clock_offset_s[node.exchange] = server_now - time.time()
        return float(server_now), None

    def _hot_frame(self) -> pd.DataFrame:
        rt, node, window = self.rt, self.node, self.window
        return self.reader._storage(rt, self.tracker, lambda: rt.hot.read_range(str(node), window))

    def _hot_coverage(self) -> tuple[list[Range], list[LedgerGap]]:
        rt, node, window = self.rt, self.node, self.window

        def coverage() -> tuple[list[Range], list[LedgerGap]]:
            covered = rt.hot.coverage(str(node), node.interval_s, window)
            return covered, rt.hot.ledger_gaps(str(node), window)

        return self.reader._storage(rt, self.tracker, coverage)

    def _missing_in(
        self, target: Range | None, covered: list[Range], gaps: list[LedgerGap]
    ) -> list[Range]:
        if target is None:
            return []
        node = self.node
        known = [g.range for g in gaps]
        return missing_ranges(
            covered, target, node.interval_s, known, origin_s=node.timeframe.origin_s
        )

    def _gate_lag(self, got: Assembled, now_s: float) -> None:
        """`now - data_end <= max_lag` for reads that reach the live edge, else HOLD."""
        rt, node = self.rt, self.node
        live_cfg = rt.config.domains.get("live")
        max_lag = self.context.max_lag
        if max_lag is None:
            max_lag = float(live_cfg.max_lag_sec) if live_cfg and live_cfg.max_lag_sec else 120.0
        ts = got.frame[TS].to_numpy()
        data_end = int(ts[-1]) + node.interval_s if len(ts) else None
        with rt.state_lock:
            previous = rt.session_as_of.get((self.context.world_id, str(node)))
            watermark = max(
                x for x in (previous, data_end, self.context.as_of_s, -1) if x is not None
            )
            if watermark >= 0:
                rt.session_as_of[(self.context.world_id, str(node))] = watermark
            if previous is not None and watermark > previous:
                rt.metrics["as_of_advancement_events"] += 1
        got.as_of_s = watermark if watermark >= 0 else None
        if self.window.end <= now_s - max_lag:
            return  # a historical window: freshness is not in question
        lag = now_s - data_end if data_end is not None else float("inf")
        got.staleness_s = round(lag, 3) if data_end is not None else None
        if lag <= max_lag:
            return
        allow_partial = bool(live_cfg.allow_partial) if live_cfg else False
        got.downgrade = (
            "PARTIAL_FILL" if allow_partial and self.strategy is Strategy.PARTIAL_FILL else "HOLD"
        )
        ends = iso_utc(data_end) if data_end is not None else "nowhere (no bars)"
        got.reasons.insert(
            0, f"live data ends at {ends}, {lag:.0f} s behind the exchange clock > max_lag "
            f"{max_lag:.0f} s",
        )  # fmt: skip

    # -- shared -------------------------------------------------------------------------

    def _fill(
        self, ranges: list[Range], phase: str, *, known_missing: bool = False, recheck: bool = True
    ) -> CoverageReport:
        """Fill `ranges` through the single flight under `phase`'s budget. `known_missing`:
        the ranges are what the store lacks (just computed), so it is not asked again."""
        span = Range(ranges[0].start, ranges[-1].end)
        deadline = time.monotonic() + self.tracker.timeout_s(phase)
        started = time.perf_counter()
        try:
            return self.reader._ensure(
                self.rt,
                self.node,
                span,
                deadline,
                phase,
                missing=ranges if known_missing else None,
                recheck=recheck,
            )
        except SeamlessSLAExceeded:
            limit = self.tracker.binding(phase)
            self.tracker.mark_exceeded(limit)
            raise SeamlessSLAExceeded(
                limit,
                self.tracker.budget.of(limit),
                (time.perf_counter() - started) * 1000,
                f"{phase} work cancelled",
            ) from None
        finally:
            self.tracker.record(phase, (time.perf_counter() - started) * 1000)

    def _overrun(
        self,
        exc: SeamlessSLAExceeded,
        source: str,
        frame: pd.DataFrame | None = None,
        now_s: float | None = None,
        reasons: Sequence[str] = (),
    ) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        """Raise, or return what the read has so far, flagged partial with the reason."""
        if self.violation == "raise":
            raise exc
        have = frame if frame is not None else empty_frame()
        got = Assembled(have, source, [], partial=True)
        delivered = "what it had" if len(have) else "nothing"
        got.reasons.append(
            f"{exc.phase} budget of {exc.budget_ms:.0f} ms ran out; the work was cancelled "
            f"and the read returns {delivered} ({len(have)} bars)"
        )
        got.reasons += reasons
        got.missing = subtract_ranges([self.window], _bars_span(have, self.node.interval_s))
        if self.context.domain is ExecutionDomain.LIVE and now_s is not None:
            self._gate_lag(got, now_s)
        return self._result(got)

    def _result(self, got: Assembled) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        node, window, ctx = self.node, self.window, self.context
        frame = got.frame
        ts = frame[TS].to_numpy()
        interval, origin = node.interval_s, node.timeframe.origin_s
        bounds = (int(ts[0]), int(ts[-1]) + interval) if len(ts) else None
        expected = window.bars(interval, origin_s=origin)
        ratio = round(len(ts) / expected, 6) if expected else 1.0
        reasons = list(got.reasons)
        partial = got.partial
        if ratio < ctx.min_coverage:
            message = f"coverage {ratio:.4f} is below min_coverage {ctx.min_coverage}"
            if self.strategy is Strategy.FAIL_FAST:
                keys = partition_keys(self.rt.config, node, got.missing)
                raise MissingPartitions(f"{node} {window}: {message}", keys, list(got.missing))
            partial = True
            reasons.append(message)
        downgrade = got.downgrade
        if partial and downgrade is None and ctx.domain is ExecutionDomain.LIVE:
            downgrade = "PARTIAL_FILL"
        if got.fingerprints:
            fingerprint = blend_fingerprint(
                str(node), interval, window, self.rt.pipeline.conformance_version, got.fingerprints
            )
        else:
            identity = FingerprintIdentity(
                str(node), interval, window, self.rt.pipeline.conformance_version
            )
            fingerprint = dataset_fingerprint(frame, identity)
        timings = self.tracker.timings()
        meta = SeamlessFetchMetadata(
            node_id=str(node),
            interval_s=interval,
            requested=window,
            world_id=ctx.world_id,
            execution_domain=ctx.domain.value,
            strategy=self.strategy.value,
            dataset_fingerprint=fingerprint,
            as_of=iso_utc(got.as_of_s) if got.as_of_s is not None else None,
            as_of_s=got.as_of_s,
            coverage_bounds=bounds,
            coverage_ratio=ratio,
            conformance_flags={k: int(got.flags.get(k, 0)) for k in FLAGS},
            sla=timings.as_dict(),
            sla_exceeded=timings.exceeded,
            source=got.source,
            snapshot_fingerprint=got.snapshot.fingerprint if got.snapshot else None,
            partial=partial,
            downgrade=downgrade,
            downgrade_reason="; ".join(reasons) if (reasons and (partial or downgrade)) else None,
            missing=tuple(got.missing),
            staleness_s=got.staleness_s,
            rows=len(frame),
        )
        return frame, meta


# -- helpers -------------------------------------------------------------------------------


def _clip(ranges: Sequence[Range], start: int, end: int) -> list[Range]:
    """The parts of `ranges` inside `[start, end)`."""
    if end <= start:
        return []
    bound = Range(start, end)
    return [c for r in ranges if (c := r.intersect(bound))]


def _bars_span(frame: pd.DataFrame, interval_s: int) -> list[Range]:
    ts = frame[TS].to_numpy()
    return [Range(int(ts[0]), int(ts[-1]) + interval_s)] if len(ts) else []


def _no_client() -> ExchangeClient:
    raise ExchangeUnavailable(
        "publishing fresh bars for a dry run needed an exchange fetch, which this "
        "strategy does not allow"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _concat(frames: Sequence[pd.DataFrame], window: Range) -> pd.DataFrame:
    """One canonical frame of `frames` clipped to `window`, one bar per ts."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame()
    if len(frames) == 1:
        frame = frames[0]
    else:
        frame = pd.concat(frames, ignore_index=True).sort_values(TS, kind="stable")
        frame = frame.drop_duplicates(TS, keep="last")
    ts = frame[TS].to_numpy()
    keep = (ts >= window.start) & (ts < window.end)
    if bool(keep.all()) and len(frames) == 1:
        return frame
    return pd.DataFrame({c: frame[c].to_numpy()[keep] for c in CANONICAL_COLUMNS})


def blend_fingerprint(
    node_id: str,
    interval_s: int,
    window: Range,
    conformance_version: str,
    segment_fingerprints: Sequence[str],
) -> str:
    """Fingerprint of a read served from segments: the window clipped out of the listed,
    verified (content-addressed) segments names exactly one frame, so hashing the
    identity with the ordered segment list is as strong as hashing the bars, and O(1)."""
    body = {
        "node_id": node_id,
        "interval_s": interval_s,
        "range": [window.start, window.end],
        "conformance_version": conformance_version,
        "segments": list(segment_fingerprints),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"{ALGO}:{hashlib.sha256(canonical).hexdigest()}"


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


def frame_bytes(frame: pd.DataFrame) -> bytes:
    """Canonical bytes of a frame (for byte-identity checks in tests and audits)."""
    return b"".join(np.ascontiguousarray(frame[c].to_numpy()).tobytes() for c in CANONICAL_COLUMNS)
