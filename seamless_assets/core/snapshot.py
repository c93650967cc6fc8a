"""Snapshots: commits of a node's published set, reproducible forever.

A snapshot is an immutable, write-once commit of the segments that make up a node, in time
order. Its `as_of` is the *commit instant* (epoch seconds), not the data watermark: the
blueprint allows "snapshot or commit instant", and only a commit instant can strictly
increase per node when nothing new closed but the set still changed (a repaired hole, a
restated partition). The data watermark (`watermark_s`: close of the last stabilized bar,
the end of the last listed segment) and the windows the snapshot lacks between the node's
history start and the watermark (`missing`) are recorded beside it.

Each listed segment carries the sha256 of its manifest bytes, so a manifest edited after
the commit is caught on read. The snapshot's own fingerprint hashes its whole body, so
`(node_id, as_of)` names exactly one set of bars. Wall-clock publication times live in the
snapshot log, never in here.

Version 1 snapshots (as_of = watermark, no manifest digests, no `missing`) still parse and
keep their fingerprints: `watermark_s = as_of_s`, `missing = ()`.

Pure values and functions: building, (de)serializing, resolving and diffing snapshots.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from .coverage import merge_ranges, subtract_ranges
from .fingerprint import ALGO
from .frame import TS, VALUE_COLUMNS, Range, iso_utc

SNAPSHOT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)


def manifest_digest(manifest_bytes: bytes) -> str:
    """Hex sha256 of a segment's manifest bytes, as a snapshot lists it."""
    return hashlib.sha256(manifest_bytes).hexdigest()


@dataclass(frozen=True, order=True)
class SnapshotSegment:
    """One partition's sealed segment as a snapshot references it (`manifest_sha256`:
    hex sha256 of its manifest bytes; None only in version 1 snapshots)."""

    range: Range
    fingerprint: str
    row_count: int
    manifest_sha256: str | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[Range, str]:
        return (self.range, self.fingerprint)

    def to_json(self, version: int = SNAPSHOT_VERSION) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": self.range.start,
            "end": self.range.end,
            "fingerprint": self.fingerprint,
            "row_count": self.row_count,
        }
        if version >= 2:
            out["manifest_sha256"] = self.manifest_sha256
        return out


@dataclass(frozen=True)
class Snapshot:
    """The segments committed for `node_id` at `as_of_s`, in time order.

    `watermark_s` defaults to the end of the last listed segment (`as_of_s` in version 1).
    """

    node_id: str
    interval_s: int
    conformance_version: str
    as_of_s: int
    segments: tuple[SnapshotSegment, ...]
    watermark_s: int = -1
    missing: tuple[Range, ...] = ()
    version: int = SNAPSHOT_VERSION

    def __post_init__(self) -> None:
        if self.version not in SUPPORTED_VERSIONS:
            raise ValueError(f"snapshot version {self.version} is not one of {SUPPORTED_VERSIONS}")
        if self.watermark_s == -1:
            watermark = self.as_of_s if self.version == 1 or not self.segments else None
            if watermark is None:
                watermark = self.segments[-1].range.end
            object.__setattr__(self, "watermark_s", watermark)
        ranges = [s.range for s in self.segments]
        if ranges != sorted(ranges):
            raise ValueError(f"snapshot of {self.node_id} lists segments out of time order")
        for before, after in pairwise(ranges):
            if after.start < before.end:
                raise ValueError(
                    f"snapshot of {self.node_id} lists overlapping segments {before} and {after}"
                )
        if ranges and ranges[-1].end > self.watermark_s:
            raise ValueError(
                f"snapshot of {self.node_id} with watermark {iso_utc(self.watermark_s)} lists "
                f"a segment ending later, at {iso_utc(ranges[-1].end)}"
            )
        if self.watermark_s > self.as_of_s:
            raise ValueError(
                f"snapshot of {self.node_id} committed at {self.as_of_iso} lists a segment "
                f"ending later, at {iso_utc(self.watermark_s)} (a commit cannot vouch for "
                "bars that closed after it)"
            )
        if self.version >= 2 and any(s.manifest_sha256 is None for s in self.segments):
            raise ValueError(f"a version 2 snapshot of {self.node_id} lists manifest digests")

    @property
    def as_of_iso(self) -> str:
        return iso_utc(self.as_of_s)

    @property
    def watermark_iso(self) -> str:
        return iso_utc(self.watermark_s)

    @property
    def row_count(self) -> int:
        return sum(s.row_count for s in self.segments)

    @property
    def listed(self) -> list[tuple[Range, str]]:
        """The published set this snapshot commits: `(partition, fingerprint)` in order."""
        return [s.key for s in self.segments]

    @cached_property
    def fingerprint(self) -> str:
        """`sha256:<hex>` over the whole body: identity, as_of, watermark, missing windows
        and the ordered segment list with manifest digests."""
        return _hash_body(self._body())

    def segments_overlapping(self, window: Range) -> list[SnapshotSegment]:
        return [s for s in self.segments if s.range.intersect(window) is not None]

    @cached_property
    def covered(self) -> tuple[Range, ...]:
        """The merged spans of the listed segments."""
        return tuple(merge_ranges(s.range for s in self.segments))

    def uncovered(self, window: Range) -> list[Range]:
        """Parts of `window` that no listed segment covers, including any part after the
        watermark (bars the snapshot cannot vouch for)."""
        return subtract_ranges([window], list(self.covered))

    def to_json(self) -> dict[str, Any]:
        """The snapshot manifest: its content plus the fingerprint of that content."""
        return {**self._body(), "fingerprint": self.fingerprint}

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "snapshot_version": self.version,
            "node_id": self.node_id,
            "interval_s": self.interval_s,
            "conformance_version": self.conformance_version,
            "as_of": self.as_of_iso,
            "as_of_s": self.as_of_s,
            "segments": [s.to_json(self.version) for s in self.segments],
        }
        if self.version >= 2:
            body["watermark"] = self.watermark_iso
            body["watermark_s"] = self.watermark_s
            body["missing"] = [r.to_json() for r in self.missing]
        return body

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """Parse a snapshot manifest (version 1 or 2); ValueError when malformed or its
        fingerprint is not the hash of its content (a tampered or truncated manifest)."""
        try:
            version = int(data.get("snapshot_version", 1))
            v2 = version >= 2
            snapshot = cls(
                node_id=str(data["node_id"]),
                interval_s=int(data["interval_s"]),
                conformance_version=str(data["conformance_version"]),
                as_of_s=int(data["as_of_s"]),
                segments=tuple(
                    SnapshotSegment(
                        Range(int(s["start"]), int(s["end"])),
                        str(s["fingerprint"]),
                        int(s["row_count"]),
                        str(s["manifest_sha256"]) if v2 else None,
                    )
                    for s in data["segments"]
                ),
                watermark_s=int(data["watermark_s"]) if v2 else int(data["as_of_s"]),
                missing=tuple(Range(int(r["start"]), int(r["end"])) for r in data["missing"])
                if v2
                else (),
                version=version,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"snapshot manifest is missing a field: {exc!r}") from exc
        if data.get("fingerprint") != snapshot.fingerprint:
            raise ValueError(
                f"snapshot manifest claims {data.get('fingerprint')} but its content hashes "
                f"to {snapshot.fingerprint}"
            )
        return snapshot


def _hash_body(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"{ALGO}:{hashlib.sha256(canonical).hexdigest()}"


@dataclass(frozen=True, order=True)
class SnapshotLogEntry:
    """One publication in a node's append-only snapshot log (wall clock lives here)."""

    as_of_s: int
    fingerprint: str
    published_at_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": iso_utc(self.as_of_s),
            "as_of_s": self.as_of_s,
            "fingerprint": self.fingerprint,
            "published_at": datetime.fromtimestamp(self.published_at_s, tz=UTC).isoformat(),
            "published_at_s": self.published_at_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SnapshotLogEntry:
        return cls(int(data["as_of_s"]), str(data["fingerprint"]), float(data["published_at_s"]))


def published_set(heads: Iterable[tuple[Range, str]], stable_end_s: int) -> list[tuple[Range, str]]:
    """The heads a snapshot may list: partitions whose window ends by `stable_end_s`."""
    return sorted((r, fp) for r, fp in heads if r.end <= stable_end_s)


def unsnapshotted(previous: Snapshot | None, published: Iterable[tuple[Range, str]]) -> list[Range]:
    """Published partitions that `previous` lacks or lists with another segment."""
    listed = set(previous.listed) if previous is not None else set()
    return [r for r, fp in published if (r, fp) not in listed]


def commit_as_of(now_s: float, previous: Snapshot | None) -> int:
    """The as_of of the next commit: the commit instant, kept strictly increasing."""
    return max(int(now_s), previous.as_of_s + 1) if previous is not None else int(now_s)


def build_snapshot(
    node_id: str,
    interval_s: int,
    conformance_version: str,
    segments: Iterable[SnapshotSegment],
    as_of_s: int,
    history_start_s: int | None = None,
) -> Snapshot | None:
    """The commit of `segments` at `as_of_s`, or None when there is nothing to list.

    The watermark is the end of the last listed segment (segments are sealed only once all
    their bars are stable, so that is the close of the last stabilized bar they vouch
    for); `missing` is what no segment covers between `history_start_s` (the node's first
    bar; else its first segment) and the watermark.
    """
    listed = tuple(sorted(segments))
    if not listed:
        return None
    watermark = listed[-1].range.end
    start = listed[0].range.start if history_start_s is None else history_start_s
    missing = (
        subtract_ranges([Range(start, watermark)], merge_ranges(s.range for s in listed))
        if start < watermark
        else []
    )
    return Snapshot(
        node_id, interval_s, conformance_version, as_of_s, listed, watermark, tuple(missing)
    )


def parse_as_of(value: str | int | float | datetime) -> int:
    """`as_of` as epoch seconds from ISO-8601 (`Z` or offset), a datetime or epoch seconds.

    A naive datetime or ISO string without offset is taken as UTC.
    """
    if isinstance(value, bool):
        raise ValueError(f"as_of must be ISO-8601, a datetime or epoch seconds, not {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(
                f"as_of {value!r} is not ISO-8601 (e.g. 2024-03-01T00:00:00Z) or epoch seconds"
            ) from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp())
    raise ValueError(f"as_of must be ISO-8601, a datetime or epoch seconds, not {value!r}")


def resolve_as_of(as_ofs: Sequence[int], as_of_s: int) -> int | None:
    """The greatest of the sorted `as_ofs` that is `<= as_of_s`, or None if there is none."""
    index = bisect_right(as_ofs, as_of_s)
    return as_ofs[index - 1] if index else None


@dataclass(frozen=True, order=True)
class SegmentChange:
    """A partition whose segment differs between two snapshots (None: not listed)."""

    range: Range
    before: str | None
    after: str | None


def diff_segments(before: Snapshot, after: Snapshot) -> list[SegmentChange]:
    """Partitions listed with different (or no) segments in the two snapshots."""
    old = {s.range: s.fingerprint for s in before.segments}
    new = {s.range: s.fingerprint for s in after.segments}
    return sorted(
        SegmentChange(r, old.get(r), new.get(r))
        for r in old.keys() | new.keys()
        if old.get(r) != new.get(r)
    )


DIFF_KINDS = ("added", "removed", "changed")


def diff_bars(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Bars that differ between two canonical frames, one row per ts.

    Columns: `ts`, `change` (added | removed | changed), then `<col>_before` and
    `<col>_after` for every value column. NaN equals NaN (as in the fingerprint).
    """
    merged = before.merge(after, on=TS, how="outer", suffixes=("_before", "_after"), sort=True)
    in_before = merged[TS].isin(before[TS]).to_numpy()
    in_after = merged[TS].isin(after[TS]).to_numpy()
    differs = np.zeros(len(merged), dtype=bool)
    for column in VALUE_COLUMNS:
        a = merged[f"{column}_before"].to_numpy(dtype=np.float64)
        b = merged[f"{column}_after"].to_numpy(dtype=np.float64)
        differs |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    change = np.where(~in_before, "added", np.where(~in_after, "removed", "changed"))
    keep = ~(in_before & in_after) | differs
    out = merged[keep].reset_index(drop=True)
    out.insert(1, "change", change[keep])
    ordered = [TS, "change"] + [
        f"{c}_{side}" for c in VALUE_COLUMNS for side in ("before", "after")
    ]
    return out[ordered]
