"""The S3 artifact store beyond the shared contract (which runs it via `artifact_store`):
identical bytes to the local store, no escape from the prefix, conditional writes under
concurrency, and opening through the Dagster resource with clear errors."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from resources.artifacts import (
    DEFAULT_PARTITION_TEMPLATE,
    ArtifactStore,
    LocalDirectoryBlobStore,
    S3BlobStore,
)
from resources.artifacts.s3 import PROBE_KEY, S3_MAX_WORKERS
from seamless_assets.config import load_config_dict
from seamless_assets.core.frame import Range
from seamless_assets.errors import ConfigError, StoreError
from seamless_assets.nodes import NodeId
from seamless_assets.runtime import ArtifactStoreResource, resources_from_config
from tests.services import S3_ENDPOINT

from .conftest import DAY, T0, BarsFactory, ManifestFactory, s3_client

HOUR = 3600
DAY1 = Range(T0, T0 + DAY)
NODE = NodeId.parse("ohlcv:binance:BTC/USDT:1h")


def raw_keys(bucket: str) -> list[str]:
    """Every object in the bucket, listed by boto3 itself (not through the store)."""
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def s3_store(bucket: str, prefix: str = "lake") -> ArtifactStore:
    return ArtifactStore(S3BlobStore(s3_client(), bucket, prefix), max_workers=S3_MAX_WORKERS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- same layout, same bytes ----------------------------------------------------------------


def test_directory_and_s3_publish_byte_identical_segments(
    tmp_path: Path, s3_bucket: str, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    local = ArtifactStore(LocalDirectoryBlobStore(tmp_path / "artifacts"))
    remote = s3_store(s3_bucket)
    frame = bars(T0, 24, interval_s=HOUR)
    manifest = manifest_for(NODE, frame, DAY1)
    results = [store.publish(NODE, frame, manifest) for store in (local, remote)]
    assert results[0].fingerprint == results[1].fingerprint == manifest["fingerprint"]
    keys = local.blobs.list("")
    assert [key.rsplit("/", 1)[1] for key in keys] == [
        f"{DAY1.start}-{DAY1.end}.json",
        "data.parquet",
        "manifest.json",
    ]
    assert remote.blobs.list("") == keys
    assert raw_keys(s3_bucket) == [f"lake/{key}" for key in keys]
    for key in keys:
        assert remote.blobs.get(key) == local.blobs.get(key), key
    segment_dir = keys[-1].rpartition("/")[0]  # s3:// URIs carry the raw key, unescaped
    assert results[0].uri == (tmp_path / "artifacts" / segment_dir).as_uri()
    assert results[1].uri == f"s3://{s3_bucket}/lake/{segment_dir}"
    pd.testing.assert_frame_equal(remote.read_range(NODE, DAY1), frame)


HOSTILE = ["../../etc", "..", "x/../../y", "BTC/USDT'\"", "'; DROP TABLE x; --", ".hidden"]


def test_hostile_symbols_cannot_escape_the_node_prefix_on_s3(
    s3_bucket: str, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    store = s3_store(s3_bucket, prefix="lake/v1")
    nodes = [NodeId.of("binance", symbol, "1h") for symbol in HOSTILE]
    frames = {}
    for seed, node in enumerate(nodes):
        frames[node] = bars(T0, 24, interval_s=HOUR, seed=seed)
        store.publish(node, frames[node], manifest_for(node, frames[node], DAY1))
    prefixes = {node: f"lake/v1/{store.segment_prefix(node)}/" for node in nodes}
    assert len(set(prefixes.values())) == len(nodes)  # every node its own prefix
    keys = raw_keys(s3_bucket)
    assert len(keys) == 3 * len(nodes)
    for key in keys:
        parts = key.split("/")
        assert parts[:3] == ["lake", "v1", "exchange=binance"], key
        assert parts[3].startswith("symbol=") and parts[4] == "timeframe=1h", key
        assert not any(part in ("", ".", "..") or part.startswith(".") for part in parts), key
        assert not any(c in key for c in "'\"; \\"), key
    for node in nodes:
        own = [key for key in keys if key.startswith(prefixes[node])]
        assert len(own) == 3
        pd.testing.assert_frame_equal(store.read_range(node, DAY1), frames[node])
    assert store.list_nodes() == sorted(nodes, key=str)
    assert store.verify_all() == []


def test_uris_and_prefixes(s3_bucket: str) -> None:
    blobs = S3BlobStore.from_uri(f"s3://{s3_bucket}/lake/v1/", s3_client())
    assert blobs.prefix == "lake/v1"
    assert blobs.uri("a/b.json") == f"s3://{s3_bucket}/lake/v1/a/b.json"
    assert blobs.uri("") == f"s3://{s3_bucket}/lake/v1"
    assert S3BlobStore(s3_client(), s3_bucket).uri("a") == f"s3://{s3_bucket}/a"
    with pytest.raises(ValueError):
        S3BlobStore.from_uri(f"s3://{s3_bucket}/lake/../x", s3_client())
    with pytest.raises(ValueError):
        S3BlobStore.from_uri("file:///tmp/x", s3_client())
    # Objects written by other tools under hidden names never show up as keys.
    s3_client().put_object(Bucket=s3_bucket, Key="lake/v1/a/.tmp", Body=b"x")
    assert blobs.put_if_absent("a/b.json", b"{}")
    assert blobs.list("") == ["a/b.json"]


# -- write-once under concurrency -----------------------------------------------------------


def test_concurrent_writers_of_a_key_exactly_one_wins(s3_bucket: str) -> None:
    blobs = S3BlobStore(s3_client(), s3_bucket, "lake")
    writers = 8
    for round_ in range(10):
        key = f"seg/{round_}/data.parquet"
        start = threading.Barrier(writers)

        def write(i: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait()
            return blobs.put_if_absent(key, f"writer {i} ".encode() * 1000)

        with ThreadPoolExecutor(writers) as pool:
            won = list(pool.map(write, range(writers)))
        assert won.count(True) == 1, won
        assert blobs.get(key) == f"writer {won.index(True)} ".encode() * 1000


def test_concurrent_publishers_of_one_segment_all_agree(
    s3_bucket: str, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    store = s3_store(s3_bucket)
    frame = bars(T0, 24, interval_s=HOUR)
    manifest = manifest_for(NODE, frame, DAY1)
    start = threading.Barrier(6)

    def publish(_: int) -> Any:
        start.wait()
        return store.publish(NODE, frame, manifest)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(publish, range(6)))
    assert {r.fingerprint for r in results} == {manifest["fingerprint"]}
    assert 1 <= sum(r.written for r in results) <= 2  # data and manifest: one winner each
    assert store.verify_all() == []
    pd.testing.assert_frame_equal(store.read_segment(NODE, manifest["fingerprint"]), frame)


class ScriptedClient:
    """A real client whose first put_object calls raise scripted HTTP errors."""

    def __init__(self, statuses: list[int], drop_condition: bool = False) -> None:
        self.inner, self.statuses, self.drop_condition = s3_client(), statuses, drop_condition
        self.calls = 0

    def put_object(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.statuses:
            status = self.statuses.pop(0)
            code = {409: "ConditionalRequestConflict", 412: "PreconditionFailed"}[status]
            error = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
            raise ClientError(error, "PutObject")
        if self.drop_condition:  # an endpoint that ignores If-None-Match
            kwargs.pop("IfNoneMatch", None)
        return self.inner.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_conditional_write_conflict_is_retried_until_one_writer_won(s3_bucket: str) -> None:
    retried = ScriptedClient([409, 409])
    assert S3BlobStore(retried, s3_bucket).put_if_absent("k", b"mine")
    assert retried.calls == 3 and s3_client().get_object(Bucket=s3_bucket, Key="k")
    lost = ScriptedClient([409, 412])
    assert not S3BlobStore(lost, s3_bucket).put_if_absent("j", b"theirs")
    assert S3BlobStore(s3_client(), s3_bucket).get("j") is None


def test_an_endpoint_that_ignores_if_none_match_is_refused(s3_bucket: str) -> None:
    S3BlobStore(s3_client(), s3_bucket, "lake").check_store(S3_ENDPOINT)  # moto honours it
    blobs = S3BlobStore(ScriptedClient([], drop_condition=True), s3_bucket, "other")
    with pytest.raises(StoreError, match="ignores conditional writes"):
        blobs.check_store(S3_ENDPOINT)


def test_backend_failures_are_store_errors_naming_the_object(s3_bucket: str) -> None:
    blobs = S3BlobStore(s3_client(), s3_bucket + "-gone", "lake")
    for operation in (
        lambda: blobs.get("a/b"),
        lambda: blobs.put("a/b", b"x"),
        lambda: blobs.put_if_absent("a/b", b"x"),
        lambda: blobs.list("a/"),
    ):
        with pytest.raises(StoreError, match=rf"s3://{s3_bucket}-gone/lake/a"):
            operation()


# -- opening through the Dagster resource ---------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "seamless-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "seamless-secret")


def resource_for(uri: str, endpoint: str = S3_ENDPOINT) -> ArtifactStoreResource:
    return ArtifactStoreResource(
        object_store_uri=uri,
        partition_template=DEFAULT_PARTITION_TEMPLATE,
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        **ArtifactStoreResource.credentials_from_env(uri),
    )


def test_the_resource_opens_an_s3_store_with_env_credentials(
    aws_env: None, s3_bucket: str, bars: BarsFactory, manifest_for: ManifestFactory
) -> None:
    resource = resource_for(f"s3://{s3_bucket}/lake")
    assert isinstance(resource.aws_access_key_id, dg.EnvVar)  # never a literal secret
    resolved = resource.process_config_and_initialize()  # what a Dagster run sees
    assert resolved.aws_access_key_id == "seamless-test"
    for candidate in (resource, resolved):
        store = candidate.open()
        assert isinstance(store.blobs, S3BlobStore) and store.max_workers == S3_MAX_WORKERS
        assert store.blobs.uri("") == f"s3://{s3_bucket}/lake"
    frame = bars(T0, 24, interval_s=HOUR)
    store.publish(NODE, frame, manifest_for(NODE, frame, DAY1))
    pd.testing.assert_frame_equal(store.read_range(NODE, DAY1), frame)
    assert f"lake/{PROBE_KEY}" in raw_keys(s3_bucket)  # one fixed, hidden probe object
    assert all(".seamless" not in key for key in store.blobs.list(""))


def test_the_resource_says_what_to_do_when_s3_is_unavailable(aws_env: None, s3_bucket: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        StoreError,
        match=rf"S3 endpoint not reachable at {endpoint} — start it with scripts/services.sh "
        "start s3",
    ):
        resource_for(f"s3://{s3_bucket}/lake", endpoint).open()
    with pytest.raises(StoreError, match=r"bucket 'no-such-bucket-x' does not exist.*aws s3 mb"):
        resource_for("s3://no-such-bucket-x/lake").open()
    with pytest.raises(ConfigError, match="object_store_uri"):
        resource_for(f"s3://{s3_bucket}/../escape").open()


def test_config_wires_the_s3_section_and_env_credentials(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {
        "seamless": {
            "artifact": {
                "object_store_uri": "s3://lake-bucket/ohlcv",
                "s3": {"endpoint_url": "http://127.0.0.1:5000", "region": "eu-west-1"},
            }
        }
    }
    artifacts = resources_from_config(load_config_dict(raw))["artifacts"]
    assert isinstance(artifacts, ArtifactStoreResource)
    assert artifacts.s3_endpoint_url == "http://127.0.0.1:5000"
    assert artifacts.s3_region == "eu-west-1"
    assert isinstance(artifacts.aws_secret_access_key, dg.EnvVar)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # unset: boto3's default chain decides
    artifacts = resources_from_config(load_config_dict(raw))["artifacts"]
    assert isinstance(artifacts, ArtifactStoreResource)
    assert artifacts.aws_access_key_id is None
    local = resources_from_config(load_config_dict({}))["artifacts"]
    assert isinstance(local, ArtifactStoreResource) and local.aws_secret_access_key is None
    for section, match in (
        ({"endpoint_url": "127.0.0.1:5000"}, "endpoint URL"),
        ({"region": "EU West"}, "region name"),
        ({"bucket": "x"}, "bucket"),
    ):
        bad = {"seamless": {"artifact": {"s3": section}}}
        with pytest.raises(ConfigError, match=match):
            load_config_dict(bad)
