"""The artifact store: immutable, fingerprinted Parquet segments with manifests.

One store logic class (`ArtifactStore`) runs over a tiny blob protocol (`BlobStore`), so a
backend (local directory, S3) only moves bytes. Its parts, each a module: the key layout
(`layout.py`), segments and heads (`partitions.py`, bars' `segments.py`), snapshots
(`snapshot_history.py`, bars' `snapshots.py`) and the audit of everything stored
(`verify.py`).
"""

from __future__ import annotations

from seamless_assets.nodes import NodeId

from . import verify
from .snapshots import SnapshotStore


class ArtifactStore(SnapshotStore):
    """Write-once, fingerprinted segments, partition heads and snapshots over a `BlobStore`."""

    def list_nodes(self) -> list[NodeId]:
        """Every bar node that has at least one sealed segment, sorted by node id (event
        nodes are `EventSegmentStore.list_nodes`)."""
        return self._sealed_nodes([""])

    def verify_all(self) -> list[verify.VerificationProblem]:
        """Check every segment, head pointer and snapshot under the root (all nodes)."""
        return verify.verify_all(self)
