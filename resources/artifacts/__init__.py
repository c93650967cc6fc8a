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
from .s3 import S3BlobStore, open_s3_blob_store

__all__ = [
    "DEFAULT_PARTITION_TEMPLATE",
    "ArtifactStore",
    "BlobStore",
    "LocalDirectoryBlobStore",
    "PublishResult",
    "S3BlobStore",
    "VerificationProblem",
    "open_s3_blob_store",
    "validate_key",
]
