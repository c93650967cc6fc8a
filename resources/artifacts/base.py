"""The artifact store: immutable, fingerprinted Parquet segments with manifests.

One store logic class (`ArtifactStore`) runs over a tiny blob protocol (`BlobStore`), so a
backend (local directory, S3) only moves bytes. Layout under the root, per node prefix
(`exchange={exchange}/symbol={symbol}/timeframe={timeframe}` by default, slugs escaped):

    {prefix}/segments/sha256-<hex>/data.parquet    zstd Parquet of the canonical frame
    {prefix}/segments/sha256-<hex>/manifest.json   written last: its presence seals the segment
    {prefix}/heads/{start}-{end}.json              mutable pointer: partition -> fingerprint

    {prefix}/snapshots/{as_of_s}.json              snapshot manifest: segments up to as_of
    {prefix}/snapshot_log/{as_of_s}.json           its publication time, written last

Segments are write-once and content-addressed; a revised partition is a new segment and
only its head pointer moves. Snapshots are write-once too and pin segment fingerprints, so
a snapshot resolves to the same bars forever.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seamless_assets.core.fingerprint import (
    ALGO,
    FingerprintIdentity,
    canonical_column_bytes,
    dataset_fingerprint,
    fingerprint_dirname,
)
from seamless_assets.core.frame import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    TS,
    Range,
    empty_frame,
    is_canonical,
    iso_utc,
)
from seamless_assets.core.snapshot import (
    Snapshot,
    SnapshotLogEntry,
    SnapshotSegment,
    build_snapshot,
    diff_bars,
    diff_segments,
    resolve_as_of,
)
from seamless_assets.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    SeamlessError,
    SnapshotNotFound,
    SnapshotRegression,
    WriteOnceViolation,
)
from seamless_assets.nodes import NodeId

DEFAULT_PARTITION_TEMPLATE = "exchange={exchange}/symbol={symbol}/timeframe={timeframe}"
DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"

_MIN_ITEMS_PER_WORKER = 8

T = TypeVar("T")
R = TypeVar("R")


# -- blobs ---------------------------------------------------------------------------------


@runtime_checkable
class BlobStore(Protocol):
    """Bytes under '/'-separated relative keys. All a backend has to provide."""

    def get(self, key: str) -> bytes | None:
        """The bytes at `key`, or None when there is no such key."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Atomically create `key`; True if written, False if it existed (never clobbers)."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Atomically create or replace `key` (for mutable pointers only)."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> builtins.list[str]:
        """Every key starting with `prefix` ('' for all), sorted."""
        ...

    def uri(self, key: str) -> str:
        """An absolute URI for a key or key prefix (`file:///…`, `s3://…`)."""
        ...


def validate_key(key: str, *, allow_prefix: bool = False) -> str:
    """Reject keys that could leave the store's root; return the key unchanged.

    A key is a relative path of '/'-separated, non-empty segments, none starting with '.'
    (so no '.' or '..', and names starting with '.' stay free for backends' temporary
    files), with no backslash or NUL. A prefix may also be '' or end with '/'.
    """
    if not isinstance(key, str):
        raise ValueError(f"blob key must be a string, got {type(key).__name__}")
    body = key
    if allow_prefix:
        if key == "":
            return key
        body = key[:-1] if key.endswith("/") else key
    problem = None
    if "\x00" in key:
        problem = "contains NUL"
    elif "\\" in key:
        problem = "contains a backslash"
    elif key.startswith("/"):
        problem = "is absolute"
    elif any(segment == "" for segment in body.split("/")):
        problem = "has an empty segment"
    elif any(segment.startswith(".") for segment in body.split("/")):
        problem = "has a segment starting with '.' (such as '..')"
    if problem:
        raise ValueError(
            f"blob key {key!r} {problem}; keys are relative '/'-separated paths that stay "
            "under the store's root"
        )
    return key


# -- segment and manifest encoding ----------------------------------------------------------

_ARROW_SCHEMA = pa.schema(
    [
        pa.field(c, pa.int64() if c == TS else pa.float64(), nullable=False)
        for c in CANONICAL_COLUMNS
    ]
)

# Delta-encoded open times and byte-stream-split floats: ~30% smaller than plain encoding
# under zstd and about twice as fast to decode (a year read decodes 365 files).
_ENCODINGS = {
    c: "DELTA_BINARY_PACKED" if CANONICAL_DTYPES[c] == "int64" else "BYTE_STREAM_SPLIT"
    for c in CANONICAL_COLUMNS
}
_LE_DTYPES = {c: np.dtype(dtype).newbyteorder("<") for c, dtype in CANONICAL_DTYPES.items()}


def encode_segment(frame: pd.DataFrame) -> bytes:
    """Deterministic zstd Parquet bytes of a canonical frame.

    Columns go through the fingerprint's canonical serialization (NaN and -0.0
    normalised), so frames with equal fingerprints give byte-identical files; no pandas
    or Arrow schema metadata is stored. Bytes depend on the pyarrow version (its
    `created_by`), which is why republishing compares content, not only bytes.
    """
    arrays = [
        pa.array(np.frombuffer(canonical_column_bytes(frame, c), dtype=_LE_DTYPES[c]))
        for c in CANONICAL_COLUMNS
    ]
    table = pa.Table.from_arrays(arrays, schema=_ARROW_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        use_dictionary=False,
        column_encoding=_ENCODINGS,
        store_schema=False,
        row_group_size=max(1, len(frame)),
    )
    return sink.getvalue()


def read_segment_table(data: bytes, uri: object) -> pa.Table:
    """The Arrow table stored in segment bytes; ArtifactIntegrityError if unreadable."""
    try:
        table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ArtifactIntegrityError(f"{uri} is not a readable Parquet segment: {exc}") from exc
    if not table.schema.equals(_ARROW_SCHEMA, check_metadata=False):
        raise ArtifactIntegrityError(
            f"{uri} has schema {table.schema} instead of the canonical {_ARROW_SCHEMA}"
        )
    return table


def frame_from_table(table: pa.Table) -> pd.DataFrame:
    """A canonical frame from a table with the canonical schema.

    Columns stay separate blocks (no consolidation copy of a year of floats); Arrow
    buffers that numpy can only view read-only are copied so the frame is writable.
    """
    columns = {}
    for c in CANONICAL_COLUMNS:
        values = table.column(c).to_numpy()
        columns[c] = values if values.flags.writeable else values.copy()
    return pd.DataFrame(columns, copy=False)


def decode_segment(data: bytes, uri: str) -> pd.DataFrame:
    """The canonical frame stored in segment bytes; ArtifactIntegrityError if unreadable."""
    return frame_from_table(read_segment_table(data, uri))


def fingerprint_slices(
    frame: pd.DataFrame, slices: Sequence[tuple[int, FingerprintIdentity]]
) -> list[str]:
    """`dataset_fingerprint` of consecutive row slices of `frame`, in one vectorized pass.

    `slices` holds `(rows, identity)` per slice, in order. Reading a year of daily
    segments verifies 365 fingerprints; normalising each column once for all of them
    instead of once per segment is what keeps that fast. The byte stream is exactly
    `dataset_fingerprint`'s (header, row count, then each canonical column) and a test
    holds the two equal.
    """
    columns = [
        (memoryview(canonical_column_bytes(frame, c)), np.dtype(CANONICAL_DTYPES[c]).itemsize)
        for c in CANONICAL_COLUMNS
    ]
    out, offset = [], 0
    for rows, identity in slices:
        digest = hashlib.sha256(identity.header())
        digest.update(rows.to_bytes(8, "little"))
        for buffer, width in columns:
            digest.update(buffer[offset * width : (offset + rows) * width])
        out.append(f"{ALGO}:{digest.hexdigest()}")
        offset += rows
    if offset != len(frame):
        raise ValueError(f"slices cover {offset} rows of a {len(frame)}-row frame")
    return out


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """Deterministic manifest bytes: sorted keys, 2-space indent, trailing newline."""
    try:
        text = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"manifest is not plain JSON (str keys, finite numbers): {exc}") from exc
    return (text + "\n").encode()


def identity_from_manifest(manifest: Mapping[str, Any]) -> FingerprintIdentity:
    """The fingerprint identity a manifest declares; ValueError when fields are missing."""
    try:
        window = manifest["range"]
        return FingerprintIdentity(
            node_id=str(manifest["node_id"]),
            interval_s=int(manifest["interval_s"]),
            range=Range(int(window["start"]), int(window["end"])),
            conformance_version=str(manifest["conformance"]["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            "manifest needs node_id, interval_s, range.start, range.end and "
            f"conformance.version to identify its data: {exc!r}"
        ) from exc


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    """Outcome of `ArtifactStore.publish`: `written` is True when this call stored segment
    bytes (a new segment, or completing/restoring one), False when it was already sealed."""

    fingerprint: str
    uri: str
    written: bool


ProblemKind = Literal[
    "fingerprint_mismatch",  # data.parquet does not hash to its manifest's fingerprint
    "unreadable",  # data or manifest cannot be decoded
    "manifest_without_data",  # a sealed segment lost its data: readers will fail
    "orphan_data",  # data without manifest (crashed publish): harmless, republish seals it
    "misplaced",  # manifest's node or fingerprint does not match where it is stored
    "dangling_head",  # a head pointer names a segment that has no manifest
    "bad_snapshot",  # a published snapshot is unreadable, tampered or lists unsealed segments
]


@dataclass(frozen=True, order=True)
class VerificationProblem:
    """One finding of `ArtifactStore.verify_all`."""

    kind: ProblemKind
    uri: str
    detail: str


_SEGMENT_KEY = re.compile(
    r"^(?P<prefix>.+)/segments/(?P<dirname>sha256-[0-9a-f]{64})/(?P<name>[^/]+)$"
)
_HEAD_NAME = re.compile(r"^(?P<start>-?[0-9]+)-(?P<end>-?[0-9]+)\.json$")
_SNAPSHOT_LOG_KEY = re.compile(r"^(?P<prefix>.+)/snapshot_log/[0-9]{12}\.json$")
_SNAPSHOT_LOG_NAME = re.compile(r"^(?P<as_of>[0-9]{12})\.json$")


# -- the store -------------------------------------------------------------------------------


class ArtifactStore:
    """Write-once, fingerprinted segments and partition head pointers over a `BlobStore`."""

    def __init__(
        self,
        blobs: BlobStore,
        partition_template: str = DEFAULT_PARTITION_TEMPLATE,
        *,
        max_workers: int | None = None,
    ) -> None:
        fields = set(re.findall(r"{(\w*)}", partition_template))
        if fields != {"exchange", "symbol", "timeframe"}:
            raise ValueError(
                f"partition template {partition_template!r} must use exactly {{exchange}}, "
                "{symbol} and {timeframe} so every node gets its own prefix"
            )
        validate_key(partition_template.format(exchange="x", symbol="y", timeframe="z"))
        self.blobs = blobs
        self.partition_template = partition_template
        # Local reads are CPU-bound (decode, hash), so one thread per core; a backend
        # with network latency (S3) should pass more.
        self.max_workers = max_workers or min(8, os.cpu_count() or 1)
        self._prefixes: dict[NodeId, str] = {}

    def __repr__(self) -> str:
        return f"ArtifactStore({self.blobs!r}, {self.partition_template!r})"

    # -- keys ---------------------------------------------------------------------------

    def segment_prefix(self, node: NodeId) -> str:
        prefix = self._prefixes.get(node)
        if prefix is None:
            prefix = self._prefixes[node] = node.partition_prefix(self.partition_template)
        return prefix

    def _segment_dir(self, node: NodeId, fingerprint: str) -> str:
        return f"{self.segment_prefix(node)}/segments/{fingerprint_dirname(fingerprint)}"

    def _head_key(self, node: NodeId, window: Range) -> str:
        return f"{self.segment_prefix(node)}/heads/{window.start}-{window.end}.json"

    def node_uri(self, node: NodeId) -> str:
        """URI of everything published for a node."""
        return self.blobs.uri(self.segment_prefix(node))

    def uri_for(self, node: NodeId, fingerprint: str) -> str:
        """URI of a segment's directory (`file:///…/segments/sha256-<hex>` locally)."""
        return self.blobs.uri(self._segment_dir(node, fingerprint))

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
        manifest_bytes = encode_manifest(manifest)
        segment_dir = self._segment_dir(node, fingerprint)
        data_key, manifest_key = f"{segment_dir}/{DATA_FILE}", f"{segment_dir}/{MANIFEST_FILE}"
        data = encode_segment(frame)
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
        return PublishResult(fingerprint, self.blobs.uri(segment_dir), written)

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

    def head(self, node: NodeId, window: Range) -> str | None:
        """The current segment of the partition that is exactly `window`, if any."""
        key = self._head_key(node, window)
        return self._read_head(key)

    def _heads(self, node: NodeId, window: Range | None) -> list[tuple[Range, str]]:
        prefix = f"{self.segment_prefix(node)}/heads/"
        wanted = []
        for key in self.blobs.list(prefix):
            match = _HEAD_NAME.match(key[len(prefix) :])
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

    def read_manifest(self, node: NodeId, fingerprint: str) -> dict[str, Any] | None:
        key = f"{self._segment_dir(node, fingerprint)}/{MANIFEST_FILE}"
        data = self.blobs.get(key)
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
        table, identity, data_key = self._load_segment(node, fingerprint, verify)
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
        self, node: NodeId, heads: Sequence[tuple[Range, str]], window: Range, verify: bool
    ) -> pd.DataFrame:
        """Bars of the given `(partition, fingerprint)` segments, clipped to `window`."""
        loaded = self._map(lambda head: self._load_segment(node, head[1], verify), heads)
        if not loaded:
            return empty_frame()
        frame = frame_from_table(pa.concat_tables([table for table, _, _ in loaded]))
        if verify:
            slices = [(table.num_rows, identity) for table, identity, _ in loaded if identity]
            actual = fingerprint_slices(frame, slices)
            for (_, expected), got, (_, _, key) in zip(heads, actual, loaded, strict=True):
                if got != expected:
                    raise ArtifactIntegrityError(_mismatch(self.blobs.uri(key), expected))
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

    def _load_segment(
        self, node: NodeId, fingerprint: str, verify: bool
    ) -> tuple[pa.Table, FingerprintIdentity | None, str]:
        """Decoded data, the identity its manifest vouches for (with `verify`), its key."""
        segment_dir = self._segment_dir(node, fingerprint)
        data_key, manifest_key = f"{segment_dir}/{DATA_FILE}", f"{segment_dir}/{MANIFEST_FILE}"
        data = self.blobs.get(data_key)
        manifest = self.read_manifest(node, fingerprint) if verify else None
        uri = _LazyUri(self.blobs, data_key)
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
            return table, None, data_key
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
        return table, identity, data_key

    # -- snapshots ----------------------------------------------------------------------
    #
    # {prefix}/snapshots/{as_of_s}.json     the snapshot manifest (no wall clock), write-once
    # {prefix}/snapshot_log/{as_of_s}.json  its log entry with the publication time, written
    #                                       last: its presence publishes the snapshot
    # as_of_s is zero-padded so keys sort in time order.

    def _snapshot_key(self, node: NodeId, as_of_s: int) -> str:
        return f"{self.segment_prefix(node)}/snapshots/{as_of_s:012d}.json"

    def _snapshot_log_key(self, node: NodeId, as_of_s: int) -> str:
        return f"{self.segment_prefix(node)}/snapshot_log/{as_of_s:012d}.json"

    def publish_snapshot(self, node: NodeId, snapshot: Snapshot, published_at_s: float) -> bool:
        """Publish `snapshot` write-once; True if this call published it, False if it was
        already published. Every listed segment must be sealed. Raises SnapshotRegression
        when a later `as_of` is already published, WriteOnceViolation when another snapshot
        holds this `as_of`."""
        if snapshot.node_id != str(node) or snapshot.interval_s != node.interval_s:
            raise ValueError(f"snapshot of {snapshot.node_id} cannot be published under {node}")
        as_ofs = self.snapshot_as_ofs(node)
        if as_ofs and as_ofs[-1] > snapshot.as_of_s:
            raise SnapshotRegression(
                f"{node}: as_of {snapshot.as_of_iso} is before the published "
                f"{iso_utc(as_ofs[-1])}; snapshot history is append-only"
            )
        unsealed = [
            s
            for s, sealed in zip(
                snapshot.segments,
                self._map(lambda s: self._is_sealed(node, s.fingerprint), snapshot.segments),
                strict=True,
            )
            if not sealed
        ]
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

    def _is_sealed(self, node: NodeId, fingerprint: str) -> bool:
        return self.blobs.exists(f"{self._segment_dir(node, fingerprint)}/{MANIFEST_FILE}")

    def snapshot_as_ofs(self, node: NodeId) -> list[int]:
        """`as_of` of every published snapshot, oldest first: one listing of the log's key
        names, no reads (resolving an `as_of` needs nothing more)."""
        prefix = f"{self.segment_prefix(node)}/snapshot_log/"
        names = (_SNAPSHOT_LOG_NAME.match(key[len(prefix) :]) for key in self.blobs.list(prefix))
        return sorted(int(match["as_of"]) for match in names if match)

    def snapshot_log(self, node: NodeId) -> list[SnapshotLogEntry]:
        """Every published snapshot of the node, oldest first (append-only)."""
        return self._map(lambda as_of_s: self._log_entry(node, as_of_s), self.snapshot_as_ofs(node))

    def _log_entry(self, node: NodeId, as_of_s: int) -> SnapshotLogEntry:
        key = self._snapshot_log_key(node, as_of_s)
        try:
            return SnapshotLogEntry.from_json(json.loads(self.blobs.get(key) or b""))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactIntegrityError(
                f"{self.blobs.uri(key)} is not a snapshot log entry: {exc}"
            ) from exc

    def read_snapshot(self, node: NodeId, entry: SnapshotLogEntry) -> Snapshot:
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

    def latest_snapshot(self, node: NodeId) -> Snapshot | None:
        as_ofs = self.snapshot_as_ofs(node)
        return self.read_snapshot(node, self._log_entry(node, as_ofs[-1])) if as_ofs else None

    def resolve_snapshot(self, node: NodeId, as_of_s: int) -> Snapshot:
        """The snapshot with the greatest `as_of <= as_of_s`.

        An `as_of` beyond the latest snapshot is refused: a later snapshot could still
        answer it differently, so the read would not be reproducible.
        """
        as_ofs = self.snapshot_as_ofs(node)
        if not as_ofs:
            raise SnapshotNotFound(
                f"{node} has no published snapshot; materialize its partitions and let the "
                "as_of sensor advance it"
            )
        if as_of_s > as_ofs[-1]:
            raise SnapshotNotFound(
                f"{node}: as_of {iso_utc(as_of_s)} is after the latest snapshot "
                f"{iso_utc(as_ofs[-1])}; pin an as_of at or before it"
            )
        found = resolve_as_of(as_ofs, as_of_s)
        if found is None:
            raise SnapshotNotFound(
                f"{node}: as_of {iso_utc(as_of_s)} is before the first snapshot "
                f"{iso_utc(as_ofs[0])}"
            )
        return self.read_snapshot(node, self._log_entry(node, found))

    def read_snapshot_range(
        self, node: NodeId, snapshot: Snapshot, window: Range, verify: bool = True
    ) -> pd.DataFrame:
        """Bars of the snapshot's segments overlapping `window`, clipped to it; with
        `verify`, every segment is proven to hash to the fingerprint the snapshot lists."""
        heads = [(s.range, s.fingerprint) for s in snapshot.segments_overlapping(window)]
        return self._read_segments(node, heads, window, verify)

    def advance_snapshot(
        self, node: NodeId, conformance_version: str, stable_end_s: int, published_at_s: float
    ) -> Snapshot | None:
        """Snapshot the node's current heads that end by `stable_end_s` and publish it when
        that moves `as_of` forward; the new snapshot, or None when `as_of` did not advance."""
        previous = self.latest_snapshot(node)
        current = [(r, fp) for r, fp in self._heads(node, window=None) if r.end <= stable_end_s]
        if not current or (previous and current[-1][0].end <= previous.as_of_s):
            return None
        known = (
            {(s.range, s.fingerprint): s.row_count for s in previous.segments} if previous else {}
        )
        todo = [(r, fp) for r, fp in current if (r, fp) not in known]
        manifests = self._map(lambda head: self.read_manifest(node, head[1]), todo)
        for (r, fp), manifest in zip(todo, manifests, strict=True):
            if manifest is None:
                raise ArtifactNotFound(f"{node}: head {r} points at unsealed segment {fp}")
            if not isinstance(manifest.get("row_count"), int):
                raise ArtifactIntegrityError(f"{node}: manifest of {fp} has no row_count")
            known[(r, fp)] = manifest["row_count"]
        segments = [SnapshotSegment(r, fp, known[(r, fp)]) for r, fp in current]
        snapshot = build_snapshot(
            str(node), node.interval_s, conformance_version, segments, stable_end_s
        )
        if snapshot is None:
            return None
        self.publish_snapshot(node, snapshot, published_at_s)
        return snapshot

    def diff_snapshots(self, node: NodeId, before: Snapshot, after: Snapshot) -> pd.DataFrame:
        """The bars that differ between two snapshots of a node (see `diff_bars`): only
        partitions whose segment changed are read, each verified against its fingerprint."""
        frames = []
        for change in diff_segments(before, after):
            old = self.read_snapshot_range(node, before, change.range)
            new = self.read_snapshot_range(node, after, change.range)
            frames.append(diff_bars(old, new))
        return pd.concat(frames, ignore_index=True) if frames else diff_bars(*[empty_frame()] * 2)

    # -- auditing -----------------------------------------------------------------------

    def list_nodes(self) -> list[NodeId]:
        """Every node that has at least one sealed segment, sorted by node id."""
        seen: dict[str, str] = {}
        for key in self.blobs.list(""):
            match = _SEGMENT_KEY.match(key)
            if match and match["name"] == MANIFEST_FILE and match["prefix"] not in seen:
                seen[match["prefix"]] = key
        nodes = set()
        for key in seen.values():
            data = self.blobs.get(key)
            try:
                nodes.add(NodeId.parse(str(json.loads(data or b"{}")["node_id"])))
            except (ValueError, KeyError, TypeError, SeamlessError):
                continue  # verify_all reports it
        return sorted(nodes, key=str)

    def verify_all(self) -> list[VerificationProblem]:
        """Check every segment and head pointer under the root (all nodes)."""
        segments: dict[str, set[str]] = {}
        heads: list[str] = []
        snapshot_logs: list[str] = []
        for key in self.blobs.list(""):
            match = _SEGMENT_KEY.match(key)
            if match:
                segment_dir = key.rpartition("/")[0]
                segments.setdefault(segment_dir, set()).add(match["name"])
            elif "/heads/" in key and _HEAD_NAME.match(key.rpartition("/")[2]):
                heads.append(key)
            elif _SNAPSHOT_LOG_KEY.match(key):
                snapshot_logs.append(key)
        problems: list[VerificationProblem] = []
        for found in self._map(lambda item: self._verify_stored(*item), sorted(segments.items())):
            problems.extend(found)
        for key in heads:
            problems.extend(self._verify_head(key))
        for key in snapshot_logs:
            problems.extend(self._verify_snapshot(key))
        return sorted(problems)

    def _verify_snapshot(self, log_key: str) -> list[VerificationProblem]:
        uri = self.blobs.uri(log_key)
        try:
            entry = SnapshotLogEntry.from_json(json.loads(self.blobs.get(log_key) or b""))
            data = self.blobs.get(log_key.replace("/snapshot_log/", "/snapshots/"))
            snapshot = Snapshot.from_json(json.loads(data or b""))
            node = NodeId.parse(snapshot.node_id)
        except (ValueError, KeyError, TypeError, SeamlessError) as exc:
            return [VerificationProblem("bad_snapshot", uri, f"unreadable: {exc}")]
        if snapshot.fingerprint != entry.fingerprint:
            detail = f"log names {entry.fingerprint}, manifest is {snapshot.fingerprint}"
            return [VerificationProblem("bad_snapshot", uri, detail)]
        unsealed = [s for s in snapshot.segments if not self._is_sealed(node, s.fingerprint)]
        if unsealed:
            detail = (
                f"{len(unsealed)} listed segment(s) not sealed, first {unsealed[0].fingerprint}"
            )
            return [VerificationProblem("bad_snapshot", uri, detail)]
        return []

    def _verify_stored(self, segment_dir: str, names: set[str]) -> list[VerificationProblem]:
        uri = self.blobs.uri(segment_dir)
        if MANIFEST_FILE not in names:
            return [VerificationProblem("orphan_data", uri, "data without manifest")]
        if DATA_FILE not in names:
            return [VerificationProblem("manifest_without_data", uri, "data.parquet missing")]
        try:
            manifest = json.loads(self.blobs.get(f"{segment_dir}/{MANIFEST_FILE}") or b"")
            identity = identity_from_manifest(manifest)
            fingerprint = str(manifest["fingerprint"])
            node = NodeId.parse(identity.node_id)
        except (ValueError, KeyError, TypeError, SeamlessError) as exc:
            return [VerificationProblem("unreadable", uri, f"manifest: {exc}")]
        expected_dir = f"{self.segment_prefix(node)}/segments/{fingerprint_dirname(fingerprint)}"
        if expected_dir != segment_dir:
            return [VerificationProblem("misplaced", uri, f"manifest says {expected_dir}")]
        try:
            data = self.blobs.get(f"{segment_dir}/{DATA_FILE}") or b""
            frame = decode_segment(data, uri)
        except ArtifactIntegrityError as exc:
            return [VerificationProblem("unreadable", uri, str(exc))]
        actual = dataset_fingerprint(frame, identity)
        if actual != fingerprint:
            return [VerificationProblem("fingerprint_mismatch", uri, f"data hashes to {actual}")]
        return []

    def _verify_head(self, key: str) -> list[VerificationProblem]:
        uri = self.blobs.uri(key)
        try:
            fingerprint = self._read_head(key)
            segment_dir = f"{key.rpartition('/heads/')[0]}/segments/"
            segment_dir += fingerprint_dirname(fingerprint or "")
        except (ArtifactIntegrityError, ValueError) as exc:
            return [VerificationProblem("unreadable", uri, str(exc))]
        if not self.blobs.exists(f"{segment_dir}/{MANIFEST_FILE}"):
            return [VerificationProblem("dangling_head", uri, f"{fingerprint} is not sealed")]
        return []

    # -- helpers ------------------------------------------------------------------------

    def _map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`fn` over items, in order, on a thread pool (blob I/O and Parquet decoding
        release the GIL). Items go in contiguous chunks, one per worker, because most are
        tiny and a task per item would cost more than it saves."""
        todo = list(items)
        workers = min(self.max_workers, len(todo) // _MIN_ITEMS_PER_WORKER)
        if workers <= 1:
            return [fn(item) for item in todo]
        size = -(-len(todo) // workers)
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            done = pool.map(lambda chunk: [fn(item) for item in chunk], chunks)
            return [result for chunk in done for result in chunk]


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


class _LazyUri:
    """A blob's URI, computed only if an error message needs it (reads touch many)."""

    def __init__(self, blobs: BlobStore, key: str) -> None:
        self.blobs, self.key = blobs, key

    def __str__(self) -> str:
        return self.blobs.uri(self.key)
