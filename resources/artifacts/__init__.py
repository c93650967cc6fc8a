"""Artifact stores: write-once, fingerprinted Parquet segments with manifests.

The names below are imported on first use (PEP 562): importing the store does not import
boto3, and importing a blob store does not import pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULE_OF = {
    **dict.fromkeys(
        (
            "DEFAULT_PARTITION_TEMPLATE",
            "ArtifactStore",
            "BlobStore",
            "PublishResult",
            "VerificationProblem",
            "validate_key",
        ),
        ".base",
    ),
    "LocalDirectoryBlobStore": ".filesystem",
    "S3BlobStore": ".s3",
    "open_s3_blob_store": ".s3",
}


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
