"""Snapshots in the artifact store contract: every blob backend passes via `artifact_store`.

Snapshots are commits of the published set: a new one whenever the set of heads changes
(a new stable partition, a repaired hole, a restated partition), never otherwise; as_of is
the commit instant and strictly increases; a pinned as_of reads the same bytes forever.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from resources.artifacts import ArtifactStore
from seamless_assets.core.fingerprint import FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import CANONICAL_COLUMNS, CANONICAL_DTYPES, Range, iso_utc
from seamless_assets.core.manifest import ManifestIdentity, build_manifest
from seamless_assets.core.snapshot import Snapshot, SnapshotSegment, diff_segments
from seamless_assets.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    SnapshotNotFound,
    SnapshotRegression,
    UnpublishableSegment,
    WriteOnceViolation,
)
from seamless_assets.nodes import NodeId

from .conftest import DAY, T0, BarsFactory

NODE = NodeId.parse("ohlcv:binance:BTC/USDT:1h")
HOUR = 3600
V = "v2"
NOW = T0 + 30 * DAY  # the committer's clock: well after every bar in these tests


def window(day: int) -> Range:
    return Range(T0 + day * DAY, T0 + (day + 1) * DAY)


def publish_day(
    store: ArtifactStore, bars: BarsFactory, day: int, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Publish one day of hourly bars with the manifest the pipeline would write."""
    identity = ManifestIdentity(
        node_id=str(NODE),
        exchange=NODE.exchange,
        symbol=NODE.symbol,
        timeframe=NODE.timeframe.code,
        interval_s=NODE.interval_s,
        origin_s=NODE.timeframe.origin_s,
        window=window(day),
        conformance_version=V,
        stabilization_bars=2,
        producer="seamless@test",
    )
    frame = bars(window(day).start, 24, interval_s=HOUR, seed=seed + 100 * day)
    manifest = build_manifest(identity, frame, [], [])
    store.publish(NODE, frame, manifest)
    return frame, manifest


def keys(store: ArtifactStore, snapshot: Snapshot) -> tuple[str, str]:
    prefix = store.segment_prefix(NODE)
    return (
        f"{prefix}/snapshots/{snapshot.as_of_s:012d}.json",
        f"{prefix}/snapshot_log/{snapshot.as_of_s:012d}.json",
    )


def manifest_key(store: ArtifactStore, fingerprint: str) -> str:
    return f"{store.segment_prefix(NODE)}/segments/sha256-{fingerprint[7:]}/manifest.json"


def test_a_commit_lists_stable_heads_at_the_commit_instant(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    for day in range(3):
        publish_day(artifact_store, bars, day)
    # Only two days are stable: the third ends after the stable end.
    snapshot = artifact_store.advance_snapshot(NODE, V, window(1).end + 3600, NOW)
    assert snapshot is not None
    assert (snapshot.as_of_s, snapshot.watermark_s, snapshot.missing) == (NOW, window(1).end, ())
    assert [s.range for s in snapshot.segments] == [window(0), window(1)]
    assert [s.row_count for s in snapshot.segments] == [24, 24]
    heads = artifact_store.heads(NODE)
    assert [s.fingerprint for s in snapshot.segments] == [heads[s.range] for s in snapshot.segments]
    assert all(s.manifest_sha256 for s in snapshot.segments)
    assert artifact_store.latest_snapshot(NODE) == snapshot
    [entry] = artifact_store.snapshot_log(NODE)
    assert (entry.as_of_s, entry.fingerprint, entry.published_at_s) == (
        NOW,
        snapshot.fingerprint,
        NOW,
    )
    # Nothing changed: however many ticks pass, nothing is committed or written.
    before = {key: artifact_store.blobs.get(key) for key in artifact_store.blobs.list("")}
    for tick in range(1, 4):
        assert artifact_store.advance_snapshot(NODE, V, window(1).end + 7200, NOW + tick) is None
    assert {key: artifact_store.blobs.get(key) for key in artifact_store.blobs.list("")} == before
    assert artifact_store.unsnapshotted(NODE, window(2).end) == [window(2)]
    assert artifact_store.verify_all() == []


def test_a_restatement_without_new_partitions_is_a_new_commit(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    original = [publish_day(artifact_store, bars, day)[0] for day in range(3)]
    first = artifact_store.advance_snapshot(NODE, V, window(2).end, NOW)
    assert first is not None
    snapshot_key, _ = keys(artifact_store, first)
    first_bytes = artifact_store.blobs.get(snapshot_key)
    # The exchange restates days 0 and 1; no new partition closes.
    restated = [publish_day(artifact_store, bars, day, seed=7)[0] for day in (0, 1)]
    assert artifact_store.unsnapshotted(NODE, window(2).end) == [window(0), window(1)]
    second = artifact_store.advance_snapshot(NODE, V, window(2).end, NOW + 60)
    assert second is not None and second.as_of_s == NOW + 60
    assert second.watermark_s == first.watermark_s
    assert artifact_store.unsnapshotted(NODE, window(2).end) == []
    assert [(c.range, c.before is not None) for c in diff_segments(first, second)] == [
        (window(0), True),
        (window(1), True),
    ]
    # The earlier as_of reads the original bars, byte-identical; the later the restated.
    span = Range(window(0).start, window(2).end)
    old = artifact_store.resolve_snapshot(NODE, first.as_of_s)
    assert artifact_store.blobs.get(snapshot_key) == first_bytes
    pd.testing.assert_frame_equal(
        artifact_store.read_snapshot_range(NODE, old, span),
        pd.concat(original, ignore_index=True),
    )
    new = artifact_store.resolve_snapshot(NODE, second.as_of_s)
    pd.testing.assert_frame_equal(
        artifact_store.read_snapshot_range(NODE, new, span),
        pd.concat([*restated, original[2]], ignore_index=True),
    )
    # Between two commits, the earlier one answers.
    assert artifact_store.resolve_snapshot(NODE, second.as_of_s - 1) == first
    # The diff lists exactly the restated bars (every bar of days 0 and 1 changed).
    diff = artifact_store.diff_snapshots(NODE, first, second)
    assert diff["ts"].tolist() == pd.concat(restated)["ts"].tolist()
    assert set(diff["change"]) == {"changed"}


@pytest.mark.parametrize("holes", [(1, 3, 5), (0, 2, 4), (2, 3, 4)])
def test_repaired_holes_are_committed_and_old_reads_stay_identical(
    artifact_store: ArtifactStore, bars: BarsFactory, holes: tuple[int, ...]
) -> None:
    days = range(7)
    frames = {d: publish_day(artifact_store, bars, d)[0] for d in days if d not in holes}
    history_start = window(0).start
    first = artifact_store.advance_snapshot(NODE, V, window(6).end, NOW, history_start)
    assert first is not None
    expected = tuple(
        Range(window(a).start, window(b).end)
        for a, b in _runs(sorted(holes))
        if window(b).end <= window(max(frames)).end
    )
    assert first.missing == expected
    span = Range(window(0).start, window(6).end)
    assert first.uncovered(span) == list(expected) + (
        [Range(window(max(frames)).end, span.end)] if max(frames) < 6 else []
    )
    old_frame = artifact_store.read_snapshot_range(NODE, first, span)
    # Gap repair publishes the holes; the next commit lists them, with no holes left.
    for day in holes:
        frames[day] = publish_day(artifact_store, bars, day)[0]
    assert artifact_store.unsnapshotted(NODE, window(6).end) == [window(d) for d in holes]
    second = artifact_store.advance_snapshot(NODE, V, window(6).end, NOW - 5, history_start)
    assert second is not None and second.as_of_s == NOW + 1  # strictly increasing
    assert second.missing == () and second.uncovered(span) == []
    pd.testing.assert_frame_equal(
        artifact_store.read_snapshot_range(NODE, second, span),
        pd.concat([frames[d] for d in days], ignore_index=True),
    )
    again = artifact_store.read_snapshot_range(
        NODE, artifact_store.resolve_snapshot(NODE, first.as_of_s), span
    )
    pd.testing.assert_frame_equal(again, old_frame)


def _runs(days: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for d in days:
        if runs and runs[-1][1] == d - 1:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


def test_resolve_refuses_what_it_cannot_reproduce(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    with pytest.raises(SnapshotNotFound, match="no published snapshot"):
        artifact_store.resolve_snapshot(NODE, NOW)
    publish_day(artifact_store, bars, 0)
    snapshot = artifact_store.advance_snapshot(NODE, V, window(0).end, NOW)
    assert snapshot is not None
    with pytest.raises(SnapshotNotFound, match="after the latest snapshot"):
        artifact_store.resolve_snapshot(NODE, NOW + 1)
    with pytest.raises(SnapshotNotFound, match="before the first snapshot"):
        artifact_store.resolve_snapshot(NODE, NOW - 1)


def test_as_of_never_regresses_and_snapshots_are_write_once(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    for day in range(2):
        publish_day(artifact_store, bars, day)
    later = artifact_store.advance_snapshot(NODE, V, window(1).end, NOW)
    assert later is not None
    earlier = Snapshot(str(NODE), NODE.interval_s, V, NOW - 1, later.segments[:1])
    with pytest.raises(SnapshotRegression, match="append-only"):
        artifact_store.publish_snapshot(NODE, earlier, 2.0)
    # Republishing the same snapshot is a no-op; another one at the same as_of is refused.
    assert artifact_store.publish_snapshot(NODE, later, 3.0) is False
    other = Snapshot(str(NODE), NODE.interval_s, V, later.as_of_s, later.segments[1:])
    with pytest.raises(WriteOnceViolation, match="immutable"):
        artifact_store.publish_snapshot(NODE, other, 4.0)
    assert [e.published_at_s for e in artifact_store.snapshot_log(NODE)] == [NOW]


def test_a_snapshot_must_list_sealed_segments(artifact_store: ArtifactStore) -> None:
    ghost = SnapshotSegment(window(0), "sha256:" + "0" * 64, 24, "0" * 64)
    snapshot = Snapshot(str(NODE), NODE.interval_s, V, NOW, (ghost,))
    with pytest.raises(ArtifactNotFound, match="not sealed"):
        artifact_store.publish_snapshot(NODE, snapshot, 1.0)
    assert artifact_store.snapshot_log(NODE) == []


def test_a_tampered_snapshot_is_refused_and_reported(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    for day in range(2):
        publish_day(artifact_store, bars, day)
    snapshot = artifact_store.advance_snapshot(NODE, V, window(1).end, NOW)
    assert snapshot is not None
    blobs = artifact_store.blobs
    key, _ = keys(artifact_store, snapshot)
    original = blobs.get(key)
    assert original is not None
    for edit in ("segments", "watermark_s", "missing"):
        edited = json.loads(original)
        edited[edit] = {
            "segments": edited["segments"][:1],
            "watermark_s": edited["watermark_s"] + 1,
            "missing": [window(5).to_json()],
        }[edit]
        blobs.put(key, json.dumps(edited).encode())
        with pytest.raises(ArtifactIntegrityError, match="hashes to"):
            artifact_store.resolve_snapshot(NODE, snapshot.as_of_s)
        [problem] = artifact_store.verify_all()
        assert problem.kind == "bad_snapshot"
        assert problem.uri == blobs.uri(key)  # the edited file, not its log entry
    blobs.put(key, original)
    # A segment's data swapped for other bars is refused on a snapshot read.
    first, second = snapshot.segments
    data_key = manifest_key(artifact_store, first.fingerprint).replace(
        "manifest.json", "data.parquet"
    )
    other = manifest_key(artifact_store, second.fingerprint).replace(
        "manifest.json", "data.parquet"
    )
    blobs.put(data_key, blobs.get(other) or b"")
    with pytest.raises(ArtifactIntegrityError):
        artifact_store.read_snapshot_range(NODE, snapshot, Range(T0, T0 + 2 * DAY))


@pytest.mark.parametrize("field", ["row_count", "coverage", "flag"])
def test_a_manifest_edited_after_the_commit_is_refused_on_read_and_reported(
    artifact_store: ArtifactStore, bars: BarsFactory, field: str
) -> None:
    for day in range(2):
        publish_day(artifact_store, bars, day)
    snapshot = artifact_store.advance_snapshot(NODE, V, window(1).end, NOW)
    assert snapshot is not None
    key = manifest_key(artifact_store, snapshot.segments[1].fingerprint)
    manifest = json.loads(artifact_store.blobs.get(key) or b"")
    if field == "row_count":
        manifest["row_count"] = 23
    elif field == "coverage":
        manifest["coverage"]["ratio"] = 0.5
    else:
        manifest["conformance"]["flags"]["gap"] = 7
    artifact_store.blobs.put(key, json.dumps(manifest, indent=2).encode())
    uri = artifact_store.blobs.uri(key)
    with pytest.raises(ArtifactIntegrityError, match="not what its snapshot committed") as raised:
        artifact_store.read_snapshot_range(NODE, snapshot, window(1))
    assert uri in str(raised.value)
    problems = [p for p in artifact_store.verify_all() if p.kind == "bad_snapshot"]
    assert problems and all(uri in p.detail for p in problems)
    # Day 0 is untouched and still reads.
    assert len(artifact_store.read_snapshot_range(NODE, snapshot, window(0))) == 24


def test_a_repointed_head_is_reported_and_never_committed(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    for day in range(3):
        publish_day(artifact_store, bars, day)
    heads = artifact_store.heads(NODE)
    first = artifact_store.advance_snapshot(NODE, V, window(1).end, NOW)
    assert first is not None
    # Day 2's head is repointed to day 0's segment.
    head_key = f"{artifact_store.segment_prefix(NODE)}/heads/{window(2).start}-{window(2).end}.json"
    pointer = {"fingerprint": heads[window(0)], "node_id": str(NODE), "range": window(2).to_json()}
    artifact_store.blobs.put(head_key, json.dumps(pointer).encode())
    head_uri = artifact_store.blobs.uri(head_key)
    [problem] = artifact_store.verify_all()
    assert (problem.kind, problem.uri) == ("head_mismatch", head_uri)
    with pytest.raises(UnpublishableSegment, match="repointed") as raised:
        artifact_store.advance_snapshot(NODE, V, window(2).end, NOW + 60)
    assert head_uri in str(raised.value)
    assert artifact_store.latest_snapshot(NODE) == first
    # A snapshot that lists a segment under another partition's window is refused on read.
    forged_entry = SnapshotSegment(
        window(2), heads[window(0)], 24, first.segments[0].manifest_sha256
    )
    forged = Snapshot(str(NODE), NODE.interval_s, V, NOW + 60, (*first.segments, forged_entry))
    artifact_store.publish_snapshot(NODE, forged, NOW + 60)
    with pytest.raises(ArtifactIntegrityError, match="manifest range"):
        artifact_store.read_snapshot_range(NODE, forged, window(2))
    assert any(
        p.kind == "bad_snapshot" and "manifest range" in p.detail
        for p in artifact_store.verify_all()
    )


def test_a_segment_whose_manifest_disagrees_with_its_bars_is_not_committed(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    _, manifest = publish_day(artifact_store, bars, 0)
    key = manifest_key(artifact_store, str(manifest["fingerprint"]))
    edited = {**manifest, "row_count": 3}
    artifact_store.blobs.put(key, json.dumps(edited).encode())
    with pytest.raises(UnpublishableSegment, match="disagrees with its bars") as raised:
        artifact_store.advance_snapshot(NODE, V, window(0).end, NOW)
    assert artifact_store.blobs.uri(key) in str(raised.value)
    assert artifact_store.snapshot_log(NODE) == []


# A version 1 snapshot exactly as the previous code wrote it (as_of = data watermark, no
# manifest digests); `{fp0}`/`{fp1}` are the published segments' fingerprints.
V1_SNAPSHOT = """{
  "as_of": "2024-01-03T00:00:00Z",
  "as_of_s": 1704240000,
  "conformance_version": "v2",
  "fingerprint": "{fingerprint}",
  "interval_s": 3600,
  "node_id": "ohlcv:binance:BTC/USDT:1h",
  "segments": [
    {
      "end": 1704153600,
      "fingerprint": "{fp0}",
      "row_count": 24,
      "start": 1704067200
    },
    {
      "end": 1704240000,
      "fingerprint": "{fp1}",
      "row_count": 24,
      "start": 1704153600
    }
  ],
  "snapshot_version": 1
}
"""
V1_LOG = """{
  "as_of": "2024-01-03T00:00:00Z",
  "as_of_s": 1704240000,
  "fingerprint": "{fingerprint}",
  "published_at": "2024-01-03T00:05:00+00:00",
  "published_at_s": 1704240300.0
}
"""


def publish_v1_day(store: ArtifactStore, bars: BarsFactory, day: int) -> pd.DataFrame:
    """Publish a full day with a manifest_version 1 manifest, as the previous pipeline
    wrote it (flags counted from the run's rows, no events, no origin_s)."""
    frame = bars(window(day).start, 24, interval_s=HOUR, seed=100 * day)
    identity = FingerprintIdentity(str(NODE), NODE.interval_s, window(day), V)
    manifest = {
        "manifest_version": 1,
        "fingerprint": dataset_fingerprint(frame, identity),
        "as_of": iso_utc(window(day).end),
        "node_id": str(NODE),
        "exchange": NODE.exchange,
        "symbol": NODE.symbol,
        "timeframe": NODE.timeframe.code,
        "interval_s": NODE.interval_s,
        "range": window(day).to_json(),
        "row_count": 24,
        "columns": [[c, CANONICAL_DTYPES[c]] for c in CANONICAL_COLUMNS],
        "format": {"file": "data.parquet", "type": "parquet", "compression": "zstd"},
        "conformance": {"version": V, "flags": {"gap": 0, "duplicate_ts": 0}},
        "coverage": {
            "bounds": [window(day).start, window(day).end],
            "expected_bars": 24,
            "ratio": 1.0,
            "completeness": 1.0,
            "missing": [],
        },
        "gaps": [],
        "stabilization_bars": 2,
        "producer": {"identity": "seamless@0.1.0", "exchange": "binance", "source": "ccxt"},
    }
    store.publish(NODE, frame, manifest)
    return frame


def test_version_1_snapshots_keep_resolving_and_the_next_commit_is_version_2(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    frames = [publish_v1_day(artifact_store, bars, day) for day in range(3)]
    heads = artifact_store.heads(NODE)
    fp0, fp1 = heads[window(0)], heads[window(1)]
    body = json.loads(
        V1_SNAPSHOT.replace("{fp0}", fp0).replace("{fp1}", fp1).replace("{fingerprint}", "")
    )
    del body["fingerprint"]  # the v1 fingerprint: sha256 of the canonical body
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    fingerprint = "sha256:" + hashlib.sha256(canonical).hexdigest()
    prefix = artifact_store.segment_prefix(NODE)
    as_of = window(1).end
    for name, text in (("snapshots", V1_SNAPSHOT), ("snapshot_log", V1_LOG)):
        data = text.replace("{fp0}", fp0).replace("{fp1}", fp1)
        artifact_store.blobs.put(
            f"{prefix}/{name}/{as_of:012d}.json",
            data.replace("{fingerprint}", fingerprint).encode(),
        )
    old = artifact_store.resolve_snapshot(NODE, as_of)
    assert (old.version, old.as_of_s, old.watermark_s, old.fingerprint) == (
        1,
        as_of,
        as_of,
        fingerprint,
    )
    span = Range(window(0).start, window(1).end)
    pd.testing.assert_frame_equal(
        artifact_store.read_snapshot_range(NODE, old, span),
        pd.concat(frames[:2], ignore_index=True),
    )
    assert artifact_store.verify_all() == []
    # Same published set: no commit. A new partition: a version 2 commit after it.
    assert artifact_store.advance_snapshot(NODE, V, window(1).end, NOW) is None
    new = artifact_store.advance_snapshot(NODE, V, window(2).end, NOW)
    assert new is not None and (new.version, new.as_of_s) == (2, NOW)
    assert all(s.manifest_sha256 for s in new.segments)
    assert artifact_store.resolve_snapshot(NODE, NOW - 1) == old
    assert artifact_store.verify_all() == []
