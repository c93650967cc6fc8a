"""The artifact store: immutable, fingerprinted Parquet segments with manifests.

One store logic class (`ArtifactStore`) runs over a tiny blob protocol (`BlobStore`), so a
backend (local directory, S3) only moves bytes. Its parts, each a module: the key layout
(`layout.py`), segments and heads (`segments.py`), snapshots (`snapshots.py`) and the audit
of everything stored (`verify.py`).
"""

from __future__ import annotations

import json

from seamless_assets.errors import SeamlessError
from seamless_assets.event_nodes import EventNodeId
from seamless_assets.nodes import NodeId

from . import verify
from .layout import MANIFEST_FILE, SEGMENT_KEY
from .snapshots import SnapshotStore


class ArtifactStore(SnapshotStore):
    """Write-once, fingerprinted segments, partition heads and snapshots over a `BlobStore`."""

    def list_nodes(self) -> list[NodeId]:
        """Every bar node that has at least one sealed segment, sorted by node id (event
        nodes are `EventSegmentStore.list_nodes`)."""
        seen: dict[str, str] = {}
        for key in self.blobs.list(""):
            match = SEGMENT_KEY.match(key)
            if match and match["name"] == MANIFEST_FILE and match["prefix"] not in seen:
                seen[match["prefix"]] = key
        nodes = set()
        for key in seen.values():
            data = self.blobs.get(key)
            try:
                node_id = str(json.loads(data or b"{}")["node_id"])
                if EventNodeId.is_event_id(node_id):
                    continue  # an event node (`kind=funding/…`): EventSegmentStore.list_nodes
                nodes.add(NodeId.parse(node_id))
            except (ValueError, KeyError, TypeError, SeamlessError):
                continue  # verify_all reports it
        return sorted(nodes, key=str)

    def verify_all(self) -> list[verify.VerificationProblem]:
        """Check every segment, head pointer and snapshot under the root (all nodes)."""
        return verify.verify_all(self)
