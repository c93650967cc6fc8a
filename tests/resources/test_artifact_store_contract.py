"""The artifact store contract: every blob backend passes this suite via `artifact_store`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from resources.artifacts import ArtifactStore, BlobStore, LocalDirectoryBlobStore, validate_key
from resources.artifacts.base import encode_segment, fingerprint_slices
from seamless_assets.core.fingerprint import FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import Range, empty_frame, is_canonical
from seamless_assets.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    StoreError,
    WriteOnceViolation,
)
from seamless_assets.nodes import NodeId

from .conftest import DAY, T0, BarsFactory, ManifestFactory

NODE = NodeId.parse("ohlcv:binance:BTC/USDT:1h")
HOUR = 3600
DAY1 = Range(T0, T0 + DAY)


def snapshot(blobs: BlobStore) -> dict[str, bytes | None]:
    """Every key and its bytes: proves that an operation wrote nothing."""
    return {key: blobs.get(key) for key in blobs.list("")}


def segment_keys(store: ArtifactStore, node: NodeId, fingerprint: str) -> tuple[str, str]:
    directory = f"{store.segment_prefix(node)}/segments/sha256-{fingerprint.split(':')[1]}"
    return f"{directory}/data.parquet", f"{directory}/manifest.json"


def publish_day(
    store: ArtifactStore,
    bars: BarsFactory,
    manifest_for: ManifestFactory,
    day: int = 0,
    seed: int = 0,
    node: NodeId = NODE,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    window = Range(T0 + day * DAY, T0 + (day + 1) * DAY)
    frame = bars(window.start, 24, interval_s=HOUR, seed=seed + 100 * day)
    manifest = manifest_for(node, frame, window)
    store.publish(node, frame, manifest)
    return frame, manifest


def test_blobs_satisfy_the_protocol(artifact_store: ArtifactStore) -> None:
    assert isinstance(artifact_store.blobs, BlobStore)


# -- publish and read -----------------------------------------------------------------------


def test_publish_then_read_back(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    frame = bars(T0, 24, interval_s=HOUR)
    manifest = manifest_for(NODE, frame, DAY1)
    result = artifact_store.publish(NODE, frame, manifest)
    assert result.written and result.fingerprint == manifest["fingerprint"]
    assert result.uri == artifact_store.uri_for(NODE, result.fingerprint)
    assert result.uri.endswith(f"/segments/sha256-{result.fingerprint[7:]}")
    assert artifact_store.read_manifest(NODE, result.fingerprint) == manifest
    got = artifact_store.read_segment(NODE, result.fingerprint)
    assert is_canonical(got)
    pd.testing.assert_frame_equal(got, frame)
    assert artifact_store.heads(NODE) == {DAY1: result.fingerprint}
    assert artifact_store.head(NODE, DAY1) == result.fingerprint
    assert artifact_store.head(NODE, Range(T0, T0 + HOUR)) is None
    assert artifact_store.list_nodes() == [NODE]
    assert artifact_store.verify_all() == []


def test_manifest_bytes_are_deterministic_json(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    _, manifest = publish_day(artifact_store, bars, manifest_for)
    _, manifest_key = segment_keys(artifact_store, NODE, manifest["fingerprint"])
    expected = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert artifact_store.blobs.get(manifest_key) == expected.encode()


def test_second_publish_writes_nothing(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    frame, manifest = publish_day(artifact_store, bars, manifest_for)
    before = snapshot(artifact_store.blobs)
    again = artifact_store.publish(NODE, frame.copy(), dict(manifest, producer={"other": 1}))
    assert not again.written and again.fingerprint == manifest["fingerprint"]
    assert snapshot(artifact_store.blobs) == before


def test_a_different_frame_cannot_claim_a_fingerprint(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    _, manifest = publish_day(artifact_store, bars, manifest_for)
    before = snapshot(artifact_store.blobs)
    impostor = bars(T0, 24, interval_s=HOUR, seed=99)
    with pytest.raises(ValueError, match="claims"):
        artifact_store.publish(NODE, impostor, manifest)
    assert snapshot(artifact_store.blobs) == before


def test_publish_rejects_bad_input_before_writing(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    frame = bars(T0, 24, interval_s=HOUR)
    manifest = manifest_for(NODE, frame, DAY1)
    other = NodeId.parse("ohlcv:binance:ETH/USDT:1h")
    with pytest.raises(ValueError, match="published under"):
        artifact_store.publish(other, frame, manifest)
    with pytest.raises(ValueError, match=r"conformance\.version"):
        artifact_store.publish(NODE, frame, {k: v for k, v in manifest.items() if k != "range"})
    with pytest.raises(ValueError, match="outside its partition"):
        outside = bars(T0 - HOUR, 24, interval_s=HOUR)
        artifact_store.publish(NODE, outside, manifest_for(NODE, outside, DAY1))
    with pytest.raises(ValueError, match="canonical"):
        artifact_store.publish(NODE, frame.astype({"volume": "float32"}), manifest)
    with pytest.raises(ValueError, match="plain JSON"):
        artifact_store.publish(NODE, frame, dict(manifest, extra=float("nan")))
    assert artifact_store.blobs.list("") == []


def test_same_bars_give_byte_identical_segments(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    frame = bars(T0, 24, interval_s=HOUR)
    twin = NodeId.parse("ohlcv:bybit:BTC/USDT:1h")  # same bars, other identity
    first = artifact_store.publish(NODE, frame, manifest_for(NODE, frame, DAY1))
    second = artifact_store.publish(twin, frame.copy(), manifest_for(twin, frame, DAY1))
    assert first.fingerprint != second.fingerprint
    data_1, _ = segment_keys(artifact_store, NODE, first.fingerprint)
    data_2, _ = segment_keys(artifact_store, twin, second.fingerprint)
    assert artifact_store.blobs.get(data_1) == artifact_store.blobs.get(data_2)


def test_encoding_follows_the_fingerprint_normalisation(bars: BarsFactory) -> None:
    frame = bars(T0, 24, interval_s=HOUR)
    frame.loc[3, "volume"] = np.nan
    frame.loc[4, "open"] = 0.0
    variant = frame.copy()
    variant.loc[3, "volume"] = -np.nan  # another NaN bit pattern
    variant.loc[4, "open"] = -0.0
    identity = FingerprintIdentity(str(NODE), HOUR, DAY1, "v2")
    assert dataset_fingerprint(frame, identity) == dataset_fingerprint(variant, identity)
    assert encode_segment(frame) == encode_segment(variant)
    assert encode_segment(frame[::-1][::-1]) == encode_segment(frame)


def test_fingerprint_slices_match_dataset_fingerprint(bars: BarsFactory) -> None:
    frames = [bars(T0 + d * DAY, n, interval_s=HOUR, seed=d) for d, n in enumerate([24, 0, 7])]
    frames[2].loc[1, "close"] = np.nan
    frames[2].loc[2, "low"] = -0.0
    identities = [
        FingerprintIdentity(str(NODE), HOUR, Range(T0 + d * DAY, T0 + (d + 1) * DAY), "v2")
        for d in range(3)
    ]
    joined = pd.concat(frames, ignore_index=True)
    slices = [(len(f), i) for f, i in zip(frames, identities, strict=True)]
    assert fingerprint_slices(joined, slices) == [
        dataset_fingerprint(f, i) for f, i in zip(frames, identities, strict=True)
    ]


# -- crash safety and write-once ------------------------------------------------------------


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
        self.writes.append(key)
        return written


class CrashBeforeManifest(RecordingBlobs):
    """A backend wrapper whose process 'dies' when the manifest is about to be written."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if key.endswith("manifest.json"):
            raise KeyboardInterrupt("simulated crash")
        return super().put_if_absent(key, data)


def test_a_crash_before_the_manifest_leaves_no_sealed_segment_and_republish_completes(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    crashing = ArtifactStore(CrashBeforeManifest(artifact_store.blobs))
    frame = bars(T0, 24, interval_s=HOUR)
    manifest = manifest_for(NODE, frame, DAY1)
    with pytest.raises(KeyboardInterrupt):
        crashing.publish(NODE, frame, manifest)
    fingerprint = manifest["fingerprint"]
    data_key, _ = segment_keys(artifact_store, NODE, fingerprint)
    assert artifact_store.blobs.exists(data_key)
    assert artifact_store.read_manifest(NODE, fingerprint) is None
    assert artifact_store.heads(NODE) == {}  # the head never points at an unsealed segment
    with pytest.raises(ArtifactIntegrityError, match="no manifest"):
        artifact_store.read_segment(NODE, fingerprint)
    assert [p.kind for p in artifact_store.verify_all()] == ["orphan_data"]

    result = artifact_store.publish(NODE, frame, manifest)
    assert result.written
    pd.testing.assert_frame_equal(artifact_store.read_segment(NODE, fingerprint), frame)
    assert artifact_store.heads(NODE) == {DAY1: fingerprint}
    assert artifact_store.verify_all() == []


def test_writes_go_data_then_manifest_then_head(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    recorder = RecordingBlobs(artifact_store.blobs)
    frame = bars(T0, 24, interval_s=HOUR)
    ArtifactStore(recorder).publish(NODE, frame, manifest_for(NODE, frame, DAY1))
    assert [key.rsplit("/", 1)[1] for key in recorder.writes] == [
        "data.parquet",
        "manifest.json",
        f"{DAY1.start}-{DAY1.end}.json",
    ]


def test_foreign_bytes_under_an_unsealed_fingerprint_are_never_overwritten(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    frame = bars(T0, 24, interval_s=HOUR)
    manifest = manifest_for(NODE, frame, DAY1)
    data_key, _ = segment_keys(artifact_store, NODE, manifest["fingerprint"])
    other = bars(T0, 24, interval_s=HOUR, seed=5)
    assert artifact_store.blobs.put_if_absent(data_key, encode_segment(other))
    with pytest.raises(WriteOnceViolation):
        artifact_store.publish(NODE, frame, manifest)
    assert artifact_store.blobs.get(data_key) == encode_segment(other)
    assert artifact_store.read_manifest(NODE, manifest["fingerprint"]) is None


def test_put_if_absent_never_clobbers(artifact_store: ArtifactStore) -> None:
    blobs = artifact_store.blobs
    assert blobs.put_if_absent("a/b/c.bin", b"first")
    assert not blobs.put_if_absent("a/b/c.bin", b"second")
    assert blobs.get("a/b/c.bin") == b"first"
    blobs.put("a/b/pointer.json", b"1")
    blobs.put("a/b/pointer.json", b"2")
    assert blobs.get("a/b/pointer.json") == b"2"
    assert blobs.get("a/b/missing") is None and not blobs.exists("a/b/missing")
    assert blobs.list("a/b/") == ["a/b/c.bin", "a/b/pointer.json"]
    assert blobs.list("a/b/c") == ["a/b/c.bin"]
    assert blobs.list("a/bc") == []


# -- integrity ------------------------------------------------------------------------------


def test_a_flipped_byte_is_detected(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    _, manifest = publish_day(artifact_store, bars, manifest_for)
    fingerprint = manifest["fingerprint"]
    data_key, _ = segment_keys(artifact_store, NODE, fingerprint)
    data = bytearray(artifact_store.blobs.get(data_key) or b"")
    data[len(data) // 3] ^= 0xFF
    artifact_store.blobs.put(data_key, bytes(data))  # tampering, bypassing the store
    with pytest.raises(ArtifactIntegrityError) as raised:
        artifact_store.read_segment(NODE, fingerprint)
    assert artifact_store.blobs.uri(data_key) in str(raised.value)
    with pytest.raises(ArtifactIntegrityError):
        artifact_store.read_range(NODE, DAY1)
    problems = artifact_store.verify_all()
    assert len(problems) == 1
    assert problems[0].kind in ("fingerprint_mismatch", "unreadable")
    assert problems[0].uri == artifact_store.uri_for(NODE, fingerprint)


def test_substituted_bars_are_detected(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    publish_day(artifact_store, bars, manifest_for, day=0)
    _, manifest = publish_day(artifact_store, bars, manifest_for, day=1)
    fingerprint = manifest["fingerprint"]
    data_key, _ = segment_keys(artifact_store, NODE, fingerprint)
    forged = bars(T0 + DAY, 24, interval_s=HOUR, seed=42)  # a valid Parquet, other bars
    artifact_store.blobs.put(data_key, encode_segment(forged))
    with pytest.raises(ArtifactIntegrityError, match="does not hash"):
        artifact_store.read_segment(NODE, fingerprint)
    with pytest.raises(ArtifactIntegrityError, match="does not hash"):
        artifact_store.read_range(NODE, Range(T0, T0 + 2 * DAY))
    unchecked = artifact_store.read_segment(NODE, fingerprint, verify=False)
    pd.testing.assert_frame_equal(unchecked, forged)
    assert [(p.kind, p.uri) for p in artifact_store.verify_all()] == [
        ("fingerprint_mismatch", artifact_store.uri_for(NODE, fingerprint))
    ]
    # Publishing again cannot overwrite the sealed segment; it says so and moves no head.
    heads = artifact_store.heads(NODE)
    with pytest.raises(ArtifactIntegrityError, match="move its segment directory aside"):
        artifact_store.publish(NODE, bars(T0 + DAY, 24, interval_s=HOUR, seed=100), manifest)
    assert artifact_store.heads(NODE) == heads


def test_missing_segments(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    unknown = "sha256:" + "0" * 64
    with pytest.raises(ArtifactNotFound):
        artifact_store.read_segment(NODE, unknown)
    with pytest.raises(ArtifactNotFound):
        artifact_store.read_segment(NODE, unknown, verify=False)
    assert artifact_store.read_manifest(NODE, unknown) is None
    # A manifest whose data vanished is an integrity failure, not "not found".
    publish_day(artifact_store, bars, manifest_for, day=0)
    frame = bars(T0 + DAY, 24, interval_s=HOUR)
    manifest = manifest_for(NODE, frame, Range(T0 + DAY, T0 + 2 * DAY))
    _, manifest_key = segment_keys(artifact_store, NODE, manifest["fingerprint"])
    artifact_store.blobs.put_if_absent(manifest_key, json.dumps(manifest).encode())
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        artifact_store.read_segment(NODE, manifest["fingerprint"])
    assert [(p.kind, p.uri) for p in artifact_store.verify_all()] == [
        ("manifest_without_data", artifact_store.uri_for(NODE, manifest["fingerprint"]))
    ]
    # Publishing the partition again restores the data without touching the manifest.
    assert artifact_store.publish(NODE, frame, manifest).written
    pd.testing.assert_frame_equal(artifact_store.read_segment(NODE, manifest["fingerprint"]), frame)
    assert artifact_store.verify_all() == []


# -- keys and layout ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a\\b", "a\x00b", "", ".hidden", "a/"],
)
def test_keys_cannot_escape_the_root(artifact_store: ArtifactStore, key: str) -> None:
    blobs = artifact_store.blobs
    for operation in (
        lambda: blobs.get(key),
        lambda: blobs.exists(key),
        lambda: blobs.put_if_absent(key, b"x"),
        lambda: blobs.put(key, b"x"),
    ):
        with pytest.raises(ValueError):
            operation()
    if key not in ("", "a/"):  # valid as prefixes
        with pytest.raises(ValueError):
            blobs.list(key)
    assert blobs.list("") == []


def test_validate_key_accepts_ordinary_keys() -> None:
    assert validate_key("exchange=binance/symbol=BTC%2fUSDT/x.json") == (
        "exchange=binance/symbol=BTC%2fUSDT/x.json"
    )
    assert validate_key("", allow_prefix=True) == ""
    assert validate_key("a/b/", allow_prefix=True) == "a/b/"


@pytest.mark.parametrize("symbol", ["../../etc", "..", "a/b\\c", "BTC/USDT:USDT", "..%2f"])
def test_hostile_symbols_stay_under_their_node_prefix(
    artifact_store: ArtifactStore,
    bars: BarsFactory,
    manifest_for: ManifestFactory,
    symbol: str,
) -> None:
    node = NodeId.of("binance", symbol, "1h")
    frame, _ = publish_day(artifact_store, bars, manifest_for, node=node)
    prefix = artifact_store.segment_prefix(node)
    assert prefix.startswith("exchange=binance/symbol=") and prefix.endswith("/timeframe=1h")
    assert prefix.count("/") == 2 and ".." not in prefix.split("/")
    keys = artifact_store.blobs.list("")
    assert keys and all(key.startswith(prefix + "/") for key in keys)
    root = artifact_store.blobs.uri("")
    assert all(artifact_store.blobs.uri(key).startswith(root) for key in keys)
    pd.testing.assert_frame_equal(artifact_store.read_range(node, DAY1), frame)
    assert artifact_store.list_nodes() == [node]


# -- ranges, heads and revisions ------------------------------------------------------------


def test_read_range_spans_segments_and_clips_to_the_window(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    frames = [publish_day(artifact_store, bars, manifest_for, day=d)[0] for d in range(4)]
    everything = pd.concat(frames, ignore_index=True)
    window = Range(T0 + 12 * HOUR, T0 + 2 * DAY + 5 * HOUR)
    got = artifact_store.read_range(NODE, window)
    expected = everything[(everything.ts >= window.start) & (everything.ts < window.end)]
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    assert got.ts.iloc[0] == window.start and got.ts.iloc[-1] == window.end - HOUR
    whole = artifact_store.read_range(NODE, Range(T0 - DAY, T0 + 10 * DAY), verify=False)
    pd.testing.assert_frame_equal(whole, everything)
    assert artifact_store.read_range(NODE, Range(T0 + 5 * DAY, T0 + 6 * DAY)).equals(empty_frame())


def test_a_revision_moves_the_head_and_keeps_the_old_segment(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    old, old_manifest = publish_day(artifact_store, bars, manifest_for, seed=1)
    new, new_manifest = publish_day(artifact_store, bars, manifest_for, seed=2)
    assert artifact_store.head(NODE, DAY1) == new_manifest["fingerprint"]
    pd.testing.assert_frame_equal(artifact_store.read_range(NODE, DAY1), new)
    pd.testing.assert_frame_equal(
        artifact_store.read_segment(NODE, old_manifest["fingerprint"]), old
    )
    # Republishing the old bars is a no-op for the segment but moves the head back.
    again = artifact_store.publish(NODE, old, old_manifest)
    assert not again.written
    assert artifact_store.head(NODE, DAY1) == old_manifest["fingerprint"]
    assert artifact_store.verify_all() == []


def test_verify_all_walks_every_node(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    eth = NodeId.parse("ohlcv:binance:ETH/USDT:1h")
    publish_day(artifact_store, bars, manifest_for, node=NODE)
    _, manifest = publish_day(artifact_store, bars, manifest_for, node=eth, day=2)
    assert artifact_store.list_nodes() == [NODE, eth]
    data_key, _ = segment_keys(artifact_store, eth, manifest["fingerprint"])
    artifact_store.blobs.put(data_key, b"PAR1 not really parquet PAR1")
    dangling = f"{artifact_store.segment_prefix(NODE)}/heads/{T0 + DAY}-{T0 + 2 * DAY}.json"
    artifact_store.blobs.put(dangling, json.dumps({"fingerprint": "sha256:" + "a" * 64}).encode())
    problems = artifact_store.verify_all()
    assert sorted((p.kind, p.uri) for p in problems) == [
        ("dangling_head", artifact_store.blobs.uri(dangling)),
        ("unreadable", artifact_store.uri_for(eth, manifest["fingerprint"])),
    ]


# -- local directory backend ----------------------------------------------------------------


def test_local_writes_are_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = LocalDirectoryBlobStore(tmp_path / "root")

    def power_cut(fd: int) -> None:
        raise OSError(5, "simulated I/O error before the data reached the disk")

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(StoreError, match="simulated"):
        blobs.put_if_absent("seg/data.parquet", b"x" * 1_000_000)
    with pytest.raises(StoreError, match="simulated"):
        blobs.put("seg/head.json", b"{}")
    monkeypatch.undo()
    assert blobs.get("seg/data.parquet") is None and blobs.get("seg/head.json") is None
    assert blobs.list("") == []
    assert [p.name for p in (tmp_path / "root" / "seg").iterdir()] == []  # no temp left
    assert blobs.uri("seg/data.parquet") == (tmp_path / "root/seg/data.parquet").as_uri()


def _put_hidden(store: ArtifactStore, key: str, data: bytes) -> str:
    """Write a backend-hidden file beside the keys (as a killed writer leaves one)."""
    blobs = store.blobs
    if isinstance(blobs, LocalDirectoryBlobStore):
        path = blobs.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path.as_uri()
    name = blobs._root + key  # type: ignore[attr-defined]
    blobs.client.put_object(Bucket=blobs.bucket, Key=name, Body=data)  # type: ignore[attr-defined]
    return f"s3://{blobs.bucket}/{name}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["heads", "segments/sha256-" + "0" * 64, "snapshots"])
def test_verify_reports_temp_files_with_their_path(
    artifact_store: ArtifactStore, bars: BarsFactory, manifest_for: ManifestFactory, where: str
) -> None:
    publish_day(artifact_store, bars, manifest_for)
    key = f"{artifact_store.segment_prefix(NODE)}/{where}/.x.json.1@00000000.ab.tmp"
    uri = _put_hidden(artifact_store, key, b"partial")
    problems = [p for p in artifact_store.verify_all() if p.kind == "temp_file"]
    assert [p.uri for p in problems] == [uri]


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_dead_writers_temp_files_do_not_outlive_the_next_write(
    tmp_path: Path, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    from resources.artifacts import filesystem

    store = ArtifactStore(LocalDirectoryBlobStore(tmp_path, fsync=False))
    frame, manifest = publish_day(store, bars, manifest_for)
    heads = store.blobs.root / store.segment_prefix(NODE) / "heads"  # type: ignore[attr-defined]
    host = filesystem._HOST
    dead = heads / f".{T0}-{T0 + DAY}.json.{_dead_pid()}@{host}.0a.tmp"
    alive = heads / f".{T0}-{T0 + DAY}.json.{os.getpid()}@{host}.0b.tmp"
    old = heads / f".{T0}-{T0 + DAY}.json.0c.tmp"  # an older naming, no pid
    for path in (dead, alive, old):
        path.write_bytes(b"partial")
    os.utime(old, (0, 0))
    assert {p.kind for p in store.verify_all()} == {"temp_file"}
    # The run was killed while writing the head; the next run publishes the partition
    # again, and its first write into the directory sweeps what is stale.
    (heads / f"{T0}-{T0 + DAY}.json").unlink()
    rerun = ArtifactStore(LocalDirectoryBlobStore(tmp_path, fsync=False))
    rerun.publish(NODE, frame, manifest)
    assert rerun.head(NODE, DAY1) == manifest["fingerprint"]
    assert not dead.exists() and not old.exists()
    assert alive.exists()  # a live writer's file is left alone
    alive.unlink()
    assert rerun.verify_all() == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_artifact_files_honour_the_umask(
    tmp_path: Path, bars: BarsFactory, manifest_for: ManifestFactory, umask: int
) -> None:
    previous = os.umask(umask)
    try:
        store = ArtifactStore(LocalDirectoryBlobStore(tmp_path, fsync=False))
        publish_day(store, bars, manifest_for)
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert files and {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}
        assert store.verify_all() == []
        files[0].chmod(0o600 if umask != 0o077 else 0o644)
        [problem] = store.verify_all()
        assert (problem.kind, problem.uri) == ("permissions", files[0].as_uri())
    finally:
        os.umask(previous)


def test_a_writer_killed_after_sealing_leaves_no_temp_file_behind_the_next_publish(
    tmp_path: Path, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    """Killed between linking a key and unlinking its temporary file: the key exists, so
    the rerun writes nothing there, and must still sweep the leftover."""
    from resources.artifacts import filesystem

    store = ArtifactStore(LocalDirectoryBlobStore(tmp_path, fsync=False))
    frame, manifest = publish_day(store, bars, manifest_for)
    segment = store.blobs.root / store.segment_prefix(NODE) / "segments"  # type: ignore[attr-defined]
    (sealed,) = [d for d in segment.iterdir() if (d / "manifest.json").is_file()]
    left = [
        sealed / f".{name}.{_dead_pid()}@{filesystem._HOST}.0d.tmp"
        for name in ("manifest.json", "data.parquet")
    ]
    for path in left:
        path.write_bytes(b"partial")
    assert {p.kind for p in store.verify_all()} == {"temp_file"}
    rerun = ArtifactStore(LocalDirectoryBlobStore(tmp_path, fsync=False))
    assert not rerun.publish(NODE, frame, manifest).written
    assert [p for p in left if p.exists()] == []
    assert rerun.verify_all() == []
