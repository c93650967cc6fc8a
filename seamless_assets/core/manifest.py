"""Segment manifests: a pure function of the bars, the ledger of their window and identity.

`build_manifest` derives every field from three inputs only: the segment's canonical
frame, the ledger for its window (confirmed-empty gaps with reasons, and the conformance
events of `core.flag_ledger`) and its identity. Nothing from the run that produced it
(what was fetched, when, in which order) enters, so any sequence of crashes and reruns
that ends with the same bars and ledger writes the same bytes.

The manifest carries its ledger section (`gaps`, `conformance.events`), so
`manifest_problems` can recompute every derivable field from the segment and the manifest
alone: identity and fingerprint, `row_count`, `range`, `interval_s`, `coverage` (bounds,
expected_bars, ratio, completeness, missing) and every flag count.

Flag counts (manifest_version 2):
  * a row-level flag (`duplicate_ts`, `invalid_timestamp`, `ohlc_inconsistent`, ...)
    counts the ledger's events of that flag about bars of the window;
  * `gap` counts the window's bars that hold no row, except those the ledger places
    before the node's first bar (reason `before_listing`): a bar the exchange confirmed
    empty after listing is a gap, and so is one still missing.

Provenance (manifest_version 3): `provenance.bars` counts the segment's bars per source
(`core.provenance`: rest, archive with its checksum verdict, trades), derived from the
provenance events of the ledger, which the manifest carries as `provenance.events`.
Version 2 manifests (no provenance: every bar came over REST) still read and verify.

Version 1 manifests (flags counted from rows fetched in the producing run, no events,
no `origin_s`) still read and verify: everything but the flag counts is checked, since
the counts of a v1 manifest cannot be proven from what it carries.

Segments are content-addressed by their bars (`core.fingerprint`) and sealed once: when a
later refetch returns the same bars with other findings (a duplicate no longer sent), the
ledger changes but the sealed segment keeps the manifest it was sealed with, which stays
consistent with its own ledger section. A restated partition (other bars) gets a new
segment whose manifest states the current ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .conformance import FLAGS, GAP
from .coverage import (
    REASON_BEFORE_LISTING,
    LedgerGap,
    bar_count,
    completeness_ratio,
    coverage_ratio,
    merge_ranges,
    missing_ranges,
    ranges_from_timestamps,
    subtract_ranges,
)
from .fingerprint import FingerprintIdentity, dataset_fingerprint
from .flag_ledger import FlagEvent, events_in, flag_counts, merge_events
from .frame import CANONICAL_COLUMNS, CANONICAL_DTYPES, TS, Range, iso_utc
from .provenance import bars_by_source, is_provenance

MANIFEST_VERSION = 3
_ABSENT = object()
READABLE_VERSIONS = (1, 2, 3)
RATIO_DIGITS = 6
FORMAT = {"file": "data.parquet", "type": "parquet", "compression": "zstd"}


@dataclass(frozen=True)
class ManifestIdentity:
    """Everything besides bars and ledger that a manifest states (no wall clock)."""

    node_id: str
    exchange: str
    symbol: str
    timeframe: str
    interval_s: int
    origin_s: int
    window: Range
    conformance_version: str
    stabilization_bars: int
    producer: str

    def fingerprint_identity(self) -> FingerprintIdentity:
        return FingerprintIdentity(
            node_id=self.node_id,
            interval_s=self.interval_s,
            range=self.window,
            conformance_version=self.conformance_version,
        )


@dataclass(frozen=True)
class SegmentCoverage:
    """Coverage of one window by its bars and ledger gaps."""

    row_count: int
    bounds: tuple[int, int] | None
    expected_bars: int
    ratio: float
    completeness: float
    missing: tuple[Range, ...]
    gap_bars: int


def segment_coverage(
    ts: np.ndarray, window: Range, interval_s: int, origin_s: int, gaps: Sequence[LedgerGap]
) -> SegmentCoverage:
    """Coverage of `window` by bars opening at `ts` (sorted) and ledger `gaps` (clipped)."""
    expected = window.bars(interval_s, origin_s=origin_s)
    if _every_slot(ts, window, interval_s, origin_s, expected):
        # the usual segment, a bar in every slot: what the general reckoning below gives
        # for it (nothing missing, no gap, whatever the ledger says), without reckoning
        return SegmentCoverage(
            row_count=expected,
            bounds=(int(ts[0]), int(ts[-1]) + interval_s),
            expected_bars=expected,
            ratio=1.0,
            completeness=1.0,
            missing=(),
            gap_bars=0,
        )
    covered = ranges_from_timestamps(ts, interval_s)
    known = [g.range for g in gaps]
    before_listing = [g.range for g in gaps if g.reason == REASON_BEFORE_LISTING]
    unlisted_empty = bar_count(
        subtract_ranges(before_listing, covered), interval_s, origin_s=origin_s
    )
    return SegmentCoverage(
        row_count=len(ts),
        bounds=(int(ts[0]), int(ts[-1]) + interval_s) if len(ts) else None,
        expected_bars=expected,
        ratio=coverage_ratio(covered, window, interval_s, origin_s=origin_s),
        completeness=completeness_ratio(covered, known, window, interval_s, origin_s=origin_s),
        missing=tuple(missing_ranges(covered, window, interval_s, known, origin_s=origin_s)),
        gap_bars=max(0, expected - len(ts) - unlisted_empty),
    )


def _every_slot(
    ts: np.ndarray, window: Range, interval_s: int, origin_s: int, expected: int
) -> bool:
    """Whether `ts` are exactly the window's slots `origin_s + k * interval_s`, in order."""
    if expected == 0 or len(ts) != expected:
        return False
    first = window.first_slot(interval_s, origin_s=origin_s)
    return (
        int(ts[0]) == first
        and int(ts[-1]) == first + (expected - 1) * interval_s
        and bool(np.all(np.diff(ts) == interval_s))
    )


def clip_ledger(gaps: Iterable[LedgerGap], window: Range) -> tuple[LedgerGap, ...]:
    """Ledger gaps overlapping `window`, clipped to it, same-reason pieces that overlap or
    touch merged, sorted: one canonical form of the window's ledger, however recorded."""
    by_reason: dict[str, list[Range]] = {}
    for gap in gaps:
        if (clipped := gap.range.intersect(window)) is not None and not clipped.empty:
            by_reason.setdefault(gap.reason, []).append(clipped)
    merged = (LedgerGap(r, reason) for reason, rs in by_reason.items() for r in merge_ranges(rs))
    return tuple(sorted(merged))


def segment_flags(
    coverage: SegmentCoverage, events: Iterable[FlagEvent], flags: Iterable[str] = FLAGS
) -> dict[str, int]:
    """Flag counts of a segment: events per flag, `gap` from its coverage (provenance
    events are not conformance findings: `core.provenance`)."""
    counts = flag_counts((e for e in events if not is_provenance(e)), flags)
    counts[GAP] = coverage.gap_bars
    return counts


def build_manifest(
    identity: ManifestIdentity,
    frame: pd.DataFrame,
    gaps: Iterable[LedgerGap],
    events: Iterable[FlagEvent],
) -> dict[str, Any]:
    """The manifest of the segment holding `frame` (canonical, inside `identity.window`).

    `gaps` and `events` may be the node's whole ledger: only what concerns the window is
    kept (gaps clipped to it, events about its bars).
    """
    window, interval, origin = identity.window, identity.interval_s, identity.origin_s
    ledger = clip_ledger(gaps, window)
    own_events = merge_events(events_in(events, window))
    sourced = [e for e in own_events if is_provenance(e)]
    ts = frame[TS].to_numpy(dtype=np.int64)
    cov = segment_coverage(ts, window, interval, origin, ledger)
    return {
        "manifest_version": MANIFEST_VERSION,
        "fingerprint": dataset_fingerprint(frame, identity.fingerprint_identity()),
        "as_of": iso_utc(window.end),
        "node_id": identity.node_id,
        "exchange": identity.exchange,
        "symbol": identity.symbol,
        "timeframe": identity.timeframe,
        "interval_s": interval,
        "origin_s": origin,
        "range": window.to_json(),
        "row_count": cov.row_count,
        "columns": [[c, CANONICAL_DTYPES[c]] for c in CANONICAL_COLUMNS],
        "format": dict(FORMAT),
        "conformance": {
            "version": identity.conformance_version,
            "flags": segment_flags(cov, own_events),
            "events": [e.to_json() for e in own_events if not is_provenance(e)],
        },
        "provenance": {
            "bars": bars_by_source(sourced, cov.row_count),
            "events": [e.to_json() for e in sourced],
        },
        "coverage": _coverage_json(cov),
        "gaps": [{**g.range.to_json(), "reason": g.reason} for g in ledger],
        "stabilization_bars": identity.stabilization_bars,
        "producer": {
            "identity": identity.producer,
            "exchange": identity.exchange,
            "source": "ccxt",
        },
    }


def _coverage_json(cov: SegmentCoverage) -> dict[str, Any]:
    return {
        "bounds": list(cov.bounds) if cov.bounds else None,
        "expected_bars": cov.expected_bars,
        "ratio": round(cov.ratio, RATIO_DIGITS),
        "completeness": round(cov.completeness, RATIO_DIGITS),
        "missing": [r.to_json() for r in cov.missing],
    }


# -- verification -----------------------------------------------------------------------------


def manifest_problems(
    manifest: Mapping[str, Any], frame: pd.DataFrame, *, check_fingerprint: bool = True
) -> list[str]:
    """Every field derivable from the segment's `frame` and the manifest's own ledger
    section that disagrees with what the manifest states; [] when consistent.

    `check_fingerprint=False` skips re-hashing the bars (for callers that just did).
    """
    try:
        parsed = _parse(manifest)
    except (KeyError, TypeError, ValueError) as exc:
        return [f"manifest is malformed: {exc!r}"]
    version, identity, gaps, events = parsed
    window, interval, origin = identity.window, identity.interval_s, identity.origin_s
    problems: list[str] = []

    def differs(field: str, stated: object, derived: object) -> None:
        if stated is _ABSENT:  # v1 manifests may lack a field: judge only what is stated
            if version >= 2:
                problems.append(f"{field}: missing from a version {version} manifest")
        elif stated != derived:
            problems.append(f"{field}: manifest says {stated!r}, the segment gives {derived!r}")

    ts = frame[TS].to_numpy(dtype=np.int64) if TS in frame.columns else np.empty(0, np.int64)
    columns = manifest.get("columns", _ABSENT)
    differs(
        "columns", columns if columns is _ABSENT else [list(c) for c in columns], _columns(frame)
    )
    if len(ts):
        if ts[0] < window.start or ts[-1] >= window.end:
            problems.append(f"range: bars from {int(ts[0])} to {int(ts[-1])} outside {window}")
        if bool(np.any((ts - origin) % interval)):
            problems.append(f"interval_s: bars off the grid {origin} + k*{interval}")
        if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
            problems.append("range: bar open times are not strictly increasing")
    parts = [manifest.get(k, _ABSENT) for k in ("exchange", "symbol", "timeframe")]
    if _ABSENT not in parts or version >= 2:
        kind = identity.node_id.partition(":")[0]  # ohlcv or mark: in the fingerprint too
        differs("node_id", identity.node_id, f"{kind}:" + ":".join(map(str, parts)))
    differs("as_of", manifest.get("as_of", _ABSENT), iso_utc(window.end))
    if check_fingerprint and not problems:
        derived = dataset_fingerprint(frame, identity.fingerprint_identity())
        differs("fingerprint", manifest.get("fingerprint"), derived)
    for gap in gaps:
        if gap.range.intersect(window) != gap.range:
            problems.append(f"gaps: {gap.range} lies outside the segment's range {window}")
    cov = segment_coverage(ts, window, interval, origin, gaps)
    differs("row_count", manifest.get("row_count", _ABSENT), cov.row_count)
    stated = manifest.get("coverage") or {}
    for key, value in _coverage_json(cov).items():
        differs(f"coverage.{key}", stated.get(key, _ABSENT), value)
    if version >= 2:
        outside = [e for e in events if not window.start <= e.ts < window.end]
        if outside:
            problems.append(
                f"conformance.events: {len(outside)} outside {window}, e.g. {outside[0]}"
            )
        stated_flags = dict(manifest["conformance"].get("flags") or {})
        derived_flags = segment_flags(cov, events, stated_flags)
        for flag in sorted(set(stated_flags) | set(derived_flags)):
            differs(f"conformance.flags.{flag}", stated_flags.get(flag), derived_flags.get(flag))
    if version >= 3:
        sourced = [e for e in events if is_provenance(e)]
        stated_sources = (manifest.get("provenance") or {}).get("bars", _ABSENT)
        differs("provenance.bars", stated_sources, bars_by_source(sourced, cov.row_count))
    return problems


def _parse(
    manifest: Mapping[str, Any],
) -> tuple[int, ManifestIdentity, tuple[LedgerGap, ...], list[FlagEvent]]:
    version = manifest.get("manifest_version", 1)
    if version not in READABLE_VERSIONS:
        raise ValueError(f"manifest_version {version!r} is not one of {READABLE_VERSIONS}")
    window = Range(int(manifest["range"]["start"]), int(manifest["range"]["end"]))
    interval = int(manifest["interval_s"])
    if interval <= 0:
        raise ValueError(f"interval_s must be positive, got {interval}")
    # v1 did not record the grid origin; partitions start on the grid, so it is start mod interval.
    origin = int(manifest["origin_s"]) if version >= 2 else window.start % interval
    identity = ManifestIdentity(
        node_id=str(manifest["node_id"]),
        exchange=str(manifest.get("exchange")),
        symbol=str(manifest.get("symbol")),
        timeframe=str(manifest.get("timeframe")),
        interval_s=interval,
        origin_s=origin,
        window=window,
        conformance_version=str(manifest["conformance"]["version"]),
        stabilization_bars=int(manifest.get("stabilization_bars", 0)),
        producer=str((manifest.get("producer") or {}).get("identity")),
    )
    gaps = tuple(
        sorted(
            LedgerGap(Range(int(g["start"]), int(g["end"])), str(g["reason"]))
            for g in manifest.get("gaps") or []
        )
    )
    raw_events = list(manifest["conformance"].get("events") or []) if version >= 2 else []
    if version >= 3:
        raw_events += (manifest.get("provenance") or {}).get("events") or []
    events = [FlagEvent.from_json(item) for item in raw_events]
    return int(version), identity, gaps, events


def _columns(frame: pd.DataFrame) -> list[list[str]]:
    return [[str(c), str(frame[c].dtype)] for c in frame.columns]
