"""Snapshots in the artifact store contract: every blob backend passes via `artifact_store`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from resources.artifacts import ArtifactStore
from seamless_assets.core.frame import Range
from seamless_assets.core.snapshot import Snapshot, SnapshotSegment, diff_segments
from seamless_assets.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    SnapshotNotFound,
    SnapshotRegression,
    WriteOnceViolation,
)

from .conftest import DAY, T0, BarsFactory, ManifestFactory
from .test_artifact_store_contract import NODE, publish_day

V = "v2"


def publish_days(
    store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory, days: int, seed: int = 0
) -> list[pd.DataFrame]:
    return [publish_day(store, bars, manifest_for, day=d, seed=seed)[0] for d in range(days)]


def test_advance_lists_stable_heads_in_time_order(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    publish_days(artifact_store, bars, manifest_for, 3)
    # Only two days are stable: the third ends after the stable end.
    snapshot = artifact_store.advance_snapshot(NODE, V, T0 + 2 * DAY + 3600, published_at_s=1.0)
    assert snapshot is not None
    assert snapshot.as_of_s == T0 + 2 * DAY
    assert [s.range for s in snapshot.segments] == [
        Range(T0, T0 + DAY),
        Range(T0 + DAY, T0 + 2 * DAY),
    ]
    assert [s.row_count for s in snapshot.segments] == [24, 24]
    heads = artifact_store.heads(NODE)
    assert [s.fingerprint for s in snapshot.segments] == [heads[s.range] for s in snapshot.segments]
    assert artifact_store.latest_snapshot(NODE) == snapshot
    [entry] = artifact_store.snapshot_log(NODE)
    assert (entry.as_of_s, entry.fingerprint, entry.published_at_s) == (
        snapshot.as_of_s,
        snapshot.fingerprint,
        1.0,
    )
    # Nothing new is stable: as_of does not advance and nothing is written.
    assert artifact_store.advance_snapshot(NODE, V, T0 + 2 * DAY + 7200, 2.0) is None
    assert len(artifact_store.snapshot_log(NODE)) == 1
    assert artifact_store.verify_all() == []


def test_a_restated_partition_is_seen_only_by_later_snapshots(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    original = publish_days(artifact_store, bars, manifest_for, 2)
    first = artifact_store.advance_snapshot(NODE, V, T0 + 2 * DAY, 1.0)
    assert first is not None
    # The exchange restates day 0, and day 2 closes: the next snapshot references the
    # restated segment; the first snapshot still resolves to the original bars.
    restated, _ = publish_day(artifact_store, bars, manifest_for, day=0, seed=7)
    publish_day(artifact_store, bars, manifest_for, day=2)
    second = artifact_store.advance_snapshot(NODE, V, T0 + 3 * DAY, 2.0)
    assert second is not None and second.as_of_s == T0 + 3 * DAY

    day0 = Range(T0, T0 + DAY)
    old = artifact_store.resolve_snapshot(NODE, first.as_of_s)
    assert old == first
    pd.testing.assert_frame_equal(artifact_store.read_snapshot_range(NODE, old, day0), original[0])
    new = artifact_store.resolve_snapshot(NODE, second.as_of_s)
    pd.testing.assert_frame_equal(artifact_store.read_snapshot_range(NODE, new, day0), restated)
    changes = diff_segments(first, second)
    assert [(c.range, c.before is not None, c.after is not None) for c in changes] == [
        (day0, True, True),
        (Range(T0 + 2 * DAY, T0 + 3 * DAY), False, True),
    ]
    # Between two snapshots, the earlier one answers.
    assert artifact_store.resolve_snapshot(NODE, second.as_of_s - 1) == first


def test_resolve_refuses_what_it_cannot_reproduce(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    with pytest.raises(SnapshotNotFound, match="no published snapshot"):
        artifact_store.resolve_snapshot(NODE, T0 + DAY)
    publish_days(artifact_store, bars, manifest_for, 1)
    snapshot = artifact_store.advance_snapshot(NODE, V, T0 + DAY, 1.0)
    assert snapshot is not None
    with pytest.raises(SnapshotNotFound, match="after the latest snapshot"):
        artifact_store.resolve_snapshot(NODE, T0 + DAY + 1)
    with pytest.raises(SnapshotNotFound, match="before the first snapshot"):
        artifact_store.resolve_snapshot(NODE, T0 + DAY - 1)


def test_as_of_never_regresses_and_snapshots_are_write_once(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    publish_days(artifact_store, bars, manifest_for, 2)
    later = artifact_store.advance_snapshot(NODE, V, T0 + 2 * DAY, 1.0)
    assert later is not None
    earlier = Snapshot(str(NODE), NODE.interval_s, V, T0 + DAY, later.segments[:1])
    with pytest.raises(SnapshotRegression, match="append-only"):
        artifact_store.publish_snapshot(NODE, earlier, 2.0)
    # Republishing the same snapshot is a no-op; another one at the same as_of is refused.
    assert artifact_store.publish_snapshot(NODE, later, 3.0) is False
    other = Snapshot(str(NODE), NODE.interval_s, V, later.as_of_s, later.segments[1:])
    with pytest.raises(WriteOnceViolation, match="immutable"):
        artifact_store.publish_snapshot(NODE, other, 4.0)
    assert [e.published_at_s for e in artifact_store.snapshot_log(NODE)] == [1.0]


def test_a_snapshot_must_list_sealed_segments(artifact_store: ArtifactStore) -> None:
    ghost = SnapshotSegment(Range(T0, T0 + DAY), "sha256:" + "0" * 64, 24)
    snapshot = Snapshot(str(NODE), NODE.interval_s, V, T0 + DAY, (ghost,))
    with pytest.raises(ArtifactNotFound, match="not sealed"):
        artifact_store.publish_snapshot(NODE, snapshot, 1.0)
    assert artifact_store.snapshot_log(NODE) == []


def test_tampered_snapshots_and_segments_are_refused(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    publish_days(artifact_store, bars, manifest_for, 2)
    snapshot = artifact_store.advance_snapshot(NODE, V, T0 + 2 * DAY, 1.0)
    assert snapshot is not None
    blobs, prefix = artifact_store.blobs, artifact_store.segment_prefix(NODE)
    key = f"{prefix}/snapshots/{snapshot.as_of_s:012d}.json"
    original = blobs.get(key)
    assert original is not None
    # A manifest edited to list another segment no longer hashes to its fingerprint.
    edited = json.loads(original)
    edited["segments"] = edited["segments"][:1]
    blobs.put(key, json.dumps(edited).encode())
    with pytest.raises(ArtifactIntegrityError, match="hashes to"):
        artifact_store.resolve_snapshot(NODE, snapshot.as_of_s)
    assert [p.kind for p in artifact_store.verify_all()] == ["bad_snapshot"]
    blobs.put(key, original)
    # A segment's data swapped for other bars is refused on a snapshot read.
    first, second = snapshot.segments
    data_key = f"{prefix}/segments/sha256-{first.fingerprint.split(':')[1]}/data.parquet"
    other = f"{prefix}/segments/sha256-{second.fingerprint.split(':')[1]}/data.parquet"
    blobs.put(data_key, blobs.get(other) or b"")
    with pytest.raises(ArtifactIntegrityError):
        artifact_store.read_snapshot_range(NODE, snapshot, Range(T0, T0 + 2 * DAY))
