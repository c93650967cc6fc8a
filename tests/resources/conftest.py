"""Fixtures for the store contract suites: one param per backend.

A new backend (QuestDB, S3) joins every contract test by adding its name to `params` and
a branch that builds it; the test files only use these fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from resources.artifacts import ArtifactStore, LocalDirectoryBlobStore
from resources.hot_store import DuckDBHotStore, HotStore
from resources.hot_store.questdb import QuestDBHotStore
from seamless_assets.core.fingerprint import FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import VALUE_COLUMNS, Range, frame_from_arrays
from seamless_assets.nodes import NodeId
from tests.services import QUESTDB_DSN, QUESTDB_ILP, QUESTDB_PG_ADDR, require_service

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


@pytest.fixture(params=["directory"])
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "directory":
        return ArtifactStore(LocalDirectoryBlobStore(tmp_path / "artifacts"))
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
            "rows": len(frame),
        }

    return make
