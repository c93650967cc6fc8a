"""Reading the segments a snapshot lists one by one, each proven to be what the snapshot
committed: the per-segment form of `SnapshotStore.read_snapshot_range(verify=True)`, for
callers that keep segments apart (the reader's segment cache). Read-only."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from seamless_assets.core.snapshot import SnapshotSegment
from seamless_assets.errors import ArtifactIntegrityError
from seamless_assets.nodes import NodeId

from .codec import fingerprint_slices, frame_from_table
from .listed import check_listed_segment
from .segments import LoadedSegment, _mismatch
from .snapshots import SnapshotStore


def read_listed_segments(
    store: SnapshotStore, node: NodeId, listed: Sequence[SnapshotSegment]
) -> list[LoadedSegment]:
    """The listed segments of a snapshot of `node`, in order, each verified as
    `read_snapshot_range` verifies them (sealed, its manifest the committed one, its bars
    hashing to the listed fingerprint), raising the same typed errors in the same order."""
    loaded = store._map(lambda entry: store._load_segment(node, entry.fingerprint, True), listed)
    for entry, segment in zip(listed, loaded, strict=True):
        check_listed_segment(store.blobs, node, entry, segment)
    if not loaded:
        return loaded
    frame = frame_from_table(pa.concat_tables([segment.table for segment in loaded]))
    slices = [(s.table.num_rows, s.identity) for s in loaded if s.identity is not None]
    actual = fingerprint_slices(frame, slices)
    for entry, got, segment in zip(listed, actual, loaded, strict=True):
        if got != entry.fingerprint:
            uri = store.blobs.uri(segment.data_key)
            raise ArtifactIntegrityError(_mismatch(uri, entry.fingerprint))
    return loaded
