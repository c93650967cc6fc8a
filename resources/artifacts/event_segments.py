"""Write-once segments, partition heads and snapshots of event nodes (`funding:` and
`trades:`; `seamless_assets.event_nodes`), over the same `BlobStore` as the bar store.

An event node is partitioned by UTC day; each partition publishes one content-addressed
segment (zstd Parquet of the kind's table, `event_codec.py`, plus its manifest,
`core.event_manifest`) and a head pointer names the partition's current segment. The
rules, keys and snapshot history are the bar store's (`partitions.py`,
`snapshot_history.py`, `layout.py`), under the node's own prefix
(`EventNodeId.partition_prefix()`: `kind={kind}/exchange={exchange}/symbol={symbol}`);
its snapshots list day partitions of rows on no grid (`interval_s` 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from seamless_assets.core.event_manifest import (
    EventIdentity,
    event_fingerprint,
    event_frame_problems,
    event_manifest_problems,
    identity_from_event_manifest,
)
from seamless_assets.core.frame import TS, Range
from seamless_assets.event_nodes import EVENT_KINDS, EventNodeId

from .blobs import BlobStore
from .event_codec import encode_event_segment, event_frame_from_table, read_event_table
from .partitions import LoadedSegment, PublishResult
from .snapshot_history import SnapshotHistory


class EventSegmentStore(SnapshotHistory[EventNodeId, EventIdentity]):
    """Write-once, fingerprinted event segments, partition heads and snapshots over a
    `BlobStore` (the one the bar `ArtifactStore` uses: event prefixes start with `kind=`
    and never meet a bar node's)."""

    NO_SNAPSHOT_FIX = "publish its partitions and commit one (EventSegmentStore.commit_snapshot)"

    def __init__(self, blobs: BlobStore, *, max_workers: int | None = None) -> None:
        super().__init__(blobs, max_workers=max_workers)  # no partition template: bars' only

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.blobs!r})"

    def publish(
        self, node: EventNodeId, frame: pd.DataFrame, manifest: Mapping[str, Any]
    ) -> PublishResult:
        """Seal `frame` as the segment its manifest's fingerprint names; move the head
        (`PartitionStore._seal`: data first, manifest last, nothing overwritten).

        `frame` must be exactly the kind's columns and dtypes, sorted by its `order`, one
        row per `key`, every `ts` (ms) inside the manifest's range; the manifest must be
        the frame's (`build_event_manifest`: fingerprint and every derivable field).
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
        actual = self._fingerprint(node, frame, identity)
        if actual != fingerprint:
            raise ValueError(
                f"frame fingerprints to {actual} but the manifest claims {fingerprint}; "
                "recompute the manifest from the frame being published (build_event_manifest)"
            )
        wrong = self._manifest_problems(manifest, frame)
        if wrong:
            raise ValueError(
                f"manifest of {node} {identity.window} disagrees with the frame: "
                f"{'; '.join(wrong)}; build it from the frame (build_event_manifest)"
            )
        return self._seal(node, identity.window, identity, frame, manifest)

    def list_nodes(self) -> list[EventNodeId]:
        """Every event node that has at least one sealed segment, sorted by node id."""
        return self._sealed_nodes(f"kind={kind}/" for kind in EVENT_KINDS)

    # -- what event segments are ------------------------------------------------------------

    def _encode(self, node: EventNodeId, frame: pd.DataFrame) -> bytes:
        return encode_event_segment(node.spec, frame)

    def _table(self, node: EventNodeId, data: bytes, uri: object) -> pa.Table:
        return read_event_table(node.spec, data, uri)

    def _frame(self, node: EventNodeId, table: pa.Table) -> pd.DataFrame:
        return event_frame_from_table(node.spec, table)

    def _identity(self, manifest: Mapping[str, Any]) -> EventIdentity:
        return identity_from_event_manifest(manifest)

    def _fingerprint(self, node: EventNodeId, frame: pd.DataFrame, identity: EventIdentity) -> str:
        return event_fingerprint(node, frame, identity.window, identity.conformance_version)

    def _manifest_problems(self, manifest: Mapping[str, Any], frame: pd.DataFrame) -> list[str]:
        return event_manifest_problems(manifest, frame, check_fingerprint=False)

    def _parse_node(self, node_id: str) -> EventNodeId:
        return EventNodeId.parse(node_id)

    def _read_segments(
        self,
        node: EventNodeId,
        listed: Sequence[tuple[Range, str]],
        window: Range,
        verify: bool,
        check: Callable[[int, LoadedSegment[EventIdentity]], None] | None = None,
    ) -> pd.DataFrame:
        """Rows of the given `(partition, fingerprint)` segments, clipped to `window` (ms:
        `[start * 1000, end * 1000)`) and sorted by the kind's `order`; with `verify`, each
        segment is proven to hash to its fingerprint and `check(i, loaded)` vets the i-th."""
        spec = node.spec

        def load(i: int, fingerprint: str) -> pd.DataFrame:
            loaded = self._load_segment(node, fingerprint, verify)
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
