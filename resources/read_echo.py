"""What a read gathered and the governance echo it returns: `Assembled` (the frame, its
sources, what is missing and why) becomes `SeamlessFetchMetadata`. No I/O."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from seamless_assets.core.conformance import FLAGS
from seamless_assets.core.fingerprint import ALGO, FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import CANONICAL_COLUMNS, TS, Range, empty_frame, iso_utc
from seamless_assets.core.read_context import (
    ComputeContext,
    Downgrade,
    ExecutionDomain,
    SeamlessFetchMetadata,
    Strategy,
)
from seamless_assets.core.sla import PhaseTimings
from seamless_assets.core.snapshot import Snapshot
from seamless_assets.nodes import NodeId


@dataclass(frozen=True)
class ReadRequest:
    """One fetch: what is read, for whom, how."""

    node: NodeId
    window: Range
    context: ComputeContext
    strategy: Strategy
    conformance_version: str


@dataclass
class Assembled:
    """What a domain path gathered so far (a breach returns this much, flagged)."""

    _frame: pd.DataFrame | None = None  # `frame`: no bars yet until a path sets it
    source: str = "snapshot"
    missing: list[Range] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)  # segments behind the frame
    snapshot: Snapshot | None = None
    flags: Counter[str] = field(default_factory=Counter)
    as_of_s: int | None = None
    downgrade: Downgrade | None = None
    staleness_s: float | None = None
    partial: bool = False

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:  # built on demand: a read that delivers bars never needs it
            self._frame = empty_frame()
        return self._frame

    @frame.setter
    def frame(self, value: pd.DataFrame) -> None:
        self._frame = value


def echo(
    request: ReadRequest, got: Assembled, timings: PhaseTimings, *, coverage_shortfall: bool
) -> SeamlessFetchMetadata:
    """The metadata of a read; `coverage_shortfall`: it delivered less than min_coverage
    (the caller decided it is returned, flagged partial)."""
    node, window, ctx = request.node, request.window, request.context
    frame = got.frame
    reasons = list(got.reasons)
    partial = got.partial or coverage_shortfall
    ratio = coverage_ratio(node, window, frame)
    if coverage_shortfall:
        reasons.append(f"coverage {ratio:.4f} is below min_coverage {ctx.min_coverage}")
    downgrade = got.downgrade
    if partial and downgrade is None and ctx.domain is ExecutionDomain.LIVE:
        downgrade = "PARTIAL_FILL"
    interval = node.interval_s
    version = request.conformance_version
    if got.fingerprints:
        fingerprint = blend_fingerprint(str(node), interval, window, version, got.fingerprints)
    else:
        identity = FingerprintIdentity(str(node), interval, window, version)
        fingerprint = dataset_fingerprint(frame, identity)
    ts = frame[TS].to_numpy()
    return SeamlessFetchMetadata(
        node_id=str(node),
        interval_s=interval,
        requested=window,
        world_id=ctx.world_id,
        execution_domain=ctx.domain.value,
        strategy=request.strategy.value,
        dataset_fingerprint=fingerprint,
        as_of=iso_utc(got.as_of_s) if got.as_of_s is not None else None,
        as_of_s=got.as_of_s,
        coverage_bounds=(int(ts[0]), int(ts[-1]) + interval) if len(ts) else None,
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


def coverage_ratio(node: NodeId, window: Range, frame: pd.DataFrame) -> float:
    expected = window.bars(node.interval_s, origin_s=node.timeframe.origin_s)
    return round(len(frame) / expected, 6) if expected else 1.0


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


def frame_bytes(frame: pd.DataFrame) -> bytes:
    """Canonical bytes of a frame (for byte-identity checks in tests and audits)."""
    return b"".join(np.ascontiguousarray(frame[c].to_numpy()).tobytes() for c in CANONICAL_COLUMNS)


def concat(frames: Sequence[pd.DataFrame], window: Range) -> pd.DataFrame:
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


def bars_span(frame: pd.DataFrame, interval_s: int) -> list[Range]:
    ts = frame[TS].to_numpy()
    return [Range(int(ts[0]), int(ts[-1]) + interval_s)] if len(ts) else []


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
