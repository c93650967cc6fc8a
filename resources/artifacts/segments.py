"""Bar segments: publishing a canonical frame as a sealed segment and reading bars back
(the write-once rules, heads and manifests are `partitions.py`'s)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from seamless_assets.core.fingerprint import FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import CANONICAL_COLUMNS, TS, Range, empty_frame, is_canonical
from seamless_assets.core.manifest import manifest_problems
from seamless_assets.nodes import NodeId

from .codec import (
    encode_segment,
    fingerprint_slices,
    frame_from_table,
    identity_from_manifest,
    read_segment_table,
)
from .partitions import LoadedSegment, PartitionStore, PublishResult, altered


class SegmentStore(PartitionStore[NodeId, FingerprintIdentity]):
    """Write-once, fingerprinted bar segments and partition head pointers over a `BlobStore`."""

    ROWS = "bars"

    def publish(
        self, node: NodeId, frame: pd.DataFrame, manifest: Mapping[str, Any]
    ) -> PublishResult:
        """Seal `frame` as the segment its manifest's fingerprint names; move the head
        (`PartitionStore._seal`: data first, manifest last, nothing overwritten)."""
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
        return self._seal(node, identity.range, identity, frame, manifest)

    # -- what bar segments are --------------------------------------------------------------

    def _encode(self, node: NodeId, frame: pd.DataFrame) -> bytes:
        return encode_segment(frame)

    def _table(self, node: NodeId, data: bytes, uri: object) -> pa.Table:
        return read_segment_table(data, uri)

    def _frame(self, node: NodeId, table: pa.Table) -> pd.DataFrame:
        return frame_from_table(table)

    def _identity(self, manifest: Mapping[str, Any]) -> FingerprintIdentity:
        return identity_from_manifest(manifest)

    def _fingerprint(self, node: NodeId, frame: pd.DataFrame, identity: FingerprintIdentity) -> str:
        return dataset_fingerprint(frame, identity)

    def _manifest_problems(self, manifest: Mapping[str, Any], frame: pd.DataFrame) -> list[str]:
        return manifest_problems(manifest, frame, check_fingerprint=False)

    def _parse_node(self, node_id: str) -> NodeId:
        return NodeId.parse(node_id)  # InvalidNodeId for an event node's id

    # -- reading ----------------------------------------------------------------------------

    def _read_segments(
        self,
        node: NodeId,
        listed: Sequence[tuple[Range, str]],
        window: Range,
        verify: bool,
        check: Callable[[int, LoadedSegment[FingerprintIdentity]], None] | None = None,
    ) -> pd.DataFrame:
        """Bars of the given `(partition, fingerprint)` segments, clipped to `window`;
        with `verify`, `check(i, loaded)` also vets the i-th segment and its manifest.
        Segments are decoded on the thread pool, then verified together (one pass)."""
        loaded = self._map(lambda head: self._load_segment(node, head[1], verify), listed)
        if not loaded:
            return empty_frame()
        if verify and check is not None:
            for i, segment in enumerate(loaded):
                check(i, segment)
        frame = frame_from_table(pa.concat_tables([segment.table for segment in loaded]))
        if verify:
            slices = [(s.table.num_rows, s.identity) for s in loaded if s.identity]
            actual = fingerprint_slices(frame, slices)
            for (_, expected), got, segment in zip(listed, actual, loaded, strict=True):
                if got != expected:
                    raise altered(self.blobs.uri(segment.data_key), expected)
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
