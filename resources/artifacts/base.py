"""Compatibility module: the artifact store's public names, now split into modules.

`ArtifactStore` lives in `store.py` over `layout.py`, `partitions.py`, `segments.py`,
`snapshot_history.py`, `snapshots.py` and `verify.py`; encoding in `codec.py`; the blob
protocol in `blobs.py`.
"""

from __future__ import annotations

from .blobs import BlobStore, validate_key
from .codec import (
    decode_segment,
    encode_manifest,
    encode_segment,
    fingerprint_slices,
    frame_from_table,
    identity_from_manifest,
    read_segment_table,
)
from .layout import DATA_FILE, DEFAULT_PARTITION_TEMPLATE, MANIFEST_FILE
from .partitions import PublishResult
from .store import ArtifactStore
from .verify import ProblemKind, VerificationProblem

__all__ = [
    "DATA_FILE",
    "DEFAULT_PARTITION_TEMPLATE",
    "MANIFEST_FILE",
    "ArtifactStore",
    "BlobStore",
    "ProblemKind",
    "PublishResult",
    "VerificationProblem",
    "decode_segment",
    "encode_manifest",
    "encode_segment",
    "fingerprint_slices",
    "frame_from_table",
    "identity_from_manifest",
    "read_segment_table",
    "validate_key",
]
