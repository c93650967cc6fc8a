"""Publishing, resolving and reading a node's snapshots (see `core.snapshot`), for nodes of
either kind: bars (`snapshots.py`) and events (`event_segments.py`).

Snapshots are write-once and pin segment fingerprints, so a snapshot resolves to the same
rows forever; the history is append-only, in strictly increasing `as_of`.
"""

from __future__ import annotations

import json

import pandas as pd

from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.core.snapshot import (
    Snapshot,
    SnapshotLogEntry,
    build_snapshot,
    commit_as_of,
    published_set,
    resolve_as_of,
    unsnapshotted,
)
from seamless_assets.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    SnapshotNotFound,
    SnapshotRegression,
    WriteOnceViolation,
)

from .codec import encode_manifest
from .layout import SNAPSHOT_LOG_NAME, NodeT
from .listed import check_listed_segment, vet_new_segment
from .partitions import IdentityT, LoadedSegment, PartitionStore


class SnapshotHistory(PartitionStore[NodeT, IdentityT]):
    """A node's append-only snapshot history over its segments."""

    # What a SnapshotNotFound message tells to do ({node} is the node): with no snapshot
    # yet, and for an as_of after the newest one.
    NO_SNAPSHOT_FIX = "publish its partitions and commit one"
    LATER_AS_OF_FIX = "pin an as_of at or before it, or commit a new one"

    def publish_snapshot(self, node: NodeT, snapshot: Snapshot, published_at_s: float) -> bool:
        """Publish `snapshot` write-once; True if this call published it, False if it was
        already published. Every listed segment must be sealed (ArtifactNotFound). Raises
        SnapshotRegression when a later `as_of` is already published, WriteOnceViolation
        when another snapshot holds this `as_of`."""
        if snapshot.node_id != str(node) or snapshot.interval_s != node.interval_s:
            raise ValueError(
                f"snapshot of {snapshot.node_id} every {snapshot.interval_s}s cannot be "
                f"published under {node} (every {node.interval_s}s)"
            )
        as_ofs = self.snapshot_as_ofs(node)
        if as_ofs and as_ofs[-1] > snapshot.as_of_s:
            raise SnapshotRegression(
                f"{node}: as_of {snapshot.as_of_iso} is before the published "
                f"{iso_utc(as_ofs[-1])}; snapshot history is append-only"
            )
        sealed = self._map(lambda s: self._is_sealed(node, s.fingerprint), snapshot.segments)
        unsealed = [s for s, ok in zip(snapshot.segments, sealed, strict=True) if not ok]
        if unsealed:
            raise ArtifactNotFound(
                f"{node}: snapshot lists {len(unsealed)} segment(s) that are not sealed, first "
                f"{unsealed[0].fingerprint} for {unsealed[0].range}; publish them first"
            )
        key = self._snapshot_key(node, snapshot.as_of_s)
        data = encode_manifest(snapshot.to_json())
        if not self.blobs.put_if_absent(key, data) and self.blobs.get(key) != data:
            raise WriteOnceViolation(
                f"{self.blobs.uri(key)} already holds another snapshot as of "
                f"{snapshot.as_of_iso}; snapshots are immutable, publish at a later as_of"
            )
        entry = SnapshotLogEntry(snapshot.as_of_s, snapshot.fingerprint, published_at_s)
        log_key = self._snapshot_log_key(node, snapshot.as_of_s)
        return self.blobs.put_if_absent(log_key, encode_manifest(entry.to_json()))

    def snapshot_as_ofs(self, node: NodeT) -> list[int]:
        """`as_of` of every published snapshot, oldest first: one listing of the log's key
        names, no reads (resolving an `as_of` needs nothing more)."""
        prefix = f"{self.segment_prefix(node)}/snapshot_log/"
        names = (SNAPSHOT_LOG_NAME.match(key[len(prefix) :]) for key in self.blobs.list(prefix))
        return sorted(int(match["as_of"]) for match in names if match)

    def snapshot_log(self, node: NodeT) -> list[SnapshotLogEntry]:
        """Every published snapshot of the node, oldest first (append-only)."""
        return self._map(lambda as_of_s: self._log_entry(node, as_of_s), self.snapshot_as_ofs(node))

    def _log_entry(self, node: NodeT, as_of_s: int) -> SnapshotLogEntry:
        key = self._snapshot_log_key(node, as_of_s)
        try:
            return SnapshotLogEntry.from_json(json.loads(self.blobs.get(key) or b""))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactIntegrityError(
                f"{self.blobs.uri(key)} is not a snapshot log entry: {exc}"
            ) from exc

    def read_snapshot(self, node: NodeT, entry: SnapshotLogEntry) -> Snapshot:
        """The snapshot a log entry names, proven to hash to the entry's fingerprint."""
        key = self._snapshot_key(node, entry.as_of_s)
        data = self.blobs.get(key)
        if data is None:
            raise ArtifactIntegrityError(
                f"{self.blobs.uri(key)} is missing although the snapshot log lists it"
            )
        try:
            snapshot = Snapshot.from_json(json.loads(data))
        except ValueError as exc:
            raise ArtifactIntegrityError(f"{self.blobs.uri(key)}: {exc}") from exc
        if snapshot.fingerprint != entry.fingerprint or snapshot.node_id != str(node):
            raise ArtifactIntegrityError(
                f"{self.blobs.uri(key)} is {snapshot.node_id} {snapshot.fingerprint}, but the "
                f"snapshot log names {node} {entry.fingerprint}"
            )
        return snapshot

    def latest_snapshot(self, node: NodeT) -> Snapshot | None:
        as_ofs = self.snapshot_as_ofs(node)
        return self.read_snapshot(node, self._log_entry(node, as_ofs[-1])) if as_ofs else None

    def resolve_snapshot(self, node: NodeT, as_of_s: int) -> Snapshot:
        """The newest snapshot committed at or before `as_of_s`.

        An `as_of` after the newest commit is refused rather than answered with the newest
        snapshot: a commit may be in flight (its as_of already chosen, its log entry not yet
        written) and committers' clocks may disagree, so the answer would not be
        reproducible. Pin an `as_of` that a commit returned or that the snapshot log lists
        (or any instant between two commits).
        """
        as_ofs = self.snapshot_as_ofs(node)
        if not as_ofs:
            raise SnapshotNotFound(
                f"{node} has no published snapshot; {self.NO_SNAPSHOT_FIX.format(node=node)}"
            )
        if as_of_s > as_ofs[-1]:
            raise SnapshotNotFound(
                f"{node}: as_of {iso_utc(as_of_s)} is after the latest snapshot "
                f"{iso_utc(as_ofs[-1])}; {self.LATER_AS_OF_FIX.format(node=node)}"
            )
        found = resolve_as_of(as_ofs, as_of_s)
        if found is None:
            raise SnapshotNotFound(
                f"{node}: as_of {iso_utc(as_of_s)} is before the first snapshot "
                f"{iso_utc(as_ofs[0])} (as_of is a snapshot's commit instant, not a data time)"
            )
        return self.read_snapshot(node, self._log_entry(node, found))

    def read_snapshot_range(
        self, node: NodeT, snapshot: Snapshot, window: Range, verify: bool = True
    ) -> pd.DataFrame:
        """Rows of the snapshot's segments overlapping `window`, clipped to it; with
        `verify`, every segment is proven to hash to the fingerprint the snapshot lists and
        its manifest to be the one the snapshot committed (see `check_listed_segment`)."""
        if snapshot.node_id != str(node):
            raise ValueError(f"snapshot of {snapshot.node_id} cannot be read as {node}")
        listed = snapshot.segments_overlapping(window)

        def check(i: int, loaded: LoadedSegment[IdentityT]) -> None:
            check_listed_segment(self, node, listed[i], loaded)

        return self._read_segments(node, [s.key for s in listed], window, verify, check)

    def unsnapshotted(self, node: NodeT, stable_end_s: int) -> list[Range]:
        """Published partitions (heads ending by `stable_end_s`) that the newest snapshot
        lacks or lists with another segment: what the next commit will add."""
        published = published_set(self._heads(node, window=None), stable_end_s)
        return unsnapshotted(self.latest_snapshot(node), published)

    def commit_snapshot(
        self,
        node: NodeT,
        conformance_version: str,
        stable_end_s: int,
        now_s: float,
        history_start_s: int | None = None,
    ) -> Snapshot | None:
        """Commit the node's published set (heads ending by `stable_end_s`) as a new
        snapshot at the commit instant `now_s` (kept strictly increasing) when it differs
        from the newest snapshot's list: a new stable partition, a repaired hole, a restated
        partition. None when nothing changed (or nothing is published).

        Every segment not listed by the previous snapshot is vetted first (sealed, its
        manifest's range is the head's window, the manifest agrees with the rows); one that
        is not refuses the whole commit with UnpublishableSegment naming the path and fix.
        """
        previous = self.latest_snapshot(node)
        current = published_set(self._heads(node, window=None), stable_end_s)
        if not current or (previous is not None and previous.listed == current):
            return None
        known = {s.key: s for s in (previous.segments if previous else ()) if s.manifest_sha256}
        todo = [head for head in current if head not in known]
        for vetted in self._map(lambda head: vet_new_segment(self, node, *head), todo):
            known[vetted.key] = vetted
        snapshot = build_snapshot(
            str(node),
            node.interval_s,
            conformance_version,
            [known[head] for head in current],
            commit_as_of(now_s, previous),
            history_start_s,
        )
        if snapshot is None:
            return None
        self.publish_snapshot(node, snapshot, now_s)
        return snapshot
