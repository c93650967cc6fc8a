"""Fixtures for the store contract suites: one param per backend.

A new backend (QuestDB, S3) joins every contract test by adding its name to `params` and
a branch that builds it; the test files only use these fixtures.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from resources.artifacts import ArtifactStore, LocalDirectoryBlobStore, S3BlobStore
from resources.artifacts.s3 import S3_MAX_WORKERS
from resources.hot_store import DuckDBHotStore, HotStore
from resources.hot_store.questdb import QuestDBHotStore
from seamless_assets.core.fingerprint import FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import VALUE_COLUMNS, Range, frame_from_arrays
from seamless_assets.nodes import NodeId
from tests.services import (
    QUESTDB_DSN,
    QUESTDB_ILP,
    QUESTDB_PG_ADDR,
    S3_ADDR,
    S3_ENDPOINT,
    require_service,
)

DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z

BarsFactory = Callable[..., pd.DataFrame]
ManifestFactory = Callable[..., dict[str, Any]]


@pytest.fixture(params=["duckdb", "questdb"])
def hot_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HotStore]:
    if request.param == "duckdb":
        store: HotStore = DuckDBHotStore(tmp_path / "hot.duckdb", lock_timeout_s=10)
    elif request.param == "questdb":
        require_service("questdb", QUESTDB_PG_ADDR)
        # A fresh table prefix per test keeps tests independent on one shared server.
        store = QuestDBHotStore(QUESTDB_DSN, QUESTDB_ILP, table_prefix=f"t{uuid.uuid4().hex[:12]}_")
    else:  # pragma: no cover - a new backend must add its branch
        raise ValueError(request.param)
    yield store
    if isinstance(store, QuestDBHotStore):
        store.drop_tables()
    store.close()


@functools.cache
def s3_client() -> Any:
    """A boto3 client for the test S3 endpoint, built the way the resource builds it (one
    per session: building a client costs ~0.5 s; clients are thread-safe)."""
    from dagster_aws.s3 import S3Resource

    resource = S3Resource(
        endpoint_url=S3_ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    return resource.get_client()


@pytest.fixture
def s3_bucket() -> Iterator[str]:
    """A fresh, empty bucket on the test S3 endpoint, removed afterwards."""
    require_service("s3", S3_ADDR)
    client = s3_client()
    bucket = f"seamless-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    yield bucket
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["directory", "s3"])
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "directory":
        return ArtifactStore(LocalDirectoryBlobStore(tmp_path / "artifacts"))
    if request.param == "s3":
        # Under a prefix, so every test also proves that keys stay under it.
        bucket = request.getfixturevalue("s3_bucket")
        blobs = S3BlobStore(s3_client(), bucket, prefix="lake/ohlcv")
        return ArtifactStore(blobs, max_workers=S3_MAX_WORKERS)
    raise ValueError(request.param)  # pragma: no cover - a new backend must add its branch


@pytest.fixture
def bars() -> BarsFactory:
    """`bars(start, count, interval_s=60, seed=0, offset=0.0)`: a canonical frame of
    consecutive bars with distinct, seed-dependent prices."""

    def make(
        start: int, count: int, interval_s: int = 60, seed: int = 0, offset: float = 0.0
    ) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        ts = start + np.arange(count, dtype=np.int64) * interval_s
        close = 100.0 + offset + rng.random(count).cumsum()
        values = {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": rng.random(count) * 10,
        }
        return frame_from_arrays(ts, {c: values[c] for c in VALUE_COLUMNS})

    return make


@pytest.fixture
def manifest_for() -> ManifestFactory:
    """`manifest_for(node, frame, window)`: the manifest a publisher would pass."""

    def make(
        node: NodeId, frame: pd.DataFrame, window: Range, version: str = "v2"
    ) -> dict[str, Any]:
        identity = FingerprintIdentity(str(node), node.interval_s, window, version)
        return {
            "fingerprint": dataset_fingerprint(frame, identity),
            "node_id": str(node),
            "interval_s": node.interval_s,
            "range": window.to_json(),
            "conformance": {"version": version, "flags": {"gap": 0}},
            "producer": {"identity": "seamless@test"},
            "row_count": len(frame),
        }

    return make
