"""Dagster resources that open the configured stores and rate limiter.

Which implementation backs each protocol is decided here, from the config, in one place
(`resources_from_config`); assets only see the protocols.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import urlparse

import dagster as dg

from resources.artifacts.base import ArtifactStore
from resources.artifacts.filesystem import LocalDirectoryBlobStore
from resources.hot_store.base import HotStore
from resources.hot_store.duckdb import DuckDBHotStore
from resources.hot_store.questdb import QuestDBHotStore
from resources.rate_limit import LocalRateLimiter, RateLimiter

from .config import RateLimitConfig, SeamlessConfig
from .errors import ConfigError


class HotStoreResource(dg.ConfigurableResource):
    """The mutable hot store keyed by (node_id, ts)."""

    backend: str = "duckdb"
    duckdb_path: str = ""
    questdb_dsn: str = ""
    questdb_ilp: str = ""

    def open(self) -> HotStore:
        if self.backend == "duckdb":
            return DuckDBHotStore(self.duckdb_path)
        if self.backend == "questdb":
            return QuestDBHotStore(self.questdb_dsn, self.questdb_ilp)
        raise ConfigError(
            "seamless.hot_store.backend", f"unknown backend {self.backend!r}; use duckdb|questdb"
        )


class ArtifactStoreResource(dg.ConfigurableResource):
    """Immutable Parquet segments + manifests under `object_store_uri`."""

    object_store_uri: str
    partition_template: str

    def open(self) -> ArtifactStore:
        uri = urlparse(self.object_store_uri)
        if uri.scheme == "file":
            blobs = LocalDirectoryBlobStore(uri.path)
            return ArtifactStore(blobs, partition_template=self.partition_template)
        raise ConfigError(
            "seamless.artifact.object_store_uri",
            f"{self.object_store_uri!r}: only file:// is available in this build",
        )


@cache
def _local_limiter(config: RateLimitConfig) -> LocalRateLimiter:
    # One limiter per budget per process, shared by every run step in this process.
    return LocalRateLimiter(config)


class RateLimiterResource(dg.ConfigurableResource):
    """Rate budgets per exchange key; in-process token bucket when no Redis is set."""

    redis_dsn: str = ""

    def limiter(self, config: RateLimitConfig) -> RateLimiter:
        return _local_limiter(config)


def resources_from_config(config: SeamlessConfig) -> dict[str, dg.ConfigurableResource]:
    artifact = config.seamless.artifact
    return {
        "hot_store": HotStoreResource(
            backend=config.seamless.hot_store.backend,
            duckdb_path=str(config.hot_store_path),
            questdb_dsn=config.seamless.hot_store.questdb_dsn,
            questdb_ilp=config.seamless.hot_store.questdb_ilp,
        ),
        "artifacts": ArtifactStoreResource(
            object_store_uri=config.artifact_uri, partition_template=artifact.partition_template
        ),
        "rate_limiter": RateLimiterResource(redis_dsn=config.redis_dsn),
    }
