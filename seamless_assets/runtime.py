"""Dagster resources that open the configured stores and rate limiter.

Which implementation backs each protocol is decided here, from the config, in one place
(`resources_from_config`); assets only see the protocols.

The implementations (DuckDB, psycopg, QuestDB, boto3, Redis, pandas, pyarrow, ccxt) are
imported when a resource is set up for a run, not when the definitions load: loading stays
fast for the code server, and a run's worker has imported them before any of its steps
claims an exchange pool slot (in_process executor).
"""

from __future__ import annotations

import importlib
import os
import re
import socket
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse, urlsplit

import dagster as dg

from .config import RateLimitConfig, SeamlessConfig
from .errors import ConfigError, StoreError

if TYPE_CHECKING:
    from resources.artifacts.base import ArtifactStore
    from resources.artifacts.event_segments import EventSegmentStore
    from resources.hot_store.base import HotStore
    from resources.hot_store.event_tables import EventStore
    from resources.rate_limit import LocalRateLimiter, RateLimiter, RedisRateLimiter

SECRET_ENV_PREFIX = "SEAMLESS_SECRET_"


#: Keys of a QuestDB client configuration string (`http::addr=…;password=…;`) that hold a
#: secret: the HTTP password or bearer token, the TCP auth private key.
_ILP_SECRET_KEYS = frozenset(("password", "token"))


def _has_secret(dsn: str) -> bool:
    if re.match(r"[a-z]+::", dsn):  # a QuestDB client configuration string
        keys = {part.split("=", 1)[0].strip().lower() for part in dsn.split(";")[1:]}
        return bool(keys & _ILP_SECRET_KEYS)
    parts = urlsplit(dsn)
    return parts.password is not None or "password=" in parts.query.lower()


def secret_field(kind: str, dsn: str) -> str:
    """`dsn` (a URL or a QuestDB client configuration string) as resource config that
    keeps no secret in Dagster's run storage.

    A value without a password (or ILP token) is returned as is. One with a password is
    exported into this process's environment as `SEAMLESS_SECRET_{kind}` (`_2`, `_3`, …
    when this process already holds another value under that name) and returned as a
    `dg.EnvVar` naming it: Dagster stores the name, and resolves the value where the run
    executes. Every process that runs or evaluates the definitions (code server, run
    worker, step process) builds them from the config itself, so the variable is always
    there.
    """
    if not dsn or not _has_secret(dsn):
        return dsn
    base = f"{SECRET_ENV_PREFIX}{kind}"
    name, n = base, 1
    while os.environ.get(name) not in (None, dsn):
        n += 1
        name = f"{base}_{n}"
    os.environ[name] = dsn
    return dg.EnvVar(name)


def resolved(value: str) -> str:
    """A resource field's value: outside a Dagster run (CLI, tests) `EnvVar` fields are not
    resolved yet."""
    return value.get_value() or "" if isinstance(value, dg.EnvVar) else value


class HotStoreResource(dg.ConfigurableResource):
    """The mutable hot store keyed by (node_id, ts)."""

    backend: str = "duckdb"
    duckdb_path: str = ""
    questdb_dsn: str = ""
    questdb_ilp: str = ""
    questdb_table_prefix: str = ""
    questdb_ttl_days: int | None = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.backend in ("duckdb", "questdb"):  # `open` names any other value
            _warm_up(f"resources.hot_store.{self.backend}")

    def open_events(self) -> EventStore:
        """The event nodes' tables (funding, trades, answered spans) in the same store."""
        if self.backend == "duckdb":
            from resources.hot_store.duckdb_events import DuckDBEventStore

            return DuckDBEventStore(self.duckdb_path)
        if self.backend == "questdb":
            from resources.hot_store.questdb_events import QuestDBEventStore

            return QuestDBEventStore(
                resolved(self.questdb_dsn),
                resolved(self.questdb_ilp),
                table_prefix=self.questdb_table_prefix,
            )
        raise ConfigError(
            "seamless.hot_store.backend", f"unknown backend {self.backend!r}; use duckdb|questdb"
        )

    def open(self) -> HotStore:
        if self.backend == "duckdb":
            from resources.hot_store.duckdb import DuckDBHotStore

            return DuckDBHotStore(self.duckdb_path)
        if self.backend == "questdb":
            from resources.hot_store.questdb import QuestDBHotStore

            return QuestDBHotStore(
                resolved(self.questdb_dsn),
                resolved(self.questdb_ilp),
                table_prefix=self.questdb_table_prefix,
                ttl_days=self.questdb_ttl_days,
            )
        raise ConfigError(
            "seamless.hot_store.backend", f"unknown backend {self.backend!r}; use duckdb|questdb"
        )


class ArtifactStoreResource(dg.ConfigurableResource):
    """Immutable Parquet segments + manifests under `object_store_uri`: a local directory
    (`file://`) or an S3 bucket (`s3://bucket/prefix`, via dagster-aws `S3Resource`)."""

    object_store_uri: str
    partition_template: str
    s3_endpoint_url: str = ""  # "" = AWS (or boto3's AWS_ENDPOINT_URL_S3)
    s3_region: str = "us-east-1"
    aws_access_key_id: str | None = None  # None = boto3's default credential chain
    aws_secret_access_key: str | None = None

    @staticmethod
    def credentials_from_env(object_store_uri: str) -> dict[str, Any]:
        """`dg.EnvVar` credentials for an s3:// store (resolved where the run executes, never
        stored in run config), for each AWS_* variable set; unset ones are left to boto3's
        default chain (profile, instance role)."""
        if not object_store_uri.startswith("s3://"):
            return {}
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        return {name.lower(): dg.EnvVar(name) for name in names if os.environ.get(name)}

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _warm_up("resources.artifacts.base")

    def open_events(self) -> EventSegmentStore:
        """The event nodes' segments and snapshots, in the same store."""
        from resources.artifacts.event_segments import EventSegmentStore

        store = self.open()
        return EventSegmentStore(store.blobs, max_workers=store.max_workers)

    def open(self) -> ArtifactStore:
        from resources.artifacts.base import ArtifactStore

        uri = urlparse(self.object_store_uri)
        if uri.scheme == "file":
            from resources.artifacts.filesystem import LocalDirectoryBlobStore

            blobs = LocalDirectoryBlobStore(uri.path)
            return ArtifactStore(blobs, partition_template=self.partition_template)
        if uri.scheme == "s3":
            from resources.artifacts.s3 import S3_MAX_WORKERS, open_s3_blob_store

            # Outside a Dagster run (CLI, tests) EnvVar fields are not resolved yet.
            key_id, secret = (
                value.get_value() if isinstance(value, dg.EnvVar) else value
                for value in (self.aws_access_key_id, self.aws_secret_access_key)
            )
            try:
                s3 = open_s3_blob_store(
                    self.object_store_uri,
                    endpoint_url=self.s3_endpoint_url,
                    region=self.s3_region,
                    aws_access_key_id=key_id,
                    aws_secret_access_key=secret,
                )
            except ValueError as exc:
                raise ConfigError("seamless.artifact.object_store_uri", str(exc)) from exc
            return ArtifactStore(
                s3, partition_template=self.partition_template, max_workers=S3_MAX_WORKERS
            )
        raise ConfigError(
            "seamless.artifact.object_store_uri",
            f"{self.object_store_uri!r}: use file:///path or s3://bucket[/prefix]",
        )


@cache
def _local_limiter(config: RateLimitConfig) -> LocalRateLimiter:
    from resources.rate_limit import LocalRateLimiter

    # One limiter per budget per process, shared by every run step in this process.
    return LocalRateLimiter(config)


@cache
def _redis_limiter(dsn: str, config: RateLimitConfig) -> RedisRateLimiter:
    # Likewise one per (Redis, budget) per process: its local slots, spacing and fallback
    # bucket are per process, the token bucket and penalties are shared through Redis.
    from resources.rate_limit import RedisRateLimiter

    return RedisRateLimiter(config, dsn)


class RateLimiterResource(dg.ConfigurableResource):
    """Rate budgets per exchange key: the Redis token bucket shared by every worker when a
    Redis DSN is set (`connectors.ccxt_rate_limiter_redis`, ...), else in-process."""

    redis_dsn: str = ""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # The limiter's users: the exchange client and ccxt (the slowest import of all).
        _warm_up("resources.rate_limit", "resources.exchange", "ccxt.async_support")

    def limiter(self, config: RateLimitConfig) -> RateLimiter:
        dsn = resolved(self.redis_dsn) or config.redis_dsn
        if dsn:
            return _redis_limiter(dsn, config)
        return _local_limiter(config)


def _warm_up(*modules: str) -> None:
    """Import a resource's implementation when it is set up for a run: before the run's
    steps claim their pool slots, rather than inside the first step that needs it."""
    for module in modules:
        importlib.import_module(module)


def resources_from_config(config: SeamlessConfig) -> dict[str, dg.ConfigurableResource]:
    artifact = config.seamless.artifact
    return {
        "hot_store": HotStoreResource(
            backend=config.seamless.hot_store.backend,
            duckdb_path=str(config.hot_store_path),
            questdb_dsn=secret_field("QUESTDB_DSN", config.seamless.hot_store.questdb_dsn),
            questdb_ilp=secret_field("QUESTDB_ILP", config.seamless.hot_store.questdb_ilp),
            questdb_table_prefix=config.seamless.hot_store.questdb_table_prefix,
            questdb_ttl_days=config.seamless.hot_store.questdb_ttl_days,
        ),
        "artifacts": ArtifactStoreResource(
            object_store_uri=config.artifact_uri,
            partition_template=artifact.partition_template,
            s3_endpoint_url=artifact.s3.endpoint_url,
            s3_region=artifact.s3.region,
            **ArtifactStoreResource.credentials_from_env(config.artifact_uri),
        ),
        "rate_limiter": RateLimiterResource(redis_dsn=secret_field("REDIS_DSN", config.redis_dsn)),
    }


def _listening(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


SERVICES_HINT = (
    "start them with `bash scripts/services.sh start all`, or point seamless.yaml at your "
    "own servers"
)


def service_report(config: SeamlessConfig, timeout_s: float = 1.0) -> list[tuple[str, str, str]]:
    """`(service, address, problem)` for each production service the config selects;
    `problem` is "" when it listens (embedded defaults need nothing and are not listed)."""
    report = []
    hot = config.seamless.hot_store
    if hot.backend == "questdb":
        pg = urlparse(hot.questdb_dsn)
        host, port = pg.hostname or "127.0.0.1", pg.port or 8812
        ok = _listening(host, port, timeout_s)
        report.append(
            (
                "QuestDB",
                f"{host}:{port}",
                "" if ok else f"QuestDB not reachable at {host}:{port} (PG wire)",
            )
        )
    if config.artifact_uri.startswith("s3://"):
        endpoint = urlparse(config.seamless.artifact.s3.endpoint_url or "")
        if endpoint.hostname:
            ok = _listening(endpoint.hostname, endpoint.port or 443, timeout_s)
            problem = "" if ok else f"S3 endpoint not reachable at {endpoint.netloc}"
            report.append(("S3", endpoint.netloc, problem))
        else:
            report.append(("S3", "AWS default endpoint (not probed)", ""))
    if config.redis_dsn:
        redis = urlparse(config.redis_dsn)
        if redis.hostname:
            host, port = redis.hostname, redis.port or 6379
            ok = _listening(host, port, timeout_s)
            problem = "" if ok else f"Redis not reachable at {host}:{port}"
            report.append(("Redis", f"{host}:{port}", problem))
    return report


def check_services(
    config: SeamlessConfig,
    *,
    redis: bool = True,
    report: list[tuple[str, str, str]] | None = None,
) -> None:
    """Raise a `StoreError` naming each configured production service that is not
    listening, its address and how to start it (`seamless doctor`; `redis=False` skips
    Redis, whose outage only degrades a run to the in-process limiter; `report`: a
    `service_report` already taken)."""
    missing = [
        problem
        for service, _, problem in (service_report(config) if report is None else report)
        if problem and (redis or service != "Redis")
    ]
    if missing:
        raise StoreError("; ".join(missing) + " — " + SERVICES_HINT)
