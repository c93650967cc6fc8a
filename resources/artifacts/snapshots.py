"""A bar node's snapshots: its history (`snapshot_history.py`), committed by the as_of
sensor or `seamless snapshot`, and compared bar by bar.

Snapshots are write-once and pin segment fingerprints, so a snapshot resolves to the same
bars forever.
"""

from __future__ import annotations

import pandas as pd

from seamless_assets.core.fingerprint import FingerprintIdentity
from seamless_assets.core.frame import empty_frame
from seamless_assets.core.snapshot import Snapshot, diff_bars, diff_segments
from seamless_assets.nodes import NodeId

from .segments import SegmentStore
from .snapshot_history import SnapshotHistory


class SnapshotStore(SegmentStore, SnapshotHistory[NodeId, FingerprintIdentity]):
    """A bar node's append-only snapshot history over its segments."""

    NO_SNAPSHOT_FIX = (
        "materialize its partitions and let the as_of sensor (or `seamless snapshot`) commit one"
    )
    LATER_AS_OF_FIX = (
        "pin an as_of at or before it (`seamless snapshots {node}` lists them), or commit a "
        "new one with `seamless snapshot {node}`"
    )

    # The as_of sensor's and the CLI's name for committing the published set.
    advance_snapshot = SnapshotHistory.commit_snapshot

    def diff_snapshots(self, node: NodeId, before: Snapshot, after: Snapshot) -> pd.DataFrame:
        """The bars that differ between two snapshots of a node (see `diff_bars`): only
        partitions whose segment changed are read, each verified against its fingerprint."""
        frames = []
        for change in diff_segments(before, after):
            old = self.read_snapshot_range(node, before, change.range)
            new = self.read_snapshot_range(node, after, change.range)
            frames.append(diff_bars(old, new))
        return pd.concat(frames, ignore_index=True) if frames else diff_bars(*[empty_frame()] * 2)
