"""Writing and reading sealed segments and the head pointers that name a partition's
current segment. Segments are write-once and content-addressed; a revised partition is a
new segment and only its head pointer moves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from seamless_assets.core.fingerprint import FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import CANONICAL_COLUMNS, TS, Range, empty_frame, is_canonical
from seamless_assets.errors import ArtifactIntegrityError, ArtifactNotFound, WriteOnceViolation
from seamless_assets.nodes import NodeId

from .codec import (
    decode_segment,
    encode_manifest,
    encode_segment,
    fingerprint_slices,
    frame_from_table,
    identity_from_manifest,
    read_segment_table,
)
from .layout import DATA_FILE, HEAD_NAME, MANIFEST_FILE, LazyUri, StoreLayout


@dataclass(frozen=True)
class PublishResult:
    """Outcome of `ArtifactStore.publish`: `written` is True when this call stored segment
    bytes (a new segment, or completing/restoring one), False when it was already sealed."""

    fingerprint: str
    uri: str
    written: bool
    encode_s: float = 0.0  # time spent encoding the segment and its manifest (measured)


class LoadedSegment(NamedTuple):
    """A segment as read: its table and, when verified, its manifest (bytes and parsed)."""

    table: pa.Table
    identity: FingerprintIdentity | None
    data_key: str
    manifest: dict[str, Any] | None
    manifest_bytes: bytes | None


class SegmentStore(StoreLayout):
    """Write-once, fingerprinted segments and partition head pointers over a `BlobStore`."""

    # -- writing ------------------------------------------------------------------------

    def publish(
        self, node: NodeId, frame: pd.DataFrame, manifest: Mapping[str, Any]
    ) -> PublishResult:
        """Seal `frame` as the segment its manifest's fingerprint names; move the head.

        Data first, manifest last, both create-only; nothing is ever overwritten. A sealed
        segment is left alone (`written=False`) once its data is checked; a crashed earlier
        publish (data without manifest) is completed after checking the existing data.
        Raises WriteOnceViolation (unsealed) or ArtifactIntegrityError (sealed) when bytes
        already stored under the fingerprint hold other bars.
        """
        identity = identity_from_manifest(manifest)
        fingerprint = manifest.get("fingerprint")
        if identity.node_id != str(node) or identity.interval_s != node.interval_s:
            raise ValueError(
                f"manifest is for {identity.node_id!r} every {identity.interval_s}s but is "
                f"being published under {str(node)!r} every {node.interval_s}s"
            )
        if not isinstance(fingerprint, str):
            raise ValueError("manifest needs the frame's `fingerprint` (dataset_fingerprint)")
        _check_segment_frame(frame, identity.range)
        actual = dataset_fingerprint(frame, identity)
        if actual != fingerprint:
            raise ValueError(
                f"frame fingerprints to {actual} but the manifest claims {fingerprint}; "
                "recompute the manifest from the frame being published"
            )
        encode_started = time.perf_counter()
        manifest_bytes = encode_manifest(manifest)
        segment_dir = self._segment_dir(node, fingerprint)
        data_key, manifest_key = f"{segment_dir}/{DATA_FILE}", f"{segment_dir}/{MANIFEST_FILE}"
        data = encode_segment(frame)
        encode_s = time.perf_counter() - encode_started
        sealed = self.blobs.exists(manifest_key)
        # Data first (create-only; a sealed segment whose data was lost gets it back).
        written = self.blobs.put_if_absent(data_key, data)
        if not written and not self._holds_same_bars(data_key, data, identity, fingerprint):
            uri = self.blobs.uri(data_key)
            if sealed:
                raise ArtifactIntegrityError(
                    f"{uri} does not hold the bars of its manifest's {fingerprint}: the file "
                    "was altered or corrupted; move its segment directory aside and publish "
                    "again"
                )
            raise WriteOnceViolation(
                f"{uri} exists without a manifest and holds other bars than {fingerprint}; "
                "it is immutable, so inspect it and move it aside before publishing again"
            )
        if not sealed:  # the manifest last: its presence seals the segment
            written = self.blobs.put_if_absent(manifest_key, manifest_bytes) or written
        self._point_head(node, identity.range, fingerprint)
        return PublishResult(fingerprint, self.blobs.uri(segment_dir), written, encode_s)

    def _holds_same_bars(
        self, key: str, data: bytes, identity: FingerprintIdentity, fingerprint: str
    ) -> bool:
        """Whether existing data under `key` holds exactly the bars being published."""
        existing = self.blobs.get(key)
        if existing is None:  # removed meanwhile: create it after all
            return self.blobs.put_if_absent(key, data) or self.blobs.get(key) == data
        if existing == data:
            return True
        # Another encoder version may write other bytes for the same bars: equal content is fine.
        try:
            existing_frame = decode_segment(existing, key)
        except ArtifactIntegrityError:
            return False
        return dataset_fingerprint(existing_frame, identity) == fingerprint

    def _point_head(self, node: NodeId, window: Range, fingerprint: str) -> None:
        pointer = {"fingerprint": fingerprint, "node_id": str(node), "range": window.to_json()}
        key, data = self._head_key(node, window), encode_manifest(pointer)
        if self.blobs.get(key) != data:
            self.blobs.put(key, data)

    # -- reading ------------------------------------------------------------------------

    def heads(self, node: NodeId) -> dict[Range, str]:
        """Every partition's current segment fingerprint, in time order."""
        return dict(self._heads(node, window=None))

    def head_windows(self, node: NodeId) -> list[Range]:
        """Every partition window with a head, in time order: one listing, no reads."""
        prefix = f"{self.segment_prefix(node)}/heads/"
        names = (HEAD_NAME.match(key[len(prefix) :]) for key in self.blobs.list(prefix))
        return sorted(Range(int(m["start"]), int(m["end"])) for m in names if m)

    def head(self, node: NodeId, window: Range) -> str | None:
        """The current segment of the partition that is exactly `window`, if any."""
        key = self._head_key(node, window)
        return self._read_head(key)

    def _heads(self, node: NodeId, window: Range | None) -> list[tuple[Range, str]]:
        prefix = f"{self.segment_prefix(node)}/heads/"
        wanted = []
        for key in self.blobs.list(prefix):
            match = HEAD_NAME.match(key[len(prefix) :])
            if match is None:
                continue
            partition = Range(int(match["start"]), int(match["end"]))
            if window is None or partition.intersect(window) is not None:
                wanted.append((partition, key))
        fingerprints = self._map(lambda item: self._read_head(item[1]), wanted)
        return sorted((p, fp) for (p, _), fp in zip(wanted, fingerprints, strict=True) if fp)

    def _read_head(self, key: str) -> str | None:
        data = self.blobs.get(key)
        if data is None:
            return None
        try:
            return str(json.loads(data)["fingerprint"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactIntegrityError(f"{self.blobs.uri(key)} is not a head pointer") from exc

    def manifest_key(self, node: NodeId, fingerprint: str) -> str:
        return f"{self._segment_dir(node, fingerprint)}/{MANIFEST_FILE}"

    def read_manifest(self, node: NodeId, fingerprint: str) -> dict[str, Any] | None:
        key = self.manifest_key(node, fingerprint)
        return self._parse_manifest(key, self.blobs.get(key))

    def _parse_manifest(self, key: str, data: bytes | None) -> dict[str, Any] | None:
        if data is None:
            return None
        try:
            manifest = json.loads(data)
        except ValueError as exc:
            raise ArtifactIntegrityError(f"{self.blobs.uri(key)} is not JSON: {exc}") from exc
        if not isinstance(manifest, dict):
            raise ArtifactIntegrityError(f"{self.blobs.uri(key)} is not a JSON object")
        return manifest

    def read_segment(self, node: NodeId, fingerprint: str, verify: bool = True) -> pd.DataFrame:
        """The canonical frame of one segment; with `verify`, proven to match its manifest."""
        table, identity, data_key, _, _ = self._load_segment(node, fingerprint, verify)
        frame = frame_from_table(table)
        if identity is not None and dataset_fingerprint(frame, identity) != fingerprint:
            raise ArtifactIntegrityError(_mismatch(self.blobs.uri(data_key), fingerprint))
        return frame

    def read_range(self, node: NodeId, window: Range, verify: bool = True) -> pd.DataFrame:
        """Bars of the head segments overlapping `window`, clipped to it, as one frame.

        Segments are fetched and decoded on a thread pool, then verified together.
        """
        return self._read_segments(node, self._heads(node, window), window, verify)

    def _read_segments(
        self,
        node: NodeId,
        heads: Sequence[tuple[Range, str]],
        window: Range,
        verify: bool,
        check: Callable[[int, LoadedSegment], None] | None = None,
    ) -> pd.DataFrame:
        """Bars of the given `(partition, fingerprint)` segments, clipped to `window`;
        with `verify`, `check(i, loaded)` also vets the i-th segment and its manifest."""
        loaded = self._map(lambda head: self._load_segment(node, head[1], verify), heads)
        if not loaded:
            return empty_frame()
        if verify and check is not None:
            for i, segment in enumerate(loaded):
                check(i, segment)
        frame = frame_from_table(pa.concat_tables([segment.table for segment in loaded]))
        if verify:
            slices = [(s.table.num_rows, s.identity) for s in loaded if s.identity]
            actual = fingerprint_slices(frame, slices)
            for (_, expected), got, segment in zip(heads, actual, loaded, strict=True):
                if got != expected:
                    raise ArtifactIntegrityError(
                        _mismatch(self.blobs.uri(segment.data_key), expected)
                    )
        ts = frame[TS].to_numpy()
        if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
            # Overlapping partitions: one bar per ts, from the later-starting head.
            order = np.argsort(ts, kind="stable")
            ordered = ts[order]
            index = order[np.append(ordered[1:] != ordered[:-1], True)]
        else:
            index = np.arange(len(ts))
        index = index[(ts[index] >= window.start) & (ts[index] < window.end)]
        if len(index) == len(ts):
            return frame
        return pd.DataFrame({c: frame[c].to_numpy()[index] for c in CANONICAL_COLUMNS})

    def _load_segment(self, node: NodeId, fingerprint: str, verify: bool) -> LoadedSegment:
        """Decoded data, the identity its manifest vouches for (with `verify`), its key."""
        segment_dir = self._segment_dir(node, fingerprint)
        data_key, manifest_key = f"{segment_dir}/{DATA_FILE}", f"{segment_dir}/{MANIFEST_FILE}"
        data = self.blobs.get(data_key)
        manifest_bytes = self.blobs.get(manifest_key) if verify else None
        manifest = self._parse_manifest(manifest_key, manifest_bytes)
        uri = LazyUri(self.blobs, data_key)
        if data is None:
            sealed = manifest is not None if verify else self.blobs.exists(manifest_key)
            if not sealed:
                raise ArtifactNotFound(
                    f"no segment {fingerprint} for {node} at {self.blobs.uri(segment_dir)}"
                )
            raise ArtifactIntegrityError(
                f"{uri} is missing although its manifest exists; publish the partition "
                "again (it restores the data) or restore the file"
            )
        table = read_segment_table(data, uri)
        if not verify:
            return LoadedSegment(table, None, data_key, None, None)
        if manifest is None:
            raise ArtifactIntegrityError(
                f"{uri} has no manifest, so it is not a sealed segment (an interrupted "
                "publish); republish the partition"
            )
        try:
            identity = identity_from_manifest(manifest)
        except ValueError as exc:
            raise ArtifactIntegrityError(f"manifest of {uri} is malformed: {exc}") from exc
        if manifest.get("fingerprint") != fingerprint or identity.node_id != str(node):
            raise ArtifactIntegrityError(
                f"manifest of {uri} is for {identity.node_id} {manifest.get('fingerprint')}, "
                f"not {node} {fingerprint}"
            )
        return LoadedSegment(table, identity, data_key, manifest, manifest_bytes)


def _check_segment_frame(frame: pd.DataFrame, window: Range) -> None:
    if not is_canonical(frame):
        raise ValueError(
            f"a segment holds a canonical frame {list(CANONICAL_COLUMNS)} (ts int64, the rest "
            f"float64); got {[f'{c}:{frame[c].dtype}' for c in frame.columns]}"
        )
    ts = frame[TS].to_numpy()
    if len(ts) and (ts[0] < window.start or ts[-1] >= window.end):
        raise ValueError(f"frame has bars outside its partition {window}")
    if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        raise ValueError("frame ts must be strictly increasing (sorted, unique); conform it first")


def _mismatch(uri: str, fingerprint: str) -> str:
    return (
        f"{uri} does not hash to its manifest's {fingerprint}: the file was altered or "
        "corrupted; restore it from a backup, or move its segment directory aside and "
        "publish the partition again"
    )
