"""Event segments (`funding:` and `trades:` nodes) in the artifact store contract: every
blob backend of `artifact_store` (local directory, S3) passes this suite.

Segments are write-once and content-addressed like bar segments (data first, manifest
last, nothing overwritten); snapshots commit the published set, only when it changes, at
strictly increasing as_of; `verify_all` audits event segments beside bar segments.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from resources.artifacts import ArtifactStore, BlobStore
from resources.artifacts.event_codec import (
    encode_event_segment,
    event_frame_from_table,
    read_event_table,
)
from resources.artifacts.event_segments import EventSegmentStore
from seamless_assets.core.event_manifest import build_event_manifest, event_fingerprint
from seamless_assets.core.frame import Range
from seamless_assets.core.manifest import ManifestIdentity, build_manifest
from seamless_assets.core.snapshot import Snapshot, SnapshotSegment
from seamless_assets.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    SnapshotNotFound,
    SnapshotRegression,
    UnpublishableSegment,
    WriteOnceViolation,
)
from seamless_assets.event_nodes import EventNodeId
from seamless_assets.nodes import NodeId

from .conftest import DAY, T0, BarsFactory

FUNDING = EventNodeId.parse("funding:binance:BTC/USDT:USDT")
TRADES = EventNodeId.parse("trades:binance:BTC/USDT")
V = "v1"
HOUR = 3600
NOW = T0 + 30 * DAY  # the committer's clock: well after every row in these tests


def window(day: int) -> Range:
    return Range(T0 + day * DAY, T0 + (day + 1) * DAY)


def funding_rows(day: int, seed: int = 0) -> pd.DataFrame:
    """Three fundings 8h apart with Binance's ms jitter; the second has no mark price."""
    start_ms = window(day).start * 1000
    rng = np.random.default_rng(seed + 100 * day)
    return pd.DataFrame(
        {
            "ts": np.array(
                [start_ms + 2, start_ms + 8 * HOUR * 1000 + 7, start_ms + 16 * HOUR * 1000]
            ),
            "funding_rate": rng.normal(0.0001, 0.00005, 3),
            "mark_price": np.array([42_000.5, np.nan, 42_100.25]) + seed,
        }
    )


def trades_rows(day: int, count: int = 50, seed: int = 0) -> pd.DataFrame:
    """`count` trades of one day sorted by (ts, id), several sharing an instant."""
    rng = np.random.default_rng(seed + 100 * day)
    ts = np.sort(window(day).start * 1000 + rng.integers(0, DAY * 1000, count) // 7 * 7)
    return pd.DataFrame(
        {
            "id": np.arange(count, dtype=np.int64) + 1_000 * (day + 1),
            "ts": ts.astype(np.int64),
            "price": 42_000 + rng.random(count) * 100,
            "amount": rng.random(count),
            "side": rng.choice(np.array([-1, 0, 1], dtype=np.int8), count),
        }
    )


def rows_of(node: EventNodeId, day: int, seed: int = 0) -> pd.DataFrame:
    return funding_rows(day, seed) if node.kind == "funding" else trades_rows(day, seed=seed)


def manifest_of(node: EventNodeId, frame: pd.DataFrame, day: int, **kwargs: Any) -> dict[str, Any]:
    return build_event_manifest(
        node,
        window(day),
        frame,
        conformance_version=kwargs.pop("conformance_version", V),
        flags=kwargs.pop("flags", {"duplicate_ts": 0}),
        answered=kwargs.pop("answered", [window(day)]),
        sources=kwargs.pop("sources", None),
    )


def publish_day(
    events: EventSegmentStore, node: EventNodeId, day: int, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, Any]]:
    frame = rows_of(node, day, seed)
    manifest = manifest_of(node, frame, day)
    events.publish(node, frame, manifest)
    return frame, manifest


def keys(node: EventNodeId, fingerprint: str) -> tuple[str, str]:
    directory = f"{node.partition_prefix()}/segments/sha256-{fingerprint[7:]}"
    return f"{directory}/data.parquet", f"{directory}/manifest.json"


def everything(blobs: BlobStore) -> dict[str, bytes | None]:
    """Every key and its bytes: proves that an operation wrote nothing."""
    return {key: blobs.get(key) for key in blobs.list("")}


@pytest.fixture
def events(artifact_store: ArtifactStore) -> EventSegmentStore:
    return EventSegmentStore(artifact_store.blobs, max_workers=artifact_store.max_workers)


NODES = pytest.mark.parametrize("node", [FUNDING, TRADES], ids=["funding", "trades"])


# -- publish and read -------------------------------------------------------------------------


@NODES
def test_publish_then_read_back_bit_exact(events: EventSegmentStore, node: EventNodeId) -> None:
    frame = rows_of(node, 0)
    manifest = manifest_of(node, frame, 0)
    result = events.publish(node, frame, manifest)
    assert result.written and result.fingerprint == manifest["fingerprint"]
    assert result.uri == events.uri_for(node, result.fingerprint)
    assert result.uri.endswith(f"/segments/sha256-{result.fingerprint[7:]}")
    assert events.read_manifest(node, result.fingerprint) == manifest
    got = events.read_segment(node, result.fingerprint)
    pd.testing.assert_frame_equal(got, frame)
    for column in frame.columns:  # bit for bit: the NaN mark price, the ms jitter, int8 sides
        assert got[column].dtype == frame[column].dtype
        assert got[column].to_numpy().tobytes() == frame[column].to_numpy().tobytes()
    assert events.heads(node) == {window(0): result.fingerprint}
    assert events.head(node, window(0)) == result.fingerprint
    assert events.head(node, window(1)) is None
    assert events.list_nodes() == [node]
    data_key, manifest_key = keys(node, result.fingerprint)
    assert data_key.startswith(f"kind={node.kind}/exchange=binance/symbol=")
    expected = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert events.blobs.get(manifest_key) == expected.encode()


def test_funding_keeps_jitter_and_missing_mark_price(events: EventSegmentStore) -> None:
    _, manifest = publish_day(events, FUNDING, 0)
    got = events.read_segment(FUNDING, manifest["fingerprint"])
    assert got["ts"].tolist() == [
        T0 * 1000 + 2,
        (T0 + 8 * HOUR) * 1000 + 7,
        (T0 + 16 * HOUR) * 1000,
    ]
    assert np.isnan(got["mark_price"][1]) and got["mark_price"][0] == 42_000.5
    assert manifest["first_ts"] == T0 * 1000 + 2 and manifest["last_ts"] == (T0 + 16 * HOUR) * 1000


def test_trades_side_round_trips_as_int8(events: EventSegmentStore) -> None:
    frame, manifest = publish_day(events, TRADES, 0)
    got = events.read_segment(TRADES, manifest["fingerprint"])
    assert got["side"].dtype == np.int8 and set(got["side"]) <= {-1, 0, 1}
    assert got["side"].tolist() == frame["side"].tolist()
    data_key, _ = keys(TRADES, manifest["fingerprint"])
    table = read_event_table(TRADES.spec, events.blobs.get(data_key) or b"", data_key)
    assert str(table.schema.field("side").type) == "int8"
    assert table.schema.metadata is None  # no pandas metadata, no stored Arrow schema


@NODES
def test_an_empty_partition_is_a_segment(events: EventSegmentStore, node: EventNodeId) -> None:
    frame = node.spec.empty()
    manifest = manifest_of(node, frame, 0)
    assert manifest["row_count"] == 0 and manifest["first_ts"] is None
    assert manifest["provenance"] == {"rows_by_source": {"rest": 0}}
    result = events.publish(node, frame, manifest)
    pd.testing.assert_frame_equal(events.read_segment(node, result.fingerprint), frame)


@NODES
def test_same_rows_give_the_same_fingerprint_and_bytes(
    events: EventSegmentStore, node: EventNodeId
) -> None:
    frame = rows_of(node, 0)
    result = events.publish(node, frame, manifest_of(node, frame, 0))
    variant = frame.copy()
    float_column = "funding_rate" if node.kind == "funding" else "price"
    values, other = (
        frame[float_column].to_numpy(copy=True),
        variant[float_column].to_numpy(copy=True),
    )
    values[1], other[1] = np.nan, np.array([0x7FF8_0000_0000_0001], "<u8").view("<f8")[0]
    values[2], other[2] = 0.0, -0.0
    frame[float_column], variant[float_column] = values, other
    assert frame[float_column].to_numpy().tobytes() != variant[float_column].to_numpy().tobytes()
    assert event_fingerprint(node, frame, window(0), V) == event_fingerprint(
        node, variant, window(0), V
    )
    assert encode_event_segment(node.spec, frame) == encode_event_segment(node.spec, variant)
    assert encode_event_segment(node.spec, frame[::-1][::-1]) == encode_event_segment(
        node.spec, frame
    )
    # The stored file is the encoding of the rows, whatever copy of them is published.
    data_key, _ = keys(node, result.fingerprint)
    original = rows_of(node, 0)
    assert events.blobs.get(data_key) == encode_event_segment(node.spec, original.copy())
    assert manifest_of(node, original.copy(), 0) == manifest_of(node, rows_of(node, 0), 0)
    # Other identity, other fingerprint; other rows, other fingerprint.
    assert event_fingerprint(node, original, window(0), "v2") != result.fingerprint
    assert event_fingerprint(node, rows_of(node, 0, seed=1), window(0), V) != result.fingerprint


@NODES
def test_second_publish_writes_nothing(events: EventSegmentStore, node: EventNodeId) -> None:
    frame, manifest = publish_day(events, node, 0)
    before = everything(events.blobs)
    again = events.publish(node, frame.copy(), dict(manifest))
    assert not again.written and again.fingerprint == manifest["fingerprint"]
    assert everything(events.blobs) == before


@NODES
def test_tampered_data_is_detected_on_read(events: EventSegmentStore, node: EventNodeId) -> None:
    _, manifest = publish_day(events, node, 0)
    fingerprint = manifest["fingerprint"]
    data_key, _ = keys(node, fingerprint)
    other = rows_of(node, 0, seed=7)
    events.blobs.put(data_key, encode_event_segment(node.spec, other))  # valid, other rows
    with pytest.raises(ArtifactIntegrityError, match=r"data\.parquet does not hash") as raised:
        events.read_segment(node, fingerprint)
    assert "publish the partition again" in str(raised.value)
    pd.testing.assert_frame_equal(events.read_segment(node, fingerprint, verify=False), other)
    with pytest.raises(ArtifactIntegrityError, match="does not hash"):
        events.read_range(node, window(0))
    # Republishing the right rows refuses to overwrite the sealed, altered file.
    with pytest.raises(ArtifactIntegrityError, match="altered or corrupted"):
        events.publish(node, rows_of(node, 0), manifest)
    events.blobs.put(data_key, b"not parquet")
    with pytest.raises(ArtifactIntegrityError, match="not a readable Parquet"):
        events.read_segment(node, fingerprint)


@NODES
def test_manifest_disagreeing_with_the_frame_is_refused(
    events: EventSegmentStore, node: EventNodeId
) -> None:
    frame = rows_of(node, 0)
    manifest = manifest_of(node, frame, 0)
    other = manifest_of(node, rows_of(node, 0, seed=3), 0)
    with pytest.raises(ValueError, match="claims"):
        events.publish(node, frame, other)
    with pytest.raises(ValueError, match="row_count"):
        events.publish(node, frame, dict(manifest, row_count=len(frame) + 1))
    with pytest.raises(ValueError, match="last_ts"):
        events.publish(node, frame, dict(manifest, last_ts=0))
    with pytest.raises(ValueError, match="rows_by_source"):
        events.publish(node, frame, dict(manifest, provenance={"rows_by_source": {"rest": 1}}))
    with pytest.raises(ValueError, match="coverage"):
        events.publish(node, frame, dict(manifest, coverage={"answered": [], "ratio": 1.0}))
    twin = EventNodeId.of(node.kind, "bybit", node.symbol)
    with pytest.raises(ValueError, match="published under"):
        events.publish(twin, frame, manifest)
    with pytest.raises(ValueError, match=r"conformance\.version"):
        events.publish(node, frame, {k: v for k, v in manifest.items() if k != "range"})
    with pytest.raises(ValueError, match="kind"):
        events.publish(node, frame, dict(manifest, kind="ohlcv"))
    assert events.blobs.list("") == []


@NODES
def test_rows_outside_the_window_or_out_of_order_are_refused(
    events: EventSegmentStore, node: EventNodeId
) -> None:
    frame = rows_of(node, 0)
    manifest = manifest_of(node, frame, 0)
    late = frame.copy()
    late.loc[len(late) - 1, "ts"] = window(0).end * 1000  # the first ms of the next day
    with pytest.raises(ValueError, match="outside"):
        events.publish(node, late, manifest)
    with pytest.raises(ValueError, match="outside"):
        manifest_of(node, late, 0)
    early = frame.copy()
    early.loc[0, "ts"] = window(0).start * 1000 - 1
    with pytest.raises(ValueError, match="outside"):
        events.publish(node, early, manifest)
    with pytest.raises(ValueError, match="sorted"):
        events.publish(node, frame[::-1].reset_index(drop=True), manifest)
    with pytest.raises(ValueError, match="repeat"):
        twice = pd.concat([frame, frame.tail(1)], ignore_index=True)
        events.publish(node, twice, manifest)
    retyped = frame.astype({frame.columns[-1]: "float32"})
    with pytest.raises(ValueError, match="exactly"):
        events.publish(node, retyped, manifest)
    with pytest.raises(ValueError, match="exactly"):
        events.publish(node, frame[list(reversed(frame.columns))], manifest)
    with pytest.raises(ValueError, match="plain JSON"):
        events.publish(node, frame, dict(manifest, extra=float("nan")))
    assert events.blobs.list("") == []


# -- crash safety and write-once --------------------------------------------------------------


class RecordingBlobs:
    """A backend wrapper that records the order of successful writes."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.writes: list[str] = []

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        self.writes.append(key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        written = self.inner.put_if_absent(key, data)
        if written:
            self.writes.append(key)
        return written


def test_data_then_manifest_then_head(events: EventSegmentStore) -> None:
    recording = RecordingBlobs(events.blobs)
    store = EventSegmentStore(recording)
    _, manifest = publish_day(store, TRADES, 0)
    data_key, manifest_key = keys(TRADES, manifest["fingerprint"])
    head_key = f"{TRADES.partition_prefix()}/heads/{window(0).start}-{window(0).end}.json"
    assert recording.writes == [data_key, manifest_key, head_key]


@NODES
def test_a_crash_between_data_and_manifest_is_completed_on_republish(
    artifact_store: ArtifactStore, events: EventSegmentStore, node: EventNodeId
) -> None:
    frame = rows_of(node, 0)
    manifest = manifest_of(node, frame, 0)
    data_key, manifest_key = keys(node, manifest["fingerprint"])
    events.blobs.put_if_absent(data_key, encode_event_segment(node.spec, frame))  # the crash
    assert events.heads(node) == {}
    with pytest.raises(ArtifactIntegrityError, match="no manifest"):
        events.read_segment(node, manifest["fingerprint"])
    assert [p.kind for p in artifact_store.verify_all()] == ["orphan_data"]
    result = events.publish(node, frame, manifest)
    assert result.written and events.blobs.exists(manifest_key)
    pd.testing.assert_frame_equal(events.read_segment(node, result.fingerprint), frame)
    assert events.heads(node) == {window(0): result.fingerprint}
    assert artifact_store.verify_all() == []


@NODES
def test_unsealed_data_holding_other_rows_is_never_overwritten(
    events: EventSegmentStore, node: EventNodeId
) -> None:
    frame = rows_of(node, 0)
    manifest = manifest_of(node, frame, 0)
    data_key, manifest_key = keys(node, manifest["fingerprint"])
    squatter = encode_event_segment(node.spec, rows_of(node, 0, seed=5))
    events.blobs.put_if_absent(data_key, squatter)
    with pytest.raises(WriteOnceViolation, match="without a manifest"):
        events.publish(node, frame, manifest)
    assert events.blobs.get(data_key) == squatter and not events.blobs.exists(manifest_key)


def test_a_restated_partition_is_a_new_segment_and_moves_the_head(
    events: EventSegmentStore,
) -> None:
    _, first = publish_day(events, FUNDING, 0)
    _, second = publish_day(events, FUNDING, 0, seed=1)
    assert first["fingerprint"] != second["fingerprint"]
    assert events.heads(FUNDING) == {window(0): second["fingerprint"]}
    old = events.read_segment(FUNDING, first["fingerprint"])  # sealed forever
    pd.testing.assert_frame_equal(old, funding_rows(0))


def test_read_range_clips_to_the_window_in_ms(events: EventSegmentStore) -> None:
    frames = [publish_day(events, TRADES, day)[0] for day in range(3)]
    every = pd.concat(frames, ignore_index=True)
    query = Range(T0 + DAY // 2, T0 + 2 * DAY + HOUR)
    got = events.read_range(TRADES, query)
    inside = every[(every["ts"] >= query.start * 1000) & (every["ts"] < query.end * 1000)]
    pd.testing.assert_frame_equal(got, inside.reset_index(drop=True))
    assert len(events.read_range(TRADES, Range(T0 - DAY, T0))) == 0


# -- snapshots --------------------------------------------------------------------------------


@NODES
def test_a_snapshot_commits_only_when_the_set_changes(
    events: EventSegmentStore, node: EventNodeId
) -> None:
    assert events.commit_snapshot(node, V, stable_end_s=window(2).end, now_s=NOW) is None
    for day in range(2):
        publish_day(events, node, day)
    first = events.commit_snapshot(node, V, stable_end_s=window(2).end, now_s=NOW)
    assert first is not None and first.interval_s == 0 and first.as_of_s == NOW
    assert [s.range for s in first.segments] == [window(0), window(1)]
    assert first.watermark_s == window(1).end
    assert events.latest_snapshot(node) == first
    assert events.commit_snapshot(node, V, stable_end_s=window(2).end, now_s=NOW + 10) is None
    publish_day(events, node, 1)  # the same rows again: the set is unchanged
    assert events.commit_snapshot(node, V, stable_end_s=window(2).end, now_s=NOW + 20) is None
    publish_day(events, node, 3)  # not stable yet: not listed
    assert events.commit_snapshot(node, V, stable_end_s=window(2).end, now_s=NOW + 30) is None
    publish_day(events, node, 1, seed=9)  # a restated partition
    second = events.commit_snapshot(node, V, stable_end_s=window(2).end, now_s=NOW + 40)
    assert second is not None and second.as_of_s == NOW + 40
    assert second.segments[0] == first.segments[0]
    assert second.segments[1].fingerprint != first.segments[1].fingerprint
    third = events.commit_snapshot(node, V, stable_end_s=window(3).end, now_s=NOW + 50)
    assert third is not None and third.missing == (window(2),)
    assert events.snapshot_as_ofs(node) == [NOW, NOW + 40, NOW + 50]
    assert [e.as_of_s for e in events.snapshot_log(node)] == [NOW, NOW + 40, NOW + 50]


def test_as_of_strictly_increases(events: EventSegmentStore) -> None:
    publish_day(events, FUNDING, 0)
    first = events.commit_snapshot(FUNDING, V, stable_end_s=window(0).end, now_s=NOW)
    publish_day(events, FUNDING, 1)
    second = events.commit_snapshot(FUNDING, V, stable_end_s=window(1).end, now_s=NOW - 100)
    assert first is not None and second is not None
    assert second.as_of_s == first.as_of_s + 1  # a clock behind the last commit
    assert not events.publish_snapshot(FUNDING, second, NOW)  # already published
    older = Snapshot(str(FUNDING), 0, V, first.as_of_s - 1, first.segments)
    with pytest.raises(SnapshotRegression, match="append-only"):
        events.publish_snapshot(FUNDING, older, NOW)
    rival = Snapshot(str(FUNDING), 0, V, second.as_of_s, first.segments)
    with pytest.raises(WriteOnceViolation, match="immutable"):
        events.publish_snapshot(FUNDING, rival, NOW)
    with pytest.raises(ValueError, match="cannot be published"):
        events.publish_snapshot(TRADES, second, NOW)
    assert events.snapshot_as_ofs(FUNDING) == [first.as_of_s, second.as_of_s]


def test_a_snapshot_lists_only_sealed_segments(events: EventSegmentStore) -> None:
    publish_day(events, FUNDING, 0)
    other = funding_rows(0, seed=4)  # never published
    fingerprint = event_fingerprint(FUNDING, other, window(0), V)
    unsealed = SnapshotSegment(window(0), fingerprint, len(other), "0" * 64)
    with pytest.raises(ArtifactNotFound, match="not sealed"):
        events.publish_snapshot(FUNDING, Snapshot(str(FUNDING), 0, V, NOW, (unsealed,)), NOW)
    assert events.snapshot_as_ofs(FUNDING) == []


def test_resolve_at_or_before(events: EventSegmentStore) -> None:
    with pytest.raises(SnapshotNotFound, match="no published snapshot"):
        events.resolve_snapshot(TRADES, NOW)
    publish_day(events, TRADES, 0)
    first = events.commit_snapshot(TRADES, V, stable_end_s=window(0).end, now_s=NOW)
    publish_day(events, TRADES, 1)
    second = events.commit_snapshot(TRADES, V, stable_end_s=window(1).end, now_s=NOW + 100)
    assert first is not None and second is not None
    assert events.resolve_snapshot(TRADES, NOW) == first
    assert events.resolve_snapshot(TRADES, NOW + 99) == first
    assert events.resolve_snapshot(TRADES, NOW + 100) == second
    with pytest.raises(SnapshotNotFound, match="before the first snapshot"):
        events.resolve_snapshot(TRADES, NOW - 1)
    with pytest.raises(SnapshotNotFound, match="after the latest snapshot"):
        events.resolve_snapshot(TRADES, NOW + 101)


@NODES
def test_a_snapshot_read_is_clipped_to_the_window_and_pinned(
    events: EventSegmentStore, node: EventNodeId
) -> None:
    frames = [publish_day(events, node, day)[0] for day in range(3)]
    pinned = events.commit_snapshot(node, V, stable_end_s=window(2).end, now_s=NOW)
    assert pinned is not None
    query = Range(T0 + 8 * HOUR, T0 + 2 * DAY + 8 * HOUR + 1)
    every = pd.concat(frames, ignore_index=True)
    expected = every[(every["ts"] >= query.start * 1000) & (every["ts"] < query.end * 1000)]
    expected = expected.reset_index(drop=True)
    got = events.read_snapshot_range(node, pinned, query)
    pd.testing.assert_frame_equal(got, expected)
    assert got.dtypes.to_dict() == dict(node.spec.dtypes)
    assert len(events.read_snapshot_range(node, pinned, window(5))) == 0
    publish_day(events, node, 1, seed=11)  # restated after the commit
    assert events.commit_snapshot(node, V, stable_end_s=window(2).end, now_s=NOW + 1)
    again = events.read_snapshot_range(node, events.resolve_snapshot(node, NOW), query)
    pd.testing.assert_frame_equal(again, expected)  # the pinned as_of reads the same rows
    with pytest.raises(ValueError, match="cannot be read"):
        events.read_snapshot_range(EventNodeId.of(node.kind, "bybit", node.symbol), pinned, query)


def test_a_snapshot_read_refuses_an_edited_manifest(events: EventSegmentStore) -> None:
    _, manifest = publish_day(events, TRADES, 0)
    snapshot = events.commit_snapshot(TRADES, V, stable_end_s=window(0).end, now_s=NOW)
    assert snapshot is not None
    _, manifest_key = keys(TRADES, manifest["fingerprint"])
    edited = dict(manifest, conformance={"version": V, "flags": {"duplicate_id": 3}})
    events.blobs.put(manifest_key, (json.dumps(edited, sort_keys=True, indent=2) + "\n").encode())
    with pytest.raises(ArtifactIntegrityError, match="not what its snapshot committed"):
        events.read_snapshot_range(TRADES, snapshot, window(0))
    assert len(events.read_snapshot_range(TRADES, snapshot, window(0), verify=False)) == 50


def test_a_commit_refuses_a_repointed_head(events: EventSegmentStore) -> None:
    publish_day(events, FUNDING, 0)
    _, day1 = publish_day(events, FUNDING, 1)
    head0 = f"{FUNDING.partition_prefix()}/heads/{window(0).start}-{window(0).end}.json"
    pointer = {"fingerprint": day1["fingerprint"], "node_id": str(FUNDING)}
    events.blobs.put(head0, json.dumps(dict(pointer, range=window(0).to_json())).encode())
    with pytest.raises(UnpublishableSegment, match="repointed"):
        events.commit_snapshot(FUNDING, V, stable_end_s=window(1).end, now_s=NOW)
    assert events.snapshot_as_ofs(FUNDING) == []


# -- the audit of the whole store -------------------------------------------------------------


def publish_bars(store: ArtifactStore, bars: BarsFactory) -> NodeId:
    node = NodeId.parse("ohlcv:binance:BTC/USDT:1h")
    identity = ManifestIdentity(
        node_id=str(node),
        exchange=node.exchange,
        symbol=node.symbol,
        timeframe=node.timeframe.code,
        interval_s=node.interval_s,
        origin_s=node.timeframe.origin_s,
        window=window(0),
        conformance_version="v2",
        stabilization_bars=2,
        producer="seamless@test",
    )
    frame = bars(window(0).start, 24, interval_s=HOUR)
    store.publish(node, frame, build_manifest(identity, frame, [], []))
    store.advance_snapshot(node, "v2", window(0).end, NOW)
    return node


def test_verify_all_is_clean_with_event_segments(
    artifact_store: ArtifactStore, events: EventSegmentStore, bars: BarsFactory
) -> None:
    bar_node = publish_bars(artifact_store, bars)
    for node in (FUNDING, TRADES):
        for day in range(2):
            publish_day(events, node, day)
        assert events.commit_snapshot(node, V, stable_end_s=window(1).end, now_s=NOW)
    events.publish(TRADES, TRADES.spec.empty(), manifest_of(TRADES, TRADES.spec.empty(), 2))
    assert artifact_store.verify_all() == []
    assert artifact_store.list_nodes() == [bar_node]  # bar nodes only
    assert events.list_nodes() == [FUNDING, TRADES]


def test_verify_all_reports_a_tampered_event_segment(
    artifact_store: ArtifactStore, events: EventSegmentStore, bars: BarsFactory
) -> None:
    publish_bars(artifact_store, bars)
    _, funding = publish_day(events, FUNDING, 0)
    _, trades = publish_day(events, TRADES, 0)
    data_key, _ = keys(TRADES, trades["fingerprint"])
    events.blobs.put(data_key, encode_event_segment(TRADES.spec, trades_rows(0, seed=8)))
    _, funding_manifest_key = keys(FUNDING, funding["fingerprint"])
    edited = dict(funding, row_count=99)
    events.blobs.put(funding_manifest_key, json.dumps(edited).encode())
    problems = artifact_store.verify_all()
    assert [(p.kind, p.uri) for p in problems] == sorted(
        [
            ("fingerprint_mismatch", events.uri_for(TRADES, trades["fingerprint"])),
            ("manifest_mismatch", events.blobs.uri(funding_manifest_key)),
        ]
    )
    assert "row_count" in next(p.detail for p in problems if p.kind == "manifest_mismatch")


def test_verify_all_reports_an_event_snapshot_whose_manifest_changed(
    artifact_store: ArtifactStore, events: EventSegmentStore
) -> None:
    _, manifest = publish_day(events, FUNDING, 0)
    assert events.commit_snapshot(FUNDING, V, stable_end_s=window(0).end, now_s=NOW)
    assert artifact_store.verify_all() == []
    _, manifest_key = keys(FUNDING, manifest["fingerprint"])
    events.blobs.put(manifest_key, json.dumps(manifest, sort_keys=True).encode())  # same content
    problems = artifact_store.verify_all()
    assert [p.kind for p in problems] == ["bad_snapshot"]
    assert "hash to" in problems[0].detail


def test_event_tables_decode_to_their_kind(events: EventSegmentStore) -> None:
    frame = trades_rows(0)
    data = encode_event_segment(TRADES.spec, frame)
    pd.testing.assert_frame_equal(
        event_frame_from_table(TRADES.spec, read_event_table(TRADES.spec, data, "x")), frame
    )
    with pytest.raises(ArtifactIntegrityError, match="instead of the funding table"):
        read_event_table(FUNDING.spec, data, "x")
