"""The blob protocol every artifact backend implements, and the key rule they share."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

TEMP_SUFFIX = ".tmp"
# Writes worth keeping in flight at once (a run's segment-publishing threads) for a backend
# that does not say (its `concurrent_writes`), e.g. a wrapper around another backend.
DEFAULT_CONCURRENT_WRITES = 4


def concurrent_writes(blobs: object) -> int:
    """How many writes `blobs` is best given at once: its `concurrent_writes`, else
    `DEFAULT_CONCURRENT_WRITES`."""
    return int(getattr(blobs, "concurrent_writes", DEFAULT_CONCURRENT_WRITES))


@dataclass(frozen=True, order=True)
class BlobFinding:
    """Something a backend keeps beside the keys that should not be there: a writer's
    temporary file (a killed run), or a file without ordinary permissions."""

    kind: Literal["temp_file", "permissions"]
    uri: str
    detail: str


@runtime_checkable
class AuditableBlobStore(Protocol):
    """A backend that can report what it keeps outside its keys (`ArtifactStore.verify_all`)."""

    def audit(self) -> builtins.list[BlobFinding]: ...


@runtime_checkable
class BlobStore(Protocol):
    """Bytes under '/'-separated relative keys. All a backend has to provide."""

    def get(self, key: str) -> bytes | None:
        """The bytes at `key`, or None when there is no such key."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Atomically create `key`; True if written, False if it existed (never clobbers)."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Atomically create or replace `key` (for mutable pointers only)."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> builtins.list[str]:
        """Every key starting with `prefix` ('' for all), sorted."""
        ...

    def uri(self, key: str) -> str:
        """An absolute URI for a key or key prefix (`file:///…`, `s3://…`)."""
        ...


def validate_key(key: str, *, allow_prefix: bool = False) -> str:
    """Reject keys that could leave the store's root; return the key unchanged.

    A key is a relative path of '/'-separated, non-empty segments, none starting with '.'
    (so no '.' or '..', and names starting with '.' stay free for backends' temporary
    files), with no backslash or NUL. A prefix may also be '' or end with '/'.
    """
    if not isinstance(key, str):
        raise ValueError(f"blob key must be a string, got {type(key).__name__}")
    body = key
    if allow_prefix:
        if key == "":
            return key
        body = key[:-1] if key.endswith("/") else key
    problem = None
    if "\x00" in key:
        problem = "contains NUL"
    elif "\\" in key:
        problem = "contains a backslash"
    elif key.startswith("/"):
        problem = "is absolute"
    elif any(segment == "" for segment in body.split("/")):
        problem = "has an empty segment"
    elif any(segment.startswith(".") for segment in body.split("/")):
        problem = "has a segment starting with '.' (such as '..')"
    if problem:
        raise ValueError(
            f"blob key {key!r} {problem}; keys are relative '/'-separated paths that stay "
            "under the store's root"
        )
    return key
