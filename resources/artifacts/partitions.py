"""Write-once segments of a node's partitions, for nodes of either kind: bars
(`segments.py`) and events (`event_segments.py`).

Segments are content-addressed and write-once; a restated partition is a new segment and
only its head pointer (`heads.py`) moves. What a kind's segments hold (their encoding, the identity
their manifest states, their fingerprint, the manifest's other fields, how a read merges
them) each store says by the hooks of `PartitionStore`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

import pandas as pd
import pyarrow as pa

from seamless_assets.core.frame import Range
from seamless_assets.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    SealedSegmentCollision,
    SeamlessError,
    UnsealedSegmentCollision,
)

from .codec import encode_manifest
from .heads import HeadPointers
from .layout import DATA_FILE, MANIFEST_FILE, SEGMENT_KEY, LazyUri, NodeT

if TYPE_CHECKING:
    from .verify import ProblemKind

RESTORE = (
    "restore the file from a backup, or move the segment directory aside and materialize "
    "the partition again (a new segment enters the next snapshot)"
)


class Identity(Protocol):
    """What a manifest states its rows are (`FingerprintIdentity`, `EventIdentity`)."""

    @property
    def node_id(self) -> str: ...


IdentityT = TypeVar("IdentityT", bound=Identity)


@dataclass(frozen=True)
class PublishResult:
    """Outcome of `publish`: `written` is True when this call stored segment bytes (a new
    segment, or completing/restoring one), False when it was already sealed."""

    fingerprint: str
    uri: str
    written: bool
    encode_s: float = 0.0  # time spent encoding the segment and its manifest (measured)
    bytes_written: int = 0  # bytes this call stored (data and/or manifest)


class LoadedSegment(NamedTuple, Generic[IdentityT]):
    """A segment as read: its table and, when verified, its manifest (bytes, parsed, and
    the identity it states)."""

    table: pa.Table
    identity: IdentityT | None
    data_key: str
    manifest: dict[str, Any] | None
    manifest_bytes: bytes | None


def altered(uri: object, fingerprint: str) -> ArtifactIntegrityError:
    """The error for segment data that does not hash to its manifest's fingerprint."""
    return ArtifactIntegrityError(
        f"{uri} does not hash to its manifest's {fingerprint}: the file was altered or "
        "corrupted; restore it from a backup, or move its segment directory aside and "
        "publish the partition again"
    )


class PartitionStore(HeadPointers[NodeT], ABC, Generic[NodeT, IdentityT]):
    """Write-once, fingerprinted segments and partition head pointers over a `BlobStore`."""

    ROWS = "rows"  # what a segment holds, in messages

    # -- what a kind's segments are (each store says) ---------------------------------------

    @abstractmethod
    def _encode(self, node: NodeT, frame: pd.DataFrame) -> bytes:
        """Deterministic segment bytes of a checked frame."""

    @abstractmethod
    def _table(self, node: NodeT, data: bytes, uri: object) -> pa.Table:
        """The table in segment bytes; ArtifactIntegrityError if unreadable or not the
        node's schema."""

    @abstractmethod
    def _frame(self, node: NodeT, table: pa.Table) -> pd.DataFrame:
        """A writable frame of the node's columns from a table of its schema."""

    @abstractmethod
    def _identity(self, manifest: Mapping[str, Any]) -> IdentityT:
        """The identity a manifest states; ValueError when it states none."""

    @abstractmethod
    def _fingerprint(self, node: NodeT, frame: pd.DataFrame, identity: IdentityT) -> str: ...

    @abstractmethod
    def _manifest_problems(self, manifest: Mapping[str, Any], frame: pd.DataFrame) -> list[str]:
        """How the manifest's fields (its fingerprint aside) disagree with the rows."""

    @abstractmethod
    def _parse_node(self, node_id: str) -> NodeT:
        """The store's node of a node id; a SeamlessError for any other."""

    @abstractmethod
    def _read_segments(
        self,
        node: NodeT,
        listed: Sequence[tuple[Range, str]],
        window: Range,
        verify: bool,
        check: Callable[[int, LoadedSegment[IdentityT]], None] | None = None,
    ) -> pd.DataFrame:
        """Rows of the given `(partition, fingerprint)` segments, clipped to `window`; with
        `verify`, each segment proven to hash to its fingerprint and `check(i, loaded)`
        vetting the i-th."""

    # -- writing ----------------------------------------------------------------------------

    def _seal(
        self,
        node: NodeT,
        window: Range,
        identity: IdentityT,
        frame: pd.DataFrame,
        manifest: Mapping[str, Any],
    ) -> PublishResult:
        """Store `frame`, checked against its `manifest` (`publish`), as the segment the
        manifest's fingerprint names and point the head of `window` at it.

        Data first, manifest last, both create-only; nothing is ever overwritten. A sealed
        segment is left alone (`written=False`) once its data is checked; a crashed earlier
        publish (data without manifest) is completed after checking the existing data.
        Raises UnsealedSegmentCollision (a WriteOnceViolation) or SealedSegmentCollision
        (an ArtifactIntegrityError), both FingerprintCollisions, when bytes
        already stored under the fingerprint hold other rows.
        """
        fingerprint = str(manifest["fingerprint"])
        encode_started = time.perf_counter()
        manifest_bytes = encode_manifest(manifest)
        segment_dir = self._segment_dir(node, fingerprint)
        data_key, manifest_key = f"{segment_dir}/{DATA_FILE}", f"{segment_dir}/{MANIFEST_FILE}"
        data = self._encode(node, frame)
        encode_s = time.perf_counter() - encode_started
        sealed = self.blobs.exists(manifest_key)
        # Data first (create-only; a sealed segment whose data was lost gets it back).
        written = self.blobs.put_if_absent(data_key, data)
        stored = len(data) if written else 0
        if not written and not self._holds_same_rows(node, data_key, data, identity, fingerprint):
            uri = self.blobs.uri(data_key)
            if sealed:
                raise SealedSegmentCollision(
                    f"{uri} does not hold the {self.ROWS} of its manifest's {fingerprint}: the "
                    "file was altered or corrupted; move its segment directory aside and "
                    "publish again"
                )
            raise UnsealedSegmentCollision(
                f"{uri} exists without a manifest and holds other {self.ROWS} than "
                f"{fingerprint}; it is immutable, so inspect it and move it aside before "
                "publishing again"
            )
        if not sealed and self.blobs.put_if_absent(manifest_key, manifest_bytes):
            written, stored = True, stored + len(manifest_bytes)  # the manifest seals it
        self._point_head(node, window, fingerprint)
        return PublishResult(fingerprint, self.blobs.uri(segment_dir), written, encode_s, stored)

    def _holds_same_rows(
        self, node: NodeT, key: str, data: bytes, identity: IdentityT, fingerprint: str
    ) -> bool:
        """Whether existing data under `key` holds exactly the rows being published."""
        existing = self.blobs.get(key)
        if existing is None:  # removed meanwhile: create it after all
            return self.blobs.put_if_absent(key, data) or self.blobs.get(key) == data
        if existing == data:
            return True
        # Another encoder version may write other bytes for the same rows: equal content is fine.
        try:
            frame = self._frame(node, self._table(node, existing, key))
        except ArtifactIntegrityError:
            return False
        return self._fingerprint(node, frame, identity) == fingerprint

    # -- reading ----------------------------------------------------------------------------

    def read_manifest(self, node: NodeT, fingerprint: str) -> dict[str, Any] | None:
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

    def read_segment(self, node: NodeT, fingerprint: str, verify: bool = True) -> pd.DataFrame:
        """The rows of one segment; with `verify`, proven to hash to the fingerprint its
        manifest states (ArtifactIntegrityError naming the file and the fix otherwise)."""
        return self._checked_frame(node, fingerprint, self._load_segment(node, fingerprint, verify))

    def read_range(self, node: NodeT, window: Range, verify: bool = True) -> pd.DataFrame:
        """Rows of the head segments overlapping `window`, clipped to it, as one frame
        (fetched and decoded on a thread pool)."""
        return self._read_segments(node, self._heads(node, window), window, verify)

    def _checked_frame(
        self, node: NodeT, fingerprint: str, loaded: LoadedSegment[IdentityT]
    ) -> pd.DataFrame:
        frame = self._frame(node, loaded.table)
        identity = loaded.identity  # None when not verified
        if identity is not None and self._fingerprint(node, frame, identity) != fingerprint:
            raise altered(self.blobs.uri(loaded.data_key), fingerprint)
        return frame

    def _load_segment(
        self, node: NodeT, fingerprint: str, verify: bool
    ) -> LoadedSegment[IdentityT]:
        """Decoded data and, with `verify`, the manifest that vouches for it (sealed, of
        this node and fingerprint) and the identity it states."""
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
        table = self._table(node, data, uri)
        if not verify:
            return LoadedSegment(table, None, data_key, None, None)
        if manifest is None:
            raise ArtifactIntegrityError(
                f"{uri} has no manifest, so it is not a sealed segment (an interrupted "
                "publish); republish the partition"
            )
        try:
            identity = self._identity(manifest)
        except ValueError as exc:
            raise ArtifactIntegrityError(
                f"manifest {self.blobs.uri(manifest_key)} is malformed: {exc}; {RESTORE}"
            ) from exc
        if manifest.get("fingerprint") != fingerprint or identity.node_id != str(node):
            raise ArtifactIntegrityError(
                f"manifest of {uri} is for {identity.node_id} {manifest.get('fingerprint')}, "
                f"not {node} {fingerprint}"
            )
        return LoadedSegment(table, identity, data_key, manifest, manifest_bytes)

    def _sealed_nodes(self, prefixes: Iterable[str]) -> list[NodeT]:
        """The store's nodes with a sealed segment under `prefixes` (by the node id the
        first manifest found of each node prefix states), sorted by node id."""
        seen: dict[str, str] = {}
        for under in prefixes:
            for key in self.blobs.list(under):
                match = SEGMENT_KEY.match(key)
                if match and match["name"] == MANIFEST_FILE and match["prefix"] not in seen:
                    seen[match["prefix"]] = key
        nodes = set()
        for key in seen.values():
            try:
                nodes.add(
                    self._parse_node(str(json.loads(self.blobs.get(key) or b"{}")["node_id"]))
                )
            except (ValueError, KeyError, TypeError, SeamlessError):
                continue  # verify_all reports it
        return sorted(nodes, key=str)

    # -- audit (`verify.verify_all`) --------------------------------------------------------

    def stored_problems(
        self, segment_dir: str, manifest: Mapping[str, Any]
    ) -> list[tuple[ProblemKind, str, str]]:
        """`(kind, uri, detail)` of what is wrong with the sealed segment stored at
        `segment_dir` whose parsed manifest is `manifest`; [] when it is sound. Never
        raises for what it finds."""
        uri = self.blobs.uri(segment_dir)
        try:
            identity = self._identity(manifest)
            fingerprint = str(manifest["fingerprint"])
            node = self._parse_node(identity.node_id)
        except (ValueError, KeyError, TypeError, SeamlessError) as exc:
            return [("unreadable", uri, f"manifest: {exc}")]
        expected_dir = self._segment_dir(node, fingerprint)
        if expected_dir != segment_dir:
            return [("misplaced", uri, f"manifest says {expected_dir}")]
        try:
            data = self.blobs.get(f"{segment_dir}/{DATA_FILE}") or b""
            frame = self._frame(node, self._table(node, data, uri))
        except ArtifactIntegrityError as exc:
            return [("unreadable", uri, str(exc))]
        actual = self._fingerprint(node, frame, identity)
        if actual != fingerprint:
            return [("fingerprint_mismatch", uri, f"data hashes to {actual}")]
        wrong = self._manifest_problems(manifest, frame)
        if wrong:
            manifest_uri = self.blobs.uri(f"{segment_dir}/{MANIFEST_FILE}")
            return [("manifest_mismatch", manifest_uri, "; ".join(wrong))]
        return []
