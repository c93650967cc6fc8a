"""`BlobStore` on an S3 bucket (AWS or any S3-compatible endpoint), via dagster-aws.

Keys live under an optional prefix: `s3://bucket/prefix` + `/` + key. The rules are the
local directory's:

* create-only writes are conditional puts (`If-None-Match: *`): S3 itself refuses the
  second writer of a key with 412 Precondition Failed, so a concurrent publisher can
  never clobber a segment or its manifest (no check-then-put window). A 409 (another
  conditional write of the key in flight) is retried until one of them has won;
* a single PUT is atomic (readers see no object or the whole object), so the manifest,
  written last, can never point at a partial `data.parquet`;
* keys are validated with `validate_key`, so nothing leaves the prefix.

An endpoint that silently ignores `If-None-Match` would turn create-only writes into
overwrites; `check_store` proves the endpoint honours it before a store is used.
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from seamless_assets.errors import StoreError

from .blobs import TEMP_SUFFIX, BlobFinding, validate_key

# One worker per pooled HTTP connection: botocore keeps 10 by default, and more threads
# than connections only open and discard extra connections. Latency-bound S3 reads still
# get more parallelism than the local store's one thread per core (capped at 8).
S3_MAX_WORKERS = 10
# Hidden (dot) keys are invisible to `list`, like the local store's temporary files.
PROBE_KEY = ".seamless-conditional-write-probe"

_CONFLICT_RETRIES = 8
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_CONTENT_TYPES = {"parquet": "application/vnd.apache.parquet", "json": "application/json"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3BlobStore:
    """Blobs as objects `{prefix}/{key}` in `bucket`, through a boto3 S3 client."""

    concurrent_writes = 4  # each write is a network round trip: keep several in flight

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        prefix = prefix.strip("/")
        if not bucket or "/" in bucket:
            raise ValueError(f"{bucket!r} is not an S3 bucket name")
        if prefix:
            validate_key(prefix)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self._root = f"{prefix}/" if prefix else ""

    @classmethod
    def from_uri(cls, uri: str, client: Any) -> S3BlobStore:
        """The store for `s3://bucket[/prefix]`."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"{uri!r} is not an s3://bucket[/prefix] URI")
        return cls(client, parsed.netloc, parsed.path)

    def __repr__(self) -> str:
        return f"S3BlobStore({self.uri('')!r})"

    def _object(self, key: str, *, allow_prefix: bool = False) -> str:
        return self._root + validate_key(key, allow_prefix=allow_prefix)

    @contextmanager
    def _io(self, key: str, action: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot {action} {self.uri(key)}: {exc}") from exc

    # -- BlobStore ------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        name = self._object(key)
        with self._io(key, "read"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def exists(self, key: str) -> bool:
        name = self._object(key)
        with self._io(key, "check"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return False
                raise
        return True

    def put_if_absent(self, key: str, data: bytes) -> bool:
        name = self._object(key)
        with self._io(key, "create"):
            for attempt in range(_CONFLICT_RETRIES):
                try:
                    self._put(name, data, IfNoneMatch="*")
                    return True
                except ClientError as exc:
                    if _status(exc) == 412 or _code(exc) == "PreconditionFailed":
                        return False  # the key exists: never clobbered
                    if _status(exc) != 409 or attempt == _CONFLICT_RETRIES - 1:
                        raise
                    # ConditionalRequestConflict: a concurrent conditional write of this
                    # key is in flight; once it completes, ours gets 412 (or succeeds).
                    time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def put(self, key: str, data: bytes) -> None:
        name = self._object(key)
        with self._io(key, "write"):
            self._put(name, data)

    def list(self, prefix: str) -> builtins.list[str]:
        name = self._object(prefix, allow_prefix=True)
        keys: builtins.list[str] = []
        with self._io(prefix, "list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=name
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    key = str(item["Key"])[len(self._root) :]
                    if not any(part.startswith(".") or not part for part in key.split("/")):
                        keys.append(key)
        return sorted(keys)

    def audit(self) -> builtins.list[BlobFinding]:
        """Hidden `*.tmp` objects under the prefix. This backend never writes any (a PUT is
        atomic), but a copy of a local store, or another tool, can leave them behind."""
        found = []
        with self._io("", "list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._root
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    name = str(item["Key"]).rpartition("/")[2]
                    if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                        uri = f"s3://{self.bucket}/{item['Key']}"
                        found.append(BlobFinding("temp_file", uri, "temporary object"))
        return sorted(found)

    def uri(self, key: str) -> str:
        name = self._object(key, allow_prefix=True).rstrip("/")
        return f"s3://{self.bucket}/{name}" if name else f"s3://{self.bucket}"

    # -- helpers --------------------------------------------------------------------------

    def _put(self, name: str, data: bytes, **conditions: str) -> None:
        extension = name.rpartition(".")[2]
        content_type = _CONTENT_TYPES.get(extension, "application/octet-stream")
        self.client.put_object(
            Bucket=self.bucket, Key=name, Body=data, ContentType=content_type, **conditions
        )

    def check_store(self, endpoint: str) -> None:
        """Fail with a StoreError saying what to do unless the endpoint is reachable, the
        bucket exists and create-only writes are honoured. `endpoint` is for messages."""
        if urlparse(endpoint).hostname in ("127.0.0.1", "localhost", "::1"):
            hint = "start it with scripts/services.sh start s3"
        else:
            hint = "check seamless.artifact.s3.endpoint_url and the network"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except EndpointConnectionError as exc:
            raise StoreError(f"S3 endpoint not reachable at {endpoint} — {hint} ({exc})") from exc
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                flag = f" --endpoint-url {endpoint}" if endpoint != "AWS" else ""
                raise StoreError(
                    f"bucket {self.bucket!r} does not exist at {endpoint}; create it with "
                    f"`aws s3 mb s3://{self.bucket}{flag}` (or boto3 `create_bucket`)"
                ) from exc
            if _code(exc) in ("403", "AccessDenied", "Forbidden"):
                raise StoreError(
                    f"access to bucket {self.bucket!r} at {endpoint} was denied; check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
                ) from exc
            raise StoreError(f"cannot open s3://{self.bucket} at {endpoint}: {exc}") from exc
        except BotoCoreError as exc:  # no credentials, bad endpoint URL, ...
            raise StoreError(f"cannot open s3://{self.bucket} at {endpoint}: {exc}") from exc
        self._check_conditional_writes(endpoint)

    def _check_conditional_writes(self, endpoint: str) -> None:
        """Prove that `If-None-Match: *` is honoured, with one fixed hidden probe object.

        Once the probe exists, one request suffices: only an endpoint that honours the
        condition answers 412. Read-only credentials cannot write anything, so they
        cannot clobber either: access denied skips the check.
        """
        name = self._root + PROBE_KEY
        for _ in range(2):
            try:
                self._put(name, uuid.uuid4().hex.encode(), IfNoneMatch="*")
            except ClientError as exc:
                if _status(exc) in (412, 409) or _code(exc) == "PreconditionFailed":
                    return
                if _code(exc) in ("403", "AccessDenied"):
                    return
                raise StoreError(f"cannot write to s3://{self.bucket}/{name}: {exc}") from exc
            except BotoCoreError as exc:
                raise StoreError(f"cannot write to s3://{self.bucket}/{name}: {exc}") from exc
        raise StoreError(
            f"the S3 endpoint at {endpoint} ignores conditional writes (If-None-Match: *), so "
            "write-once segments cannot be guaranteed; use an endpoint that supports them "
            "(AWS S3, MinIO ≥ 2024, moto ≥ 5)"
        )


def open_s3_blob_store(
    uri: str,
    *,
    endpoint_url: str = "",
    region: str = "us-east-1",
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    check: bool = True,
) -> S3BlobStore:
    """An `S3BlobStore` for `s3://bucket[/prefix]` on a dagster-aws `S3Resource` client.

    Empty credentials fall back to boto3's default chain (environment, profile, instance
    role); an empty `endpoint_url` means AWS (or boto3's `AWS_ENDPOINT_URL_S3`). With
    `check`, reachability, the bucket and conditional writes are verified first.
    """
    from dagster_aws.s3 import S3Resource  # imports Dagster: only when S3 is used

    resource = S3Resource(
        endpoint_url=endpoint_url or None,
        region_name=region,
        aws_access_key_id=aws_access_key_id or None,
        aws_secret_access_key=aws_secret_access_key or None,
    )
    blobs = S3BlobStore.from_uri(uri, resource.get_client())
    if check:
        blobs.check_store(endpoint_url or "AWS")
    return blobs
