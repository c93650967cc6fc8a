"""Artifact stores: write-once, fingerprinted Parquet segments with manifests."""

from .base import (
    DEFAULT_PARTITION_TEMPLATE,
    ArtifactStore,
    BlobStore,
    PublishResult,
    VerificationProblem,
    validate_key,
)
from .filesystem import LocalDirectoryBlobStore

__all__ = [
    "DEFAULT_PARTITION_TEMPLATE",
    "ArtifactStore",
    "BlobStore",
    "LocalDirectoryBlobStore",
    "PublishResult",
    "VerificationProblem",
    "validate_key",
]
