"""Write-once segments, partition heads and snapshots of event nodes (`funding:` and
`trades:`; `seamless_assets.event_nodes`), over the same `BlobStore` as the bar store.

An event node is partitioned by UTC day; each partition publishes one content-addressed
segment (zstd Parquet of the kind's table plus its manifest, `core.event_manifest`) and
a head pointer names the partition's current segment. The rules are the bar store's
(`segments.py`, `snapshots.py`): data first, manifest last (its presence seals the
segment), both create-only; a restated partition is a new segment and only its head
moves; snapshots are immutable, append-only commits of the published set.

Layout under the root, per node prefix (`EventNodeId.partition_prefix()`:
`kind={kind}/exchange={exchange}/symbol={symbol}`, slugs escaped), as in `layout.py`:

    {prefix}/segments/sha256-<hex>/data.parquet    zstd Parquet of the kind's table
    {prefix}/segments/sha256-<hex>/manifest.json   written last: its presence seals the segment
    {prefix}/heads/{start}-{end}.json              mutable pointer: partition -> fingerprint
    {prefix}/snapshots/{as_of_s:012d}.json         snapshot manifest (no wall clock), write-once
    {prefix}/snapshot_log/{as_of_s:012d}.json      its publication time, written last
"""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seamless_assets.core.event_manifest import (
    event_fingerprint,
    event_frame_problems,
    event_manifest_problems,
    identity_from_event_manifest,
    is_event_manifest,
)
from seamless_assets.core.fingerprint import fingerprint_dirname
from seamless_assets.core.frame import TS, Range, iso_utc
from seamless_assets.core.snapshot import (
    Snapshot,
    SnapshotLogEntry,
    SnapshotSegment,
    build_snapshot,
    commit_as_of,
    manifest_digest,
    published_set,
    resolve_as_of,
)
from seamless_assets.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    SeamlessError,
    SnapshotNotFound,
    SnapshotRegression,
    UnpublishableSegment,
    WriteOnceViolation,
)
from seamless_assets.event_nodes import EVENT_KINDS, EventKind, EventNodeId

from .blobs import BlobStore
from .codec import encode_manifest
from .layout import (
    DATA_FILE,
    HEAD_NAME,
    MANIFEST_FILE,
    SEGMENT_KEY,
    SNAPSHOT_LOG_NAME,
    LazyUri,
    StoreLayout,
)
from .listed import entry_problems, manifest_range
from .segments import PublishResult

if TYPE_CHECKING:
    from .verify import ProblemKind

T = TypeVar("T")
R = TypeVar("R")

# Event snapshots list day partitions of rows on no grid: `Snapshot.interval_s` is 0.
EVENT_INTERVAL_S = 0

_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "int8": pa.int8()}
# Delta-encoded integers (times, ids, sides) and byte-stream-split floats, as bar segments.
_ENCODINGS = {"int64": "DELTA_BINARY_PACKED", "int8": "DELTA_BINARY_PACKED"}
_FLOAT_ENCODING = "BYTE_STREAM_SPLIT"
_CANONICAL_NAN = np.frombuffer(np.uint64(0x7FF8000000000000).tobytes(), dtype="<f8")[0]

_RESTORE = (
    "restore the file from a backup, or move the segment directory aside and publish the "
    "partition again (a new segment enters the next snapshot)"
)


# -- encoding ---------------------------------------------------------------------------------


@functools.cache
def arrow_schema(kind: str) -> pa.Schema:
    """The Arrow schema of a kind's segment table: its columns, in order, none nullable."""
    return pa.schema(
        [
            pa.field(c, _ARROW_TYPES[dtype], nullable=False)
            for c, dtype in EVENT_KINDS[kind].dtypes.items()
        ]
    )


def _canonical_values(frame: pd.DataFrame, column: str, dtype: str) -> np.ndarray:
    """One column as contiguous little-endian values of `dtype`, floats with every NaN as
    one bit pattern and -0.0 as 0.0 (the fingerprint's rule: equal fingerprints, equal
    bytes)."""
    values = np.ascontiguousarray(frame[column].to_numpy(dtype=dtype))
    values = values.astype("<" + values.dtype.str[1:], copy=False)
    if values.dtype.kind == "f":
        return np.where(np.isnan(values), _CANONICAL_NAN, values + 0.0)
    return values


def encode_event_segment(spec: EventKind, frame: pd.DataFrame) -> bytes:
    """Deterministic zstd Parquet bytes of a segment table of `spec`: no pandas or Arrow
    schema metadata, one row group, so the same rows give byte-identical files (under one
    pyarrow version, whose `created_by` they carry; republishing compares content)."""
    arrays = [
        pa.array(_canonical_values(frame, c, dtype), type=_ARROW_TYPES[dtype])
        for c, dtype in spec.dtypes.items()
    ]
    table = pa.Table.from_arrays(arrays, schema=arrow_schema(spec.name))
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        use_dictionary=False,
        column_encoding={c: _ENCODINGS.get(d, _FLOAT_ENCODING) for c, d in spec.dtypes.items()},
        store_schema=False,
        row_group_size=max(1, len(frame)),
    )
    return sink.getvalue()


def read_event_table(spec: EventKind, data: bytes, uri: object) -> pa.Table:
    """The Arrow table stored in segment bytes; ArtifactIntegrityError if unreadable or
    not the kind's schema."""
    try:
        table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ArtifactIntegrityError(f"{uri} is not a readable Parquet segment: {exc}") from exc
    schema = arrow_schema(spec.name)
    if not table.schema.equals(schema, check_metadata=False):
        raise ArtifactIntegrityError(
            f"{uri} has schema {table.schema} instead of the {spec.name} table's {schema}"
        )
    return table


def event_frame_from_table(spec: EventKind, table: pa.Table) -> pd.DataFrame:
    """A writable frame of the kind's columns and dtypes from a table of its schema."""
    columns = {}
    for c in spec.columns:
        values = table.column(c).to_numpy()
        columns[c] = values if values.flags.writeable else values.copy()
    return pd.DataFrame(columns, copy=False)


# -- the store --------------------------------------------------------------------------------


class _Loaded(NamedTuple):
    """A segment as read: its table, its data key and, when verified, its manifest."""

    table: pa.Table
    data_key: str
    manifest: dict[str, Any] | None
    manifest_bytes: bytes | None


class EventSegmentStore:
    """Write-once, fingerprinted event segments, partition heads and snapshots over a
    `BlobStore` (the one the bar `ArtifactStore` uses: event prefixes start with `kind=`
    and never meet a bar node's)."""

    def __init__(self, blobs: BlobStore, *, max_workers: int | None = None) -> None:
        self.blobs = blobs
        self._pool = StoreLayout(blobs, max_workers=max_workers)  # its thread-pool helper
        self.max_workers = self._pool.max_workers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.blobs!r})"

    # -- keys ---------------------------------------------------------------------------------

    def _segment_dir(self, node: EventNodeId, fingerprint: str) -> str:
        return f"{node.partition_prefix()}/segments/{fingerprint_dirname(fingerprint)}"

    def _head_key(self, node: EventNodeId, window: Range) -> str:
        return f"{node.partition_prefix()}/heads/{window.start}-{window.end}.json"

    def _snapshot_key(self, node: EventNodeId, as_of_s: int) -> str:
        return f"{node.partition_prefix()}/snapshots/{as_of_s:012d}.json"

    def _snapshot_log_key(self, node: EventNodeId, as_of_s: int) -> str:
        return f"{node.partition_prefix()}/snapshot_log/{as_of_s:012d}.json"

    def manifest_key(self, node: EventNodeId, fingerprint: str) -> str:
        return f"{self._segment_dir(node, fingerprint)}/{MANIFEST_FILE}"

    def node_uri(self, node: EventNodeId) -> str:
        """URI of everything published for a node."""
        return self.blobs.uri(node.partition_prefix())

    def uri_for(self, node: EventNodeId, fingerprint: str) -> str:
        """URI of a segment's directory (`…/segments/sha256-<hex>`)."""
        return self.blobs.uri(self._segment_dir(node, fingerprint))

    def _is_sealed(self, node: EventNodeId, fingerprint: str) -> bool:
        return self.blobs.exists(self.manifest_key(node, fingerprint))

    def _map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return self._pool._map(fn, items)

    # -- writing ------------------------------------------------------------------------------

    def publish(
        self, node: EventNodeId, frame: pd.DataFrame, manifest: Mapping[str, Any]
    ) -> PublishResult:
        """Seal `frame` as the segment its manifest's fingerprint names; move the head.

        `frame` must be exactly the kind's columns and dtypes, sorted by its `order`, one
        row per `key`, every `ts` (ms) inside the manifest's range; the manifest must be
        the frame's (`build_event_manifest`: fingerprint and every derivable field).
        Data first, manifest last, both create-only; nothing is ever overwritten. A sealed
        segment is left alone (`written=False`) once its data is checked; a crashed earlier
        publish (data without manifest) is completed after checking the existing data.
        Raises WriteOnceViolation (unsealed) or ArtifactIntegrityError (sealed) when bytes
        already stored under the fingerprint hold other rows.
        """
        identity = identity_from_event_manifest(manifest)
        fingerprint = manifest.get("fingerprint")
        if identity.node_id != str(node):
            raise ValueError(
                f"manifest is for {identity.node_id!r} but is being published under {str(node)!r}"
            )
        if not isinstance(fingerprint, str):
            raise ValueError("manifest needs the rows' `fingerprint` (event_fingerprint)")
        problems = event_frame_problems(node.spec, frame, identity.window)
        if problems:
            raise ValueError(f"cannot publish {node} {identity.window}: {'; '.join(problems)}")
        actual = event_fingerprint(node, frame, identity.window, identity.conformance_version)
        if actual != fingerprint:
            raise ValueError(
                f"frame fingerprints to {actual} but the manifest claims {fingerprint}; "
                "recompute the manifest from the frame being published (build_event_manifest)"
            )
        wrong = event_manifest_problems(manifest, frame, check_fingerprint=False)
        if wrong:
            raise ValueError(
                f"manifest of {node} {identity.window} disagrees with the frame: "
                f"{'; '.join(wrong)}; build it from the frame (build_event_manifest)"
            )
        encode_started = time.perf_counter()
        manifest_bytes = encode_manifest(manifest)
        segment_dir = self._segment_dir(node, fingerprint)
        data_key, manifest_key = f"{segment_dir}/{DATA_FILE}", f"{segment_dir}/{MANIFEST_FILE}"
        data = encode_event_segment(node.spec, frame)
        encode_s = time.perf_counter() - encode_started
        sealed = self.blobs.exists(manifest_key)
        # Data first (create-only; a sealed segment whose data was lost gets it back).
        written = self.blobs.put_if_absent(data_key, data)
        if not written and not self._holds_same_rows(node, data_key, data, manifest, fingerprint):
            uri = self.blobs.uri(data_key)
            if sealed:
                raise ArtifactIntegrityError(
                    f"{uri} does not hold the rows of its manifest's {fingerprint}: the file "
                    "was altered or corrupted; move its segment directory aside and publish "
                    "again"
                )
            raise WriteOnceViolation(
                f"{uri} exists without a manifest and holds other rows than {fingerprint}; "
                "it is immutable, so inspect it and move it aside before publishing again"
            )
        if not sealed:  # the manifest last: its presence seals the segment
            written = self.blobs.put_if_absent(manifest_key, manifest_bytes) or written
        self._point_head(node, identity.window, fingerprint)
        return PublishResult(fingerprint, self.blobs.uri(segment_dir), written, encode_s)

    def _holds_same_rows(
        self,
        node: EventNodeId,
        key: str,
        data: bytes,
        manifest: Mapping[str, Any],
        fingerprint: str,
    ) -> bool:
        """Whether existing data under `key` holds exactly the rows being published."""
        existing = self.blobs.get(key)
        if existing is None:  # removed meanwhile: create it after all
            return self.blobs.put_if_absent(key, data) or self.blobs.get(key) == data
        if existing == data:
            return True
        # Another encoder version may write other bytes for the same rows: equal content is fine.
        try:
            frame = event_frame_from_table(node.spec, read_event_table(node.spec, existing, key))
        except ArtifactIntegrityError:
            return False
        identity = identity_from_event_manifest(manifest)
        got = event_fingerprint(node, frame, identity.window, identity.conformance_version)
        return got == fingerprint

    def _point_head(self, node: EventNodeId, window: Range, fingerprint: str) -> None:
        pointer = {"fingerprint": fingerprint, "node_id": str(node), "range": window.to_json()}
        key, data = self._head_key(node, window), encode_manifest(pointer)
        if self.blobs.get(key) != data:
            self.blobs.put(key, data)

    # -- reading ------------------------------------------------------------------------------

    def list_nodes(self) -> list[EventNodeId]:
        """Every event node that has at least one sealed segment, sorted by node id."""
        seen: dict[str, str] = {}
        for kind in EVENT_KINDS:
            for key in self.blobs.list(f"kind={kind}/"):
                match = SEGMENT_KEY.match(key)
                if match and match["name"] == MANIFEST_FILE and match["prefix"] not in seen:
                    seen[match["prefix"]] = key
        nodes = set()
        for key in seen.values():
            try:
                nodes.add(
                    EventNodeId.parse(str(json.loads(self.blobs.get(key) or b"{}")["node_id"]))
                )
            except (ValueError, KeyError, TypeError, SeamlessError):
                continue  # verify_all reports it
        return sorted(nodes, key=str)

    def heads(self, node: EventNodeId) -> dict[Range, str]:
        """Every partition's current segment fingerprint, in time order."""
        return dict(self._heads(node, window=None))

    def head(self, node: EventNodeId, window: Range) -> str | None:
        """The current segment of the partition that is exactly `window`, if any."""
        return self._read_head(self._head_key(node, window))

    def _heads(self, node: EventNodeId, window: Range | None) -> list[tuple[Range, str]]:
        prefix = f"{node.partition_prefix()}/heads/"
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

    def read_manifest(self, node: EventNodeId, fingerprint: str) -> dict[str, Any] | None:
        """The segment's manifest, or None when it is not sealed."""
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

    def read_segment(
        self, node: EventNodeId, fingerprint: str, verify: bool = True
    ) -> pd.DataFrame:
        """The rows of one segment; with `verify`, proven to hash to the fingerprint its
        manifest states (ArtifactIntegrityError naming the file and the fix otherwise)."""
        loaded = self._load(node, fingerprint, verify)
        return self._checked_frame(node, fingerprint, loaded)

    def read_range(self, node: EventNodeId, window: Range, verify: bool = True) -> pd.DataFrame:
        """Rows of the head segments overlapping `window`, clipped to it, in `order`."""
        return self._read_segments(node, self._heads(node, window), window, verify)

    def _checked_frame(self, node: EventNodeId, fingerprint: str, loaded: _Loaded) -> pd.DataFrame:
        frame = event_frame_from_table(node.spec, loaded.table)
        if loaded.manifest is None:
            return frame
        identity = identity_from_event_manifest(loaded.manifest)  # vetted by `_load`
        actual = event_fingerprint(node, frame, identity.window, identity.conformance_version)
        if actual != fingerprint:
            raise ArtifactIntegrityError(_mismatch(self.blobs.uri(loaded.data_key), fingerprint))
        return frame

    def _read_segments(
        self,
        node: EventNodeId,
        listed: Sequence[tuple[Range, str]],
        window: Range,
        verify: bool,
        check: Callable[[int, _Loaded], None] | None = None,
    ) -> pd.DataFrame:
        """Rows of the given `(partition, fingerprint)` segments, clipped to `window` (ms:
        `[start * 1000, end * 1000)`) and sorted by the kind's `order`; with `verify`, each
        segment is proven to hash to its fingerprint and `check(i, loaded)` vets the i-th."""
        spec = node.spec

        def load(i: int, fingerprint: str) -> pd.DataFrame:
            loaded = self._load(node, fingerprint, verify)
            if verify and check is not None:
                check(i, loaded)
            return self._checked_frame(node, fingerprint, loaded)

        frames = self._map(lambda item: load(item[0], item[1][1]), list(enumerate(listed)))
        if not frames:
            return spec.empty()
        if len(frames) == 1:
            frame = frames[0]
        else:
            frame = pd.DataFrame(
                {c: np.concatenate([f[c].to_numpy() for f in frames]) for c in spec.columns}
            )
        ts = frame[TS].to_numpy()
        inside = (ts >= window.start * 1000) & (ts < window.end * 1000)
        index = np.flatnonzero(inside)
        keys = [frame[c].to_numpy()[index] for c in reversed(spec.order)]
        order = np.lexsort(keys) if len(index) > 1 else np.arange(len(index))
        index = index[order]
        if len(index) == len(frame) and bool(np.all(index == np.arange(len(frame)))):
            return frame
        return pd.DataFrame({c: frame[c].to_numpy()[index] for c in spec.columns})

    def _load(self, node: EventNodeId, fingerprint: str, verify: bool) -> _Loaded:
        """Decoded data and, with `verify`, the manifest that vouches for it (sealed, of
        this node and fingerprint)."""
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
        table = read_event_table(node.spec, data, uri)
        if not verify:
            return _Loaded(table, data_key, None, None)
        if manifest is None:
            raise ArtifactIntegrityError(
                f"{uri} has no manifest, so it is not a sealed segment (an interrupted "
                "publish); publish the partition again"
            )
        try:
            identity = identity_from_event_manifest(manifest)
        except ValueError as exc:
            raise ArtifactIntegrityError(
                f"manifest {self.blobs.uri(manifest_key)} is malformed: {exc}; {_RESTORE}"
            ) from exc
        if manifest.get("fingerprint") != fingerprint or identity.node_id != str(node):
            raise ArtifactIntegrityError(
                f"manifest of {uri} is for {identity.node_id} {manifest.get('fingerprint')}, "
                f"not {node} {fingerprint}"
            )
        return _Loaded(table, data_key, manifest, manifest_bytes)

    # -- snapshots ----------------------------------------------------------------------------

    def publish_snapshot(
        self, node: EventNodeId, snapshot: Snapshot, published_at_s: float
    ) -> bool:
        """Publish `snapshot` write-once; True if this call published it, False if it was
        already published. Every listed segment must be sealed (ArtifactNotFound). Raises
        SnapshotRegression when a later `as_of` is already published, WriteOnceViolation
        when another snapshot holds this `as_of`."""
        if snapshot.node_id != str(node) or snapshot.interval_s != EVENT_INTERVAL_S:
            raise ValueError(
                f"snapshot of {snapshot.node_id} every {snapshot.interval_s}s cannot be "
                f"published under {node} (event snapshots have interval_s {EVENT_INTERVAL_S})"
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

    def snapshot_as_ofs(self, node: EventNodeId) -> list[int]:
        """`as_of` of every published snapshot, oldest first (one listing, no reads)."""
        prefix = f"{node.partition_prefix()}/snapshot_log/"
        names = (SNAPSHOT_LOG_NAME.match(key[len(prefix) :]) for key in self.blobs.list(prefix))
        return sorted(int(match["as_of"]) for match in names if match)

    def snapshot_log(self, node: EventNodeId) -> list[SnapshotLogEntry]:
        """Every published snapshot of the node, oldest first (append-only)."""
        return self._map(lambda as_of_s: self._log_entry(node, as_of_s), self.snapshot_as_ofs(node))

    def _log_entry(self, node: EventNodeId, as_of_s: int) -> SnapshotLogEntry:
        key = self._snapshot_log_key(node, as_of_s)
        try:
            return SnapshotLogEntry.from_json(json.loads(self.blobs.get(key) or b""))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactIntegrityError(
                f"{self.blobs.uri(key)} is not a snapshot log entry: {exc}"
            ) from exc

    def read_snapshot(self, node: EventNodeId, entry: SnapshotLogEntry) -> Snapshot:
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

    def latest_snapshot(self, node: EventNodeId) -> Snapshot | None:
        as_ofs = self.snapshot_as_ofs(node)
        return self.read_snapshot(node, self._log_entry(node, as_ofs[-1])) if as_ofs else None

    def resolve_snapshot(self, node: EventNodeId, as_of_s: int) -> Snapshot:
        """The newest snapshot committed at or before `as_of_s`; SnapshotNotFound when
        there is none, or when `as_of_s` is after the newest commit (a commit may be in
        flight, so that answer would not be reproducible), as for bar nodes."""
        as_ofs = self.snapshot_as_ofs(node)
        if not as_ofs:
            raise SnapshotNotFound(
                f"{node} has no published snapshot; publish its partitions and commit one "
                "(EventSegmentStore.commit_snapshot)"
            )
        if as_of_s > as_ofs[-1]:
            raise SnapshotNotFound(
                f"{node}: as_of {iso_utc(as_of_s)} is after the latest snapshot "
                f"{iso_utc(as_ofs[-1])}; pin an as_of at or before it, or commit a new one"
            )
        found = resolve_as_of(as_ofs, as_of_s)
        if found is None:
            raise SnapshotNotFound(
                f"{node}: as_of {iso_utc(as_of_s)} is before the first snapshot "
                f"{iso_utc(as_ofs[0])} (as_of is a snapshot's commit instant, not a data time)"
            )
        return self.read_snapshot(node, self._log_entry(node, found))

    def read_snapshot_range(
        self, node: EventNodeId, snapshot: Snapshot, window: Range, verify: bool = True
    ) -> pd.DataFrame:
        """Rows of the snapshot's segments overlapping `window`, clipped to it (`ts` in
        `[start * 1000, end * 1000)`), sorted by the kind's `order`; with `verify`, every
        segment is proven to hash to the fingerprint the snapshot lists and its manifest
        to be the one the snapshot committed (by digest)."""
        if snapshot.node_id != str(node):
            raise ValueError(f"snapshot of {snapshot.node_id} cannot be read as {node}")
        listed = snapshot.segments_overlapping(window)

        def check(i: int, loaded: _Loaded) -> None:
            self._check_listed(node, listed[i], loaded)

        return self._read_segments(node, [s.key for s in listed], window, verify, check)

    def _check_listed(self, node: EventNodeId, entry: SnapshotSegment, loaded: _Loaded) -> None:
        manifest, manifest_bytes = loaded.manifest, loaded.manifest_bytes
        assert manifest is not None and manifest_bytes is not None  # a verified load
        problems = entry_problems(entry, manifest, manifest_bytes)
        if not problems and loaded.table.num_rows != entry.row_count:
            problems.append(
                f"data holds {loaded.table.num_rows} rows, the snapshot lists {entry.row_count}"
            )
        if problems:
            key = f"{loaded.data_key.rpartition('/')[0]}/{MANIFEST_FILE}"
            raise ArtifactIntegrityError(
                f"{self.blobs.uri(key)} ({node} {entry.range}) is not what its snapshot "
                f"committed: {'; '.join(problems)}; {_RESTORE}"
            )

    def commit_snapshot(
        self,
        node: EventNodeId,
        conformance_version: str,
        stable_end_s: int,
        now_s: float,
        history_start_s: int | None = None,
    ) -> Snapshot | None:
        """Commit the node's published set (heads ending by `stable_end_s`) as a new
        snapshot at the commit instant `now_s` (kept strictly increasing) when it differs
        from the newest snapshot's list; None when nothing changed (or nothing is
        published). Every segment the previous snapshot does not list is vetted first
        (sealed, its manifest's range is the head's window, the manifest agrees with the
        rows); one that is not refuses the whole commit with UnpublishableSegment."""
        previous = self.latest_snapshot(node)
        current = published_set(self._heads(node, window=None), stable_end_s)
        if not current or (previous is not None and previous.listed == current):
            return None
        known = {s.key: s for s in (previous.segments if previous else ()) if s.manifest_sha256}
        todo = [head for head in current if head not in known]
        for vetted in self._map(lambda head: self._vet(node, *head), todo):
            known[vetted.key] = vetted
        snapshot = build_snapshot(
            str(node),
            EVENT_INTERVAL_S,
            conformance_version,
            [known[head] for head in current],
            commit_as_of(now_s, previous),
            history_start_s,
        )
        if snapshot is None:
            return None
        self.publish_snapshot(node, snapshot, now_s)
        return snapshot

    def _vet(self, node: EventNodeId, window: Range, fingerprint: str) -> SnapshotSegment:
        """The snapshot entry for head `window -> fingerprint`, or UnpublishableSegment."""
        key = self.manifest_key(node, fingerprint)
        head_uri = self.blobs.uri(self._head_key(node, window))
        manifest_bytes = self.blobs.get(key)
        if manifest_bytes is None:
            raise UnpublishableSegment(
                f"{head_uri} names {fingerprint}, which has no {self.blobs.uri(key)} (not "
                f"sealed); publish {node} partition {window} again"
            )
        manifest = self._parse_manifest(key, manifest_bytes)
        assert manifest is not None
        stated = manifest_range(manifest)
        if stated != window:
            raise UnpublishableSegment(
                f"{head_uri} names {fingerprint}, whose manifest {self.blobs.uri(key)} covers "
                f"{stated}, not the head's {window} (the head was repointed); publish {node} "
                f"partition {window} again (it rewrites the head) or restore the head file"
            )
        frame = self.read_segment(node, fingerprint, verify=True)
        problems = event_manifest_problems(manifest, frame, check_fingerprint=False)
        if problems:
            raise UnpublishableSegment(
                f"{self.blobs.uri(key)} disagrees with its rows: {'; '.join(problems)}; {_RESTORE}"
            )
        return SnapshotSegment(window, fingerprint, len(frame), manifest_digest(manifest_bytes))

    # -- audit (`verify.verify_all`) ----------------------------------------------------------

    def stored_problems(
        self, segment_dir: str, manifest: Mapping[str, Any]
    ) -> list[tuple[ProblemKind, str, str]]:
        """`(kind, uri, detail)` of what is wrong with the sealed event segment stored at
        `segment_dir` whose parsed manifest is `manifest`; [] when it is sound. Never
        raises for what it finds."""
        uri = self.blobs.uri(segment_dir)
        if not is_event_manifest(manifest):
            return [("unreadable", uri, "manifest: not an event segment's (no event `kind`)")]
        try:
            identity = identity_from_event_manifest(manifest)
            node = EventNodeId.parse(identity.node_id)
            fingerprint = str(manifest["fingerprint"])
            expected_dir = self._segment_dir(node, fingerprint)
        except (ValueError, KeyError, TypeError, SeamlessError) as exc:
            return [("unreadable", uri, f"manifest: {exc}")]
        if expected_dir != segment_dir:
            return [("misplaced", uri, f"manifest says {expected_dir}")]
        try:
            data = self.blobs.get(f"{segment_dir}/{DATA_FILE}") or b""
            frame = event_frame_from_table(node.spec, read_event_table(node.spec, data, uri))
        except ArtifactIntegrityError as exc:
            return [("unreadable", uri, str(exc))]
        actual = event_fingerprint(node, frame, identity.window, identity.conformance_version)
        if actual != fingerprint:
            return [("fingerprint_mismatch", uri, f"data hashes to {actual}")]
        wrong = event_manifest_problems(manifest, frame, check_fingerprint=False)
        if wrong:
            manifest_uri = self.blobs.uri(f"{segment_dir}/{MANIFEST_FILE}")
            return [("manifest_mismatch", manifest_uri, "; ".join(wrong))]
        return []


def _mismatch(uri: str, fingerprint: str) -> str:
    return (
        f"{uri} does not hash to its manifest's {fingerprint}: the file was altered or "
        "corrupted; restore it from a backup, or move its segment directory aside and "
        "publish the partition again"
    )
