"""Snapshots: what a node's data was `as_of` a watermark, reproducible forever.

A snapshot is an immutable list, in time order, of the segment fingerprints that cover a
node up to `as_of` (the close time of its last stabilized bar). Its own fingerprint hashes
that list with the node's identity, so `(node_id, as_of)` names exactly one set of bars
even after partitions are restated: a restatement is a new segment, referenced by the next
snapshot only. Wall-clock publication times live in the snapshot log, never in here.

Pure values and functions: building, (de)serializing, resolving and diffing snapshots.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from .coverage import merge_ranges, subtract_ranges
from .fingerprint import ALGO
from .frame import TS, VALUE_COLUMNS, Range, iso_utc

SNAPSHOT_VERSION = 1


@dataclass(frozen=True, order=True)
class SnapshotSegment:
    """One partition's sealed segment as a snapshot references it."""

    range: Range
    fingerprint: str
    row_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.range.start,
            "end": self.range.end,
            "fingerprint": self.fingerprint,
            "row_count": self.row_count,
        }


@dataclass(frozen=True)
class Snapshot:
    """The segments covering `node_id` up to `as_of_s`, in time order."""

    node_id: str
    interval_s: int
    conformance_version: str
    as_of_s: int
    segments: tuple[SnapshotSegment, ...]

    def __post_init__(self) -> None:
        ranges = [s.range for s in self.segments]
        if ranges != sorted(ranges):
            raise ValueError(f"snapshot of {self.node_id} lists segments out of time order")
        for before, after in pairwise(ranges):
            if after.start < before.end:
                raise ValueError(
                    f"snapshot of {self.node_id} lists overlapping segments {before} and {after}"
                )
        if ranges and ranges[-1].end > self.as_of_s:
            raise ValueError(
                f"snapshot of {self.node_id} as of {iso_utc(self.as_of_s)} lists a segment "
                f"ending later, at {iso_utc(ranges[-1].end)}"
            )

    @property
    def as_of_iso(self) -> str:
        return iso_utc(self.as_of_s)

    @property
    def row_count(self) -> int:
        return sum(s.row_count for s in self.segments)

    @cached_property
    def fingerprint(self) -> str:
        """`sha256:<hex>` over the node identity, `as_of` and the ordered segment list."""
        return _hash_body(self._body())

    def segments_overlapping(self, window: Range) -> list[SnapshotSegment]:
        return [s for s in self.segments if s.range.intersect(window) is not None]

    def uncovered(self, window: Range) -> list[Range]:
        """Parts of `window` that no listed segment covers, including any part after
        `as_of` (bars the snapshot cannot vouch for)."""
        return subtract_ranges([window], merge_ranges(s.range for s in self.segments))

    def to_json(self) -> dict[str, Any]:
        """The snapshot manifest: its content plus the fingerprint of that content."""
        return {**self._body(), "fingerprint": self.fingerprint}

    def _body(self) -> dict[str, Any]:
        return {
            "snapshot_version": SNAPSHOT_VERSION,
            "node_id": self.node_id,
            "interval_s": self.interval_s,
            "conformance_version": self.conformance_version,
            "as_of": self.as_of_iso,
            "as_of_s": self.as_of_s,
            "segments": [s.to_json() for s in self.segments],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """Parse a snapshot manifest; ValueError when malformed or its fingerprint is not
        the hash of its content (a tampered or truncated manifest)."""
        try:
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
                    )
                    for s in data["segments"]
                ),
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


def build_snapshot(
    node_id: str,
    interval_s: int,
    conformance_version: str,
    segments: Iterable[SnapshotSegment],
    stable_end_s: int,
) -> Snapshot | None:
    """The snapshot of the given head segments that end by `stable_end_s`, or None.

    `as_of` is the end of the last listed segment: segments are sealed only once all their
    bars are stable, so that is the close time of the last stabilized bar they vouch for.
    """
    listed = tuple(sorted(s for s in segments if s.range.end <= stable_end_s))
    if not listed:
        return None
    return Snapshot(node_id, interval_s, conformance_version, listed[-1].range.end, listed)


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
