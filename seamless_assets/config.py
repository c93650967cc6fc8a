"""Typed, validated configuration (`seamless.yaml`), shaped after the blueprint.

Every invalid value fails at load with a `ConfigError` naming the dotted key and the
reason. `SEAMLESS_CONFIG` selects the file, `SEAMLESS_DATA_DIR` the data directory.
String values may use `${ENV_VAR}` / `${ENV_VAR:-default}` and `${dotted.config.key}`.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, SeamlessError
from .nodes import NodeId, Timeframe

CONFIG_ENV = "SEAMLESS_CONFIG"
DATA_DIR_ENV = "SEAMLESS_DATA_DIR"
REDIS_ENV = "SEAMLESS_CCXT_RATE_LIMITER_REDIS"
DEFAULT_CONFIG_NAME = "seamless.yaml"

_TEMPLATE = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConformanceConfig(_Model):
    version: Literal["v2"] = "v2"
    dtype_policy: Literal["strict"] = "strict"
    gap_flagging: bool = True


class SLAConfig(_Model):
    max_wait_storage_ms: int = Field(300, ge=0)
    max_wait_backfill_ms: int = Field(5000, ge=0)
    max_wait_live_ms: int = Field(800, ge=0)
    total_deadline_ms: int = Field(1500, ge=0)
    on_violation: Literal["FAIL_FAST", "PARTIAL_FILL"] = "PARTIAL_FILL"


class BackfillConfig(_Model):
    mode: Literal["background", "sync"] = "background"
    max_concurrent_requests: int = Field(8, ge=1)
    window_bars: int = Field(1000, ge=1)
    single_flight_ttl_ms: int = Field(60_000, ge=0)
    distributed_lease_ttl_ms: int = Field(120_000, ge=0)
    max_attempts: int = Field(5, ge=1)
    retry_backoff_ms: int = Field(500, ge=0)
    jitter_ratio: float = Field(0.25, ge=0, le=1)
    request_timeout_ms: int = Field(10_000, ge=1)


_KEY_TEMPLATE_FIELDS = {"exchange", "exchange_id", "account", "suffix", "key_suffix"}


class RateLimitConfig(_Model):
    redis_dsn: str = ""
    key_template: str = "ccxt:{exchange}:{account?}"
    tokens_per_interval: float = Field(1200, gt=0)
    interval_ms: int = Field(60_000, gt=0)
    burst_tokens: float = Field(200, ge=0)
    local_semaphore: int = Field(10, ge=1)
    min_interval_ms: float | None = Field(None, ge=0)
    min_interval_s: float | None = Field(None, ge=0)
    penalty_backoff_ms: int = Field(5000, ge=0)

    @field_validator("key_template")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        names = re.findall(r"\{([^{}]*)\}", template)
        if not names or any(n.rstrip("?") not in _KEY_TEMPLATE_FIELDS for n in names):
            raise ValueError(
                f"placeholders must be among {sorted(_KEY_TEMPLATE_FIELDS)} "
                f"(optional ones end in '?'), got {names}"
            )
        if "{exchange}" not in template and "{exchange_id}" not in template:
            raise ValueError(
                "must contain {exchange} or {exchange_id} so budgets stay per exchange"
            )
        return template

    @model_validator(mode="after")
    def _one_min_interval(self) -> RateLimitConfig:
        ms, s = self.min_interval_ms, self.min_interval_s
        if ms is not None and s is not None and abs(ms / 1000 - s) > 1e-9:
            raise ValueError(
                f"min_interval_ms={ms} and min_interval_s={s} disagree; set one of them "
                "(or make min_interval_ms == 1000 * min_interval_s)"
            )
        return self

    @property
    def min_interval_seconds(self) -> float:
        if self.min_interval_ms is not None:
            return self.min_interval_ms / 1000
        return self.min_interval_s if self.min_interval_s is not None else 0.025

    def merged(self, override: dict[str, Any]) -> RateLimitConfig:
        return RateLimitConfig.model_validate({**self.model_dump(), **override})


class HotStoreConfig(_Model):
    backend: Literal["duckdb", "questdb"] = "duckdb"
    path: str = "{data_dir}/hot.duckdb"
    questdb_dsn: str = "postgresql://admin:quest@127.0.0.1:8812/qdb"
    questdb_ilp: str = "http::addr=127.0.0.1:9000;"


class FingerprintConfig(_Model):
    algo: Literal["sha256"] = "sha256"
    include_columns: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
    normalize_nan: Literal["canonical"] = "canonical"

    @field_validator("include_columns")
    @classmethod
    def _canonical_columns(cls, columns: tuple[str, ...]) -> tuple[str, ...]:
        if columns != ("ts", "open", "high", "low", "close", "volume"):
            raise ValueError("the fingerprint covers exactly [ts, open, high, low, close, volume]")
        return columns


class ArtifactConfig(_Model):
    object_store_uri: str = "file://{data_dir}/artifacts"
    format: Literal["parquet"] = "parquet"
    compression: Literal["zstd"] = "zstd"
    stabilization_bars: int = Field(2, ge=0)
    partition_template: str = "exchange={exchange}/symbol={symbol}/timeframe={timeframe}"
    publish_fingerprint: bool = True
    early_fingerprint: bool = False
    fingerprint: FingerprintConfig = FingerprintConfig()

    @field_validator("object_store_uri")
    @classmethod
    def _scheme(cls, uri: str) -> str:
        if not (uri.startswith("file://") or uri.startswith("s3://")):
            raise ValueError(f"{uri!r} must start with file:// or s3://")
        return uri

    @field_validator("partition_template")
    @classmethod
    def _template_fields(cls, template: str) -> str:
        names = set(re.findall(r"\{([^{}]*)\}", template))
        if names != {"exchange", "symbol", "timeframe"}:
            raise ValueError(
                f"must use exactly {{exchange}}, {{symbol}} and {{timeframe}}, got {sorted(names)}"
            )
        if template.startswith("/") or ".." in template.split("/"):
            raise ValueError("must be a relative path without '..'")
        return template


class ObservabilityConfig(_Model):
    coverage_ratio_threshold: float = Field(0.98, ge=0, le=1)
    backfill_completion_ratio_min: float = Field(0.95, ge=0, le=1)
    storage_wait_warn_ms: int = Field(300, ge=0)
    backfill_wait_warn_ms: int = Field(5000, ge=0)


class PartitionsConfig(_Model):
    """History start per timeframe class: intraday (≤ 1h, daily partitions), daily+ (monthly)."""

    intraday_start: str = "2017-01-01"
    daily_start: str = "2017-01-01"

    @field_validator("intraday_start", "daily_start")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
            raise ValueError(f"{value!r} must be an ISO date YYYY-MM-DD")
        return str(value)


class SeamlessSection(_Model):
    data_dir: str = "data"
    node_id_format: Literal["ohlcv:{exchange}:{symbol}:{timeframe}"] = (
        "ohlcv:{exchange}:{symbol}:{timeframe}"
    )
    strategy: Literal["FAIL_FAST", "AUTO_BACKFILL", "PARTIAL_FILL", "SEAMLESS"] = "SEAMLESS"
    conformance: ConformanceConfig = ConformanceConfig()
    sla: SLAConfig = SLAConfig()
    backfill: BackfillConfig = BackfillConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    live: dict[str, Any] = Field(default_factory=dict)
    hot_store: HotStoreConfig = HotStoreConfig()
    artifact: ArtifactConfig = ArtifactConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    partitions: PartitionsConfig = PartitionsConfig()


class CacheConfig(_Model):
    enable: bool = True
    ttl_ms: int = Field(60_000, ge=0)
    max_shards: int = Field(512, ge=1)
    key_template: str = (
        "{node_id}:{start}:{end}:{interval}:{conformance_version}:{world_id}:{as_of}"
    )


class DomainConfig(_Model):
    require_as_of: bool = False
    source: Literal["artifact_only", "artifact_prefers", "live_blend"] | None = None
    max_lag_sec: int | None = Field(None, ge=0)
    allow_partial: bool = False
    monotonic_as_of: bool = False


class ExchangeConfig(_Model):
    sandbox: bool = False
    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ("1m",)
    market_types: tuple[str, ...] = ("spot",)
    rate_limit_rps: float | None = Field(None, gt=0)
    rate_limit: dict[str, Any] = Field(default_factory=dict)
    account: str | None = None
    max_candles_per_call: int | None = Field(None, ge=1)
    ccxt_config: dict[str, Any] = Field(default_factory=dict)


class EnvironmentConfig(_Model):
    coordinator_url: str = ""
    rate_limiter_redis: str = ""


class SeamlessConfig(_Model):
    """The whole validated configuration."""

    seamless: SeamlessSection = SeamlessSection()
    cache: CacheConfig = CacheConfig()
    domains: dict[Literal["backtest", "research", "dryrun", "live"], DomainConfig] = Field(
        default_factory=dict
    )
    exchanges: dict[str, ExchangeConfig] = Field(default_factory=dict)
    series: tuple[str, ...] = ()
    connectors: dict[str, str] = Field(default_factory=dict)
    environment: EnvironmentConfig = EnvironmentConfig()

    source: str | None = Field(None, exclude=True)

    @cached_property
    def nodes(self) -> tuple[NodeId, ...]:
        """Every node of the catalog: exchange symbols × timeframes, plus explicit `series`."""
        found: dict[str, NodeId] = {}
        for exchange_id, exchange in self.exchanges.items():
            for symbol in exchange.symbols:
                for timeframe in exchange.timeframes:
                    node = NodeId.of(exchange_id, symbol, timeframe)
                    found[str(node)] = node
        for node_id in self.series:
            node = NodeId.parse(node_id)
            found[str(node)] = node
        return tuple(found.values())

    @property
    def data_dir(self) -> Path:
        return Path(self.seamless.data_dir)

    @property
    def hot_store_path(self) -> Path:
        return Path(self.seamless.hot_store.path.format(data_dir=self.seamless.data_dir))

    @property
    def artifact_uri(self) -> str:
        return self.seamless.artifact.object_store_uri.format(data_dir=self.seamless.data_dir)

    @property
    def redis_dsn(self) -> str:
        return (
            self.seamless.rate_limit.redis_dsn
            or self.connectors.get("ccxt_rate_limiter_redis", "")
            or self.environment.rate_limiter_redis
            or os.environ.get(REDIS_ENV, "")
        )

    def exchange(self, exchange_id: str) -> ExchangeConfig:
        try:
            return self.exchanges[exchange_id]
        except KeyError:
            raise ConfigError(
                f"exchanges.{exchange_id}",
                f"exchange {exchange_id!r} is not configured; add it under `exchanges:`",
                self.source,
            ) from None

    def rate_limit_for(self, exchange_id: str) -> RateLimitConfig:
        """The global rate-limit section with the exchange's overrides applied."""
        exchange = self.exchange(exchange_id)
        override = dict(exchange.rate_limit)
        if exchange.rate_limit_rps is not None and "tokens_per_interval" not in override:
            override.update(tokens_per_interval=exchange.rate_limit_rps, interval_ms=1000)
        return self.seamless.rate_limit.merged(override) if override else self.seamless.rate_limit

    def node(self, node_id: str) -> NodeId:
        """The configured node with this id, or a `ConfigError` listing the known ones."""
        wanted = str(NodeId.parse(node_id))
        for node in self.nodes:
            if str(node) == wanted:
                return node
        known = ", ".join(str(n) for n in self.nodes) or "none"
        raise ConfigError(
            "series", f"node {wanted!r} is not in the catalog (known: {known})", self.source
        )


def _interpolate(value: Any, root: dict[str, Any], key: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, root, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, root, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    if value.count("${") != len(_TEMPLATE.findall(value)):
        raise ConfigError(key, f"malformed template {value!r}: every '${{' needs a closing '}}'")

    def resolve(match: re.Match[str]) -> str:
        expr = match.group(1)
        name, _, default = expr.partition(":-")
        if _DOTTED.match(name):
            node: Any = root
            for part in name.split("."):
                if not isinstance(node, dict) or part not in node:
                    return default
                node = node[part]
            if isinstance(node, str) and "${" in node:
                raise ConfigError(key, f"{expr!r} refers to another template; chain not allowed")
            return "" if node is None else str(node)
        if not _ENV_NAME.match(name):
            raise ConfigError(
                key,
                f"bad template ${{{expr}}}: use ${{ENV_VAR}}, ${{ENV_VAR:-default}} "
                "or ${section.key}",
            )
        return os.environ.get(name, default)

    return _TEMPLATE.sub(resolve, value)


def _validate_exchanges(config: SeamlessConfig) -> None:
    import ccxt  # local: heavy import, only needed at load

    for exchange_id, exchange in config.exchanges.items():
        key = f"exchanges.{exchange_id}"
        if exchange_id not in ccxt.exchanges:
            close = [e for e in ccxt.exchanges if e.startswith(exchange_id[:3])][:5]
            hint = f"; did you mean {close}?" if close else ""
            raise ConfigError(key, f"ccxt has no exchange {exchange_id!r}{hint}", config.source)
        supported = getattr(ccxt, exchange_id)().timeframes or {}
        for timeframe in exchange.timeframes:
            try:
                Timeframe.parse(timeframe)
            except SeamlessError as exc:
                raise ConfigError(f"{key}.timeframes", str(exc), config.source) from None
            if timeframe not in supported:
                raise ConfigError(
                    f"{key}.timeframes",
                    f"{exchange_id} has no timeframe {timeframe!r}; it offers {sorted(supported)}",
                    config.source,
                )
        for symbol in exchange.symbols:
            if "/" not in symbol:
                raise ConfigError(
                    f"{key}.symbols", f"{symbol!r} is not a ccxt symbol like 'BTC/USDT'"
                )
        try:
            config.rate_limit_for(exchange_id)
        except ValidationError as exc:
            raise _config_error(exc, config.source, f"{key}.rate_limit") from None
    for node in config.nodes:
        if node.exchange not in config.exchanges:
            raise ConfigError(
                "series",
                f"{node} uses exchange {node.exchange!r}, which has no entry under `exchanges:`",
                config.source,
            )


def _config_error(exc: ValidationError, source: str | None, prefix: str = "") -> ConfigError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    key = f"{prefix}.{loc}" if prefix and loc else prefix or loc
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "unknown key (check the spelling against the blueprint's configuration)"
    return ConfigError(key, f"{reason} (got {first.get('input')!r})", source)


def load_config_dict(raw: dict[str, Any], source: str | None = None) -> SeamlessConfig:
    """Validate an already-parsed mapping (environment overrides applied here)."""
    if not isinstance(raw, dict):
        raise ConfigError("<root>", "the config must be a mapping at the top level", source)
    resolved = _interpolate(raw, raw, "")
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        resolved.setdefault("seamless", {})
        if not isinstance(resolved["seamless"], dict):
            raise ConfigError("seamless", "must be a mapping", source)
        resolved["seamless"] = {**resolved["seamless"], "data_dir": data_dir}
    try:
        config = SeamlessConfig.model_validate({**resolved, "source": source})
        config.nodes  # noqa: B018 - parse every node id now, not at first use
    except ValidationError as exc:
        raise _config_error(exc, source) from None
    except SeamlessError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError("series", str(exc), source) from None
    _validate_exchanges(config)
    return config


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)


def load_config(path: str | Path | None = None) -> SeamlessConfig:
    """Load, interpolate and validate `seamless.yaml`; relative paths resolve next to it."""
    config_path = Path(path) if path is not None else default_config_path()
    if not config_path.is_file():
        raise ConfigError(
            "<file>",
            f"config file {str(config_path)!r} not found; set {CONFIG_ENV} or run from the "
            "project root",
        )
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"not valid YAML: {exc}", str(config_path)) from None
    config = load_config_dict(raw, source=str(config_path))
    data_dir = Path(config.seamless.data_dir)
    if not data_dir.is_absolute():
        data_dir = (config_path.parent / data_dir).resolve()
        section = config.seamless.model_copy(update={"data_dir": str(data_dir)})
        config = config.model_copy(update={"seamless": section})
        config.__dict__.pop("nodes", None)
    return config
