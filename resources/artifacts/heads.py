"""Head pointers: the mutable pointer per partition naming its current segment (a
restated partition is a new segment, and only its head moves)."""

from __future__ import annotations

import json
from typing import Generic

from seamless_assets.core.frame import Range
from seamless_assets.errors import ArtifactIntegrityError

from .codec import encode_manifest
from .layout import HEAD_NAME, NodeT, StoreLayout


class HeadPointers(StoreLayout, Generic[NodeT]):
    """A node's partition heads (`{prefix}/heads/{start}-{end}.json`) over a `BlobStore`."""

    def _point_head(self, node: NodeT, window: Range, fingerprint: str) -> None:
        pointer = {"fingerprint": fingerprint, "node_id": str(node), "range": window.to_json()}
        key, data = self._head_key(node, window), encode_manifest(pointer)
        if self.blobs.get(key) != data:
            self.blobs.put(key, data)

    def heads(self, node: NodeT) -> dict[Range, str]:
        """Every partition's current segment fingerprint, in time order."""
        return dict(self._heads(node, window=None))

    def head_windows(self, node: NodeT) -> list[Range]:
        """Every partition window with a head, in time order: one listing, no reads."""
        prefix = f"{self.segment_prefix(node)}/heads/"
        names = (HEAD_NAME.match(key[len(prefix) :]) for key in self.blobs.list(prefix))
        return sorted(Range(int(m["start"]), int(m["end"])) for m in names if m)

    def head(self, node: NodeT, window: Range) -> str | None:
        """The current segment of the partition that is exactly `window`, if any."""
        return self._read_head(self._head_key(node, window))

    def _heads(self, node: NodeT, window: Range | None) -> list[tuple[Range, str]]:
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
