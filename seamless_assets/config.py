"""Typed, validated configuration (`seamless.yaml`), shaped after the blueprint.

Every invalid value fails at load with a `ConfigError` naming the dotted key and the
reason. `SEAMLESS_CONFIG` selects the file, `SEAMLESS_DATA_DIR` the data directory
(relative: to the working directory), `SEAMLESS_CCXT_RATE_LIMITER_REDIS` is the last
fallback for the Redis DSN. String values may use `${ENV_VAR}`, `${ENV_VAR:-default}`
(the default also replaces an empty value, as in the shell) and `${dotted.config.key}`.
A relative `seamless.data_dir` resolves next to the config file.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import string
import types
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlparse

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError, SeamlessError
from .event_nodes import AnyNode, EventNodeId
from .nodes import MARKET_KINDS, NodeId, Timeframe, check_symbol, market_kind

CONFIG_ENV = "SEAMLESS_CONFIG"
DATA_DIR_ENV = "SEAMLESS_DATA_DIR"
REDIS_ENV = "SEAMLESS_CCXT_RATE_LIMITER_REDIS"
DEFAULT_CONFIG_NAME = "seamless.yaml"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_SLUG_CHARS = frozenset(string.ascii_letters + string.digits + "_-%")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _not_bool(value: Any) -> Any:
    # YAML `true` would otherwise become 1 in a numeric field.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {value}")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


def _template_fields(template: str) -> list[tuple[str, str | None, str | None]]:
    """`(field, conversion, format_spec)` of every `{...}` in a str.format template."""
    try:
        return [
            (name, conversion, spec)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"{template!r} is not a valid template: {exc}") from None


def _check_template(
    template: str, allowed: set[str], optional: frozenset[str] = frozenset()
) -> list[str]:
    """The placeholder names of `template`, each bare (`{name}`) and allowed."""
    names = []
    for name, conversion, spec in _template_fields(template):
        bare = name[:-1] if name.endswith("?") and name[:-1] in optional else name
        if bare not in allowed or conversion or spec:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            extra = f" ('?' only after {sorted(optional)})" if optional else ""
            raise ValueError(f"unknown placeholder {{{shown}}}; allowed: {sorted(allowed)}{extra}")
        names.append(bare)
    return names


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `section:` with nothing under it is YAML null: treat it as "all defaults".
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if not (v is None and k in cls.model_fields and _model_of(cls, k) is not None)
            }
        return data


def _model_of(model: type[BaseModel], field: str) -> type[BaseModel] | None:
    annotation = model.model_fields[field].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, _Model) else None


class ConformanceConfig(_Model):
    version: Literal["v2"] = "v2"
    dtype_policy: Literal["strict"] = "strict"
    gap_flagging: bool = True


class SLAConfig(_Model):
    max_wait_storage_ms: Int = Field(default=300, ge=0)
    max_wait_backfill_ms: Int = Field(default=5000, ge=0)
    max_wait_live_ms: Int = Field(default=800, ge=0)
    total_deadline_ms: Int = Field(default=1500, ge=0)
    on_violation: Literal["FAIL_FAST", "PARTIAL_FILL"] = "PARTIAL_FILL"


class BackfillConfig(_Model):
    mode: Literal["background", "sync"] = "background"
    # windows of one fetch in flight at once (the limiter's local_semaphore caps the process)
    max_concurrent_requests: Int = Field(default=32, ge=1)
    window_bars: Int = Field(default=1000, ge=1)
    single_flight_ttl_ms: Int = Field(default=60_000, ge=0)
    distributed_lease_ttl_ms: Int = Field(default=120_000, ge=0)
    max_attempts: Int = Field(default=5, ge=1)
    retry_backoff_ms: Int = Field(default=500, ge=0)
    jitter_ratio: Float = Field(default=0.25, ge=0, le=1)
    request_timeout_ms: Int = Field(default=10_000, ge=1)
    # Gap repair (sensors/gap_repair.py): at most this many runs requested per tick, across
    # all nodes; the rest follow on later ticks (a new install has years of history to fill).
    max_repair_runs_per_tick: Int = Field(default=4, ge=1)


_KEY_TEMPLATE_FIELDS = {"exchange", "exchange_id", "account", "suffix", "key_suffix"}
_KEY_TEMPLATE_OPTIONAL = frozenset({"account", "suffix", "key_suffix"})


#: the most requests one process may have in flight per rate key (`local_semaphore`)
LOCAL_SEMAPHORE_MAX = 64


class RateLimitConfig(_Model):
    redis_dsn: str = ""
    key_template: str = "ccxt:{exchange}:{account?}"
    # In the exchange's own unit (Binance: request weight) per `interval_ms`; null = the
    # limit the exchange publishes (exchangeInfo `rateLimits`, else resources.rate_budget's
    # table). A value above the published limit is lowered to it (with a warning).
    tokens_per_interval: Float | None = Field(default=None, gt=0)
    interval_ms: Int = Field(default=60_000, gt=0)
    # The bucket's capacity, taken out of the window's budget (never added on top); null =
    # 2% of the effective limit. Never below the largest single request.
    burst_tokens: Float | None = Field(default=None, ge=0)
    safety_margin: Float = Field(default=0.02, ge=0, le=0.5)
    # "exchange": where the exchange counts in fixed windows of its own clock (Binance's
    # minute) and the budget is stated per that window, admit up to the limit less the
    # margin per exchange window, a request counted in every window it may land in
    # (burst_tokens does not apply); other exchanges get the bucket. "sliding": always the
    # window-safe bucket (burst_tokens, refill), any window of interval_ms within budget.
    window: Literal["exchange", "sliding"] = "exchange"
    # Workers sharing the budget, each using 1/workers of it while Redis is down; null =
    # the exchange's pool limit (exchanges.<id>.pool_limit).
    workers: Int | None = Field(default=None, ge=1, le=1024)
    # requests in flight per process and key: a latency-bound range overlaps this many
    local_semaphore: Int = Field(default=32, ge=1, le=LOCAL_SEMAPHORE_MAX)
    min_interval_ms: Float | None = Field(default=None, ge=0)
    min_interval_s: Float | None = Field(default=None, ge=0)
    penalty_backoff_ms: Int = Field(default=5000, ge=0)

    @field_validator("key_template")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        names = _check_template(template, _KEY_TEMPLATE_FIELDS, _KEY_TEMPLATE_OPTIONAL)
        if "exchange" not in names and "exchange_id" not in names:
            raise ValueError(
                f"{template!r} must contain {{exchange}} or {{exchange_id}} so budgets stay "
                "per exchange"
            )
        return template

    @model_validator(mode="after")
    def _burst_inside_budget(self) -> RateLimitConfig:
        rate, burst = self.tokens_per_interval, self.burst_tokens
        if rate is not None and burst is not None and burst >= rate * (1 - self.safety_margin):
            raise ValueError(
                f"burst_tokens={burst:g} must be below tokens_per_interval={rate:g} (less the "
                f"safety_margin): the burst is part of each window's budget, not added on top"
            )
        return self

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
        # 2 ms when unset (as seamless.yaml ships): 500 request starts/s per process. With
        # Binance's fixed windows a latency-bound range may send its requests at once; 10 ms
        # would cap 32 requests in flight at 100 ms latency to a third of their rate
        return self.min_interval_s if self.min_interval_s is not None else 0.002

    def merged(self, override: dict[str, Any]) -> RateLimitConfig:
        """These settings with `override` applied (validated again).

        Overriding one of `min_interval_ms` / `min_interval_s` replaces the other too, so an
        exchange may say `min_interval_s: 0.1` against a global `min_interval_ms: 25`.
        """
        base = self.model_dump()
        pair = {"min_interval_ms", "min_interval_s"}
        if pair & override.keys():
            for name in pair - override.keys():
                base[name] = None
        return RateLimitConfig.model_validate({**base, **override})


class HotStoreConfig(_Model):
    backend: Literal["duckdb", "questdb"] = "duckdb"
    path: str = "{data_dir}/hot.duckdb"
    questdb_dsn: str = "postgresql://admin:quest@127.0.0.1:8812/qdb"
    questdb_ilp: str = "http::addr=127.0.0.1:9000;"
    questdb_table_prefix: str = Field(default="", pattern=r"^([a-z][a-z0-9_]*)?$")
    questdb_ttl_days: int | None = Field(default=None, ge=1)

    @field_validator("path")
    @classmethod
    def _path_template(cls, path: str) -> str:
        if not path.strip():
            raise ValueError("must not be empty")
        _check_template(path, {"data_dir"})
        return path


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

    @field_validator("normalize_nan", mode="before")
    @classmethod
    def _nan_policy(cls, value: Any) -> Any:
        if value != "canonical":
            raise ValueError(
                f"{value!r} is not supported: every NaN is hashed as one canonical NaN (so a "
                "missing value never looks like a real price of 0); use 'canonical'"
            )
        return value


_PARTITION_FIELDS = ("exchange", "symbol", "timeframe")
_S3_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class S3Config(_Model):
    """Where an `s3://` object store lives. Credentials never go here: they come from
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or boto3's default chain)."""

    endpoint_url: str = ""  # "" = AWS itself (or boto3's AWS_ENDPOINT_URL_S3)
    region: str = "us-east-1"

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parsed = urlparse(url)
        if url and (parsed.scheme not in ("http", "https") or not parsed.netloc):
            raise ValueError(
                f"{url!r} is not an S3 endpoint URL; use http(s)://host[:port], e.g. "
                "http://127.0.0.1:5000, or leave it empty for AWS"
            )
        if parsed.username is not None or parsed.password is not None:
            raise ValueError(
                "the endpoint URL carries credentials (user:password@), which would be "
                "printed and logged with the address; give them as AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY instead"
            )
        return url

    @field_validator("region")
    @classmethod
    def _region_name(cls, region: str) -> str:
        if not _S3_REGION.fullmatch(region):
            raise ValueError(f"{region!r} is not a region name such as 'us-east-1'")
        return region


class ArtifactConfig(_Model):
    object_store_uri: str = "file://{data_dir}/artifacts"
    format: Literal["parquet"] = "parquet"
    compression: Literal["zstd"] = "zstd"
    stabilization_bars: Int = Field(default=2, ge=0)
    partition_template: str = "exchange={exchange}/symbol={symbol}/timeframe={timeframe}"
    publish_fingerprint: bool = True
    early_fingerprint: bool = False
    fingerprint: FingerprintConfig = FingerprintConfig()
    s3: S3Config = S3Config()

    @field_validator("object_store_uri")
    @classmethod
    def _scheme(cls, uri: str) -> str:
        if not (uri.startswith("file://") or uri.startswith("s3://")):
            raise ValueError(
                f"{uri!r} must start with file:// (local directory) or s3:// (S3 bucket)"
            )
        _check_template(uri, {"data_dir"})
        if uri.startswith("s3://") and not urlparse(uri).netloc:
            raise ValueError(f"{uri!r} names no bucket; use s3://bucket[/prefix]")
        return uri

    @field_validator("partition_template")
    @classmethod
    def _template_fields(cls, template: str) -> str:
        names = _check_template(template, set(_PARTITION_FIELDS))
        if sorted(names) != sorted(_PARTITION_FIELDS):
            raise ValueError(
                "must use each of {exchange}, {symbol} and {timeframe} exactly once, "
                f"got {names}"
            )
        # Slugs are [A-Za-z0-9_%-]: two placeholders are only told apart by a character
        # outside that set (e.g. `/` or `=`), otherwise two nodes could share a prefix.
        parts = list(string.Formatter().parse(template))
        for (_, previous, _, _), (literal, following, _, _) in itertools.pairwise(parts):
            if previous is not None and following is not None and set(literal) <= _SLUG_CHARS:
                raise ValueError(
                    f"{template!r}: placeholders must be separated by a character that never "
                    "occurs in a slug, such as '/' or '='"
                )
        segments = template.split("/")
        if "\\" in template or any(seg in ("", ".", "..") for seg in segments):
            raise ValueError(
                f"{template!r} must be a relative path: no leading, trailing or doubled '/', "
                "no '.' or '..' segments, no '\\'"
            )
        return template


class MetricsConfig(_Model):
    """Prometheus export (README "Metrics"): each run pushes its metrics to a Pushgateway
    when it ends; a process holding a read resource serves them on `/metrics`."""

    pushgateway_url: str | None = None  # e.g. http://127.0.0.1:9091; None: runs push nothing
    job: str = Field(default="seamless_backfill", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    push_timeout_s: Float = Field(default=5.0, gt=0)
    port: Int | None = Field(default=None, ge=0, le=65535)  # reader /metrics; None: none
    bind: str = "127.0.0.1"

    @field_validator("pushgateway_url")
    @classmethod
    def _gateway_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"{url!r} is not a Pushgateway URL; use http(s)://host[:port], e.g. "
                "http://127.0.0.1:9091, or leave the key out to push nothing"
            )
        if parsed.username is not None or parsed.password is not None:
            raise ValueError(
                "the Pushgateway URL carries credentials (user:password@), which would be "
                "logged with the address; put the gateway behind a local proxy instead"
            )
        return url.rstrip("/")


def _env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an environment variable name such as SLACK_BOT_TOKEN")
    return name


def _http_url(url: str, what: str, example: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{url!r} is not {what}; use http(s)://host[:port][/path], e.g. {example}")
    if parsed.username is not None or parsed.password is not None or parsed.query:
        raise ValueError(
            f"{what} carries credentials or a query (user:password@, ?token=), which would be "
            "stored with the config; put the whole URL in an environment variable (url_env)"
        )
    return url


EnvName = Annotated[str, AfterValidator(_env_name)]


class WebhookAlertConfig(_Model):
    """A JSON POST per alert. Secrets only as environment variable names: `url_env` when the
    URL itself is secret (e.g. a Slack incoming webhook), `headers_env` for auth headers."""

    url: str | None = None
    url_env: EnvName | None = None
    headers_env: dict[str, EnvName] = Field(default_factory=dict)  # header -> env var name
    timeout_s: Float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _plain_url(cls, url: str | None) -> str | None:
        return None if url is None else _http_url(url, "a webhook URL", "http://alerts:8080/hook")

    @model_validator(mode="after")
    def _one_url(self) -> WebhookAlertConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError(
                "give exactly one of url (a plain URL) or url_env (the environment variable "
                "holding a secret URL)"
            )
        return self


class SlackAlertConfig(_Model):
    """chat.postMessage with a bot token read from `token_env` (a Dagster EnvVar)."""

    channel: str = Field(min_length=1)  # e.g. "#data-alerts" or a channel id
    token_env: EnvName = "SLACK_BOT_TOKEN"
    api_url: str = "https://slack.com/api/"  # Slack's Web API (a proxy's address otherwise)

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, url: str) -> str:
        return _http_url(url, "a Slack Web API URL", "https://slack.com/api/")


class AlertsConfig(_Model):
    """The alert sensor (README "Alerts"): failed WARN/ERROR checks and failed runs, one
    message each, to Slack and/or a webhook."""

    ui_base_url: str = "http://127.0.0.1:3000"  # the Dagster UI the messages link to
    min_severity: Literal["WARN", "ERROR"] = "WARN"
    failed_runs: bool = True
    max_attempts: Int = Field(default=5, ge=1)  # deliveries of one message before giving up
    lookback_s: Int = Field(default=3600, ge=0)  # first tick: events this recent
    interval_s: Int = Field(default=30, ge=1)  # the sensor's minimum_interval_seconds
    webhook: WebhookAlertConfig | None = None
    slack: SlackAlertConfig | None = None

    @field_validator("ui_base_url")
    @classmethod
    def _ui_url(cls, url: str) -> str:
        return _http_url(url, "the Dagster UI's URL", "http://127.0.0.1:3000").rstrip("/")


class ObservabilityConfig(_Model):
    coverage_ratio_threshold: Float = Field(default=0.98, ge=0, le=1)
    backfill_completion_ratio_min: Float = Field(default=0.95, ge=0, le=1)
    storage_wait_warn_ms: Int = Field(default=300, ge=0)
    backfill_wait_warn_ms: Int = Field(default=5000, ge=0)
    # as_of alert: how many bars past the moment a stable partition could have entered the
    # snapshot before the node counts as stalled (WARN beyond it, ERROR beyond twice it).
    as_of_stall_bars: Int = Field(default=60, ge=1)
    # exchange_gaps check: a window the exchange confirmed empty (maintenance, halt) of at
    # least this many seconds is a WARN (shorter ones are quiet minutes of thin markets).
    exchange_gap_warn_s: Int = Field(default=600, ge=1)
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()


class PartitionsConfig(_Model):
    """History start per timeframe class: intraday (≤ 1h, daily partitions), daily+ (monthly)."""

    intraday_start: str = "2017-01-01"
    daily_start: str = "2017-01-01"

    @field_validator("intraday_start", "daily_start", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> str:
        # YAML reads an unquoted 2017-01-01 as a date: accept it as written.
        if isinstance(value, date) and not isinstance(value, datetime):
            value = value.isoformat()
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(f"{value!r} must be an ISO date YYYY-MM-DD")
        try:
            date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a calendar date: {exc}") from None
        return value


class WsConfig(_Model):
    """`seamless.live.ws`: the blueprint's WebSocket live feed (`ccxt.live.pro`,
    `resources/live_feed.py`): a reader with live nodes keeps their closed bars current
    from ccxt.pro `watch_ohlcv`, reconnecting on `reconnect_backoff_ms`."""

    enabled: bool = False
    reconnect_backoff_ms: tuple[Annotated[Int, Field(ge=0)], ...] = Field(
        default=(500, 1000, 2000, 5000), min_length=1
    )
    dedupe_by: Literal["ts"] = "ts"
    emit_building_candle: bool = False

    @field_validator("emit_building_candle")
    @classmethod
    def _closed_bars_only(cls, emit: bool) -> bool:
        if emit:
            raise ValueError(
                "the hot store and every read hold closed bars only (the forming bar is "
                "never stored); set emit_building_candle: false"
            )
        return emit


class LiveConfig(_Model):
    ws: WsConfig = WsConfig()


class SeamlessSection(_Model):
    data_dir: str = Field("data", validate_default=True)
    node_id_format: Literal["ohlcv:{exchange}:{symbol}:{timeframe}"] = (
        "ohlcv:{exchange}:{symbol}:{timeframe}"
    )
    strategy: Literal["FAIL_FAST", "AUTO_BACKFILL", "PARTIAL_FILL", "SEAMLESS"] = "SEAMLESS"
    conformance: ConformanceConfig = ConformanceConfig()
    sla: SLAConfig = SLAConfig()
    backfill: BackfillConfig = BackfillConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    live: LiveConfig = LiveConfig()
    hot_store: HotStoreConfig = HotStoreConfig()
    artifact: ArtifactConfig = ArtifactConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    partitions: PartitionsConfig = PartitionsConfig()

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        path = Path(value).expanduser()
        base = (info.context or {}).get("base_dir")
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        return str(path.resolve()) if path.is_absolute() else str(path)


class SegmentCacheConfig(_Model):
    """`cache.segments`: verified Arrow IPC copies of snapshot segments under
    `{data_dir}/cache/segments` (resources/read_segment_cache.py), at most `max_bytes`
    (least recently opened evicted first). `map_snapshot`: a snapshot's first read in a
    process maps all of its cached segments, not only the window's."""

    enable: bool = True
    max_bytes: Int = Field(default=4 * 2**30, ge=0)
    map_snapshot: bool = True


class CacheConfig(_Model):
    enable: bool = True
    segments: SegmentCacheConfig = Field(default_factory=SegmentCacheConfig)
    ttl_ms: Int = Field(default=60_000, ge=0)
    max_shards: Int = Field(default=512, ge=1)
    key_template: str = (
        "{node_id}:{start}:{end}:{interval}:{conformance_version}:{world_id}:{as_of}"
    )

    @field_validator("key_template")
    @classmethod
    def _key_fields(cls, template: str) -> str:
        allowed = {"node_id", "start", "end", "interval", "conformance_version", "world_id"}
        names = _check_template(template, allowed | {"as_of"})
        missing = sorted({"node_id", "start", "end", "world_id", "as_of"} - set(names))
        if missing:
            raise ValueError(
                f"{template!r} lacks {missing}: without them entries of different series, "
                "ranges, worlds or snapshots would share a key"
            )
        return template


_SNAPSHOT_DOMAINS = ("backtest", "research", "dryrun")
DomainName = Literal["backtest", "research", "dryrun", "live"]


class DomainSLAConfig(_Model):
    """`domains.<domain>.sla`: the `seamless.sla` keys, per execution domain. A key given
    here overrides the domain's default; `null` for a budget means unbounded."""

    max_wait_storage_ms: Int | None = Field(default=None, ge=0)
    max_wait_backfill_ms: Int | None = Field(default=None, ge=0)
    max_wait_live_ms: Int | None = Field(default=None, ge=0)
    total_deadline_ms: Int | None = Field(default=None, ge=0)
    on_violation: Literal["FAIL_FAST", "PARTIAL_FILL"] | None = None


#: Backtest and research are judged by correctness, not latency: no per-phase budget, so a
#: slow disk never turns into an empty or partial frame, and a generous total deadline that
#: fails loudly (FAIL_FAST) rather than returning part of the data. Live and dryrun keep
#: the latency budgets of `seamless.sla`.
DOMAIN_SLA_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {
        "max_wait_storage_ms": None,
        "max_wait_backfill_ms": None,
        "max_wait_live_ms": None,
        "total_deadline_ms": 300_000,
        "on_violation": "FAIL_FAST",
    }
    for name in ("backtest", "research")
}


@dataclass(frozen=True)
class EffectiveSLA:
    """The SLA one domain reads under (budgets in ms; None = unbounded)."""

    max_wait_storage_ms: int | None
    max_wait_backfill_ms: int | None
    max_wait_live_ms: int | None
    total_deadline_ms: int | None
    on_violation: Literal["FAIL_FAST", "PARTIAL_FILL"]


class DomainConfig(_Model):
    require_as_of: bool = False
    source: Literal["artifact_only", "artifact_prefers", "live_blend"] | None = None
    max_lag_sec: Int | None = Field(default=None, ge=0)
    allow_partial: bool = False
    monotonic_as_of: bool = False
    # live only: the nodes served live (node ids). The live-edge sensor keeps them current
    # and the `live_staleness` check judges them; other nodes have neither.
    nodes: tuple[str, ...] = ()
    sla: DomainSLAConfig | None = None


ARCHIVE_EXCHANGES = frozenset({"binance", "binanceusdm"})  # the ids data.binance.vision serves


class ArchivesConfig(_Model):
    """Bulk kline history from Binance's public archives (data.binance.vision), before REST."""

    enabled: bool = False
    base_url: str = "https://data.binance.vision"
    # Archive downloads spend no REST budget (another host) but are bounded on their own.
    max_concurrent_downloads: Int = Field(default=4, ge=1, le=64)

    @field_validator("base_url")
    @classmethod
    def _plain_url(cls, url: str) -> str:
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"archives.base_url {url!r} is not an http(s) URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("archives.base_url must not carry credentials (user:password@)")
        return url.rstrip("/")


class ExchangeConfig(_Model):
    sandbox: bool = False
    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ("1m",)
    # ccxt's own market types to load (binance: spot, linear, inverse, option); None: the
    # kinds the catalog's symbols need (`SeamlessConfig.market_kinds`), in ccxt's names.
    market_types: tuple[str, ...] | None = None
    rate_limit_rps: Float | None = Field(default=None, gt=0)
    rate_limit: dict[str, Any] = Field(default_factory=dict)
    account: str | None = None
    max_candles_per_call: Int | None = Field(default=None, ge=1)
    # Slots of the exchange's Dagster pool (`exchange_<id>`): how many steps may talk to it
    # at once across every run. Applied by `seamless pools` and `seamless_pools_sensor`.
    pool_limit: Int = Field(default=1, ge=1)
    archives: ArchivesConfig = ArchivesConfig()
    # Bars of a window the candles stay missing for, rebuilt from the exchange's trades
    # (`fetch_trades`) when it has any; labelled `trades` in coverage and manifests.
    trades_repair: bool = True
    ccxt_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ccxt_config")
    @classmethod
    def _keeps_our_throttle(cls, ccxt_config: dict[str, Any]) -> dict[str, Any]:
        if ccxt_config.get("enableRateLimit", True) is not True:
            raise ValueError(
                "enableRateLimit must stay true: the shared rate budget hooks into ccxt's "
                "throttle; tune seamless.rate_limit or rate_limit_rps instead"
            )
        with_credentials = _urls_with_credentials(ccxt_config)
        if with_credentials:
            raise ValueError(
                f"ccxt_config.{with_credentials[0]} is a URL with credentials "
                "(user:password@): ccxt puts request URLs into its error messages, which "
                "are logged and stored with the run; send them as a header instead "
                '(ccxt_config.headers.Authorization, e.g. "Basic ${MY_EXCHANGE_AUTH}")'
            )
        return ccxt_config


def _urls_with_credentials(value: Any, key: str = "") -> list[str]:
    """The dotted keys under `value` whose string is a URL with a user or password."""
    if isinstance(value, dict):
        return [
            found
            for k, v in value.items()
            for found in _urls_with_credentials(v, f"{key}.{k}" if key else str(k))
        ]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _urls_with_credentials(v, f"{key}[{i}]")]
    if isinstance(value, str) and "://" in value and "@" in value:
        try:
            parts = urlparse(value)
        except ValueError:
            return []
        if parts.username is not None or parts.password is not None:
            return [key]
    return []


class EnvironmentConfig(_Model):
    coordinator_url: str = ""
    rate_limiter_redis: str = ""


class DagsterConfig(_Model):
    """`dagster:`: how a run executes its steps.

    `in_process` (default) runs every step inside the already started run worker, so a
    step claims its exchange pool slot only when it is about to run. `multiprocess` starts
    a process per step (up to `max_concurrent` at once, default: the CPU count) after the
    step claimed its slot, so the slot is held while that process imports and loads the
    definitions; choose it for CPU-bound work that is not exchange-bound.
    """

    executor: Literal["in_process", "multiprocess"] = "in_process"
    max_concurrent: Int | None = Field(default=None, ge=1)
    # The code location runs of `seamless backfill` belong to: the `location_name` of the
    # workspace the webserver loads (`seamless` in workspace.yaml and deploy/workspace.yaml).
    code_location: str = Field(default="seamless", min_length=1)

    @model_validator(mode="after")
    def _max_concurrent_needs_processes(self) -> DagsterConfig:
        if self.max_concurrent is not None and self.executor != "multiprocess":
            raise ValueError(
                f"max_concurrent={self.max_concurrent} only applies to the multiprocess "
                "executor (in_process runs one step at a time); remove it or set "
                "executor: multiprocess"
            )
        return self


class SeamlessConfig(_Model):
    """The whole validated configuration."""

    seamless: SeamlessSection = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    cache: CacheConfig = CacheConfig()
    domains: dict[DomainName, DomainConfig] = Field(default_factory=dict)
    exchanges: dict[str, ExchangeConfig] = Field(default_factory=dict)
    series: tuple[str, ...] = ()
    connectors: dict[str, str] = Field(default_factory=dict)
    environment: EnvironmentConfig = EnvironmentConfig()
    dagster: DagsterConfig = DagsterConfig()

    _source: str | None = PrivateAttr(None)
    _base_dir: Path | None = PrivateAttr(None)
    _redis_env: str = PrivateAttr("")

    @field_validator("seamless", mode="before")
    @classmethod
    def _section_always_validated(cls, value: Any) -> Any:
        # Validate even an absent section, so the default data_dir is resolved too.
        return {} if value is None else value

    @field_validator("exchanges", "domains", mode="before")
    @classmethod
    def _empty_entries(cls, value: Any, info: ValidationInfo) -> Any:
        # `binance:` with nothing under it means "all defaults"; domains that read
        # snapshots (backtest, research, dryrun) need an as_of unless told otherwise.
        if not isinstance(value, dict):
            return value
        entries = {k: {} if v is None else v for k, v in value.items()}
        if info.field_name == "domains":
            entries = {
                name: {"require_as_of": True, **entry}
                if name in _SNAPSHOT_DOMAINS and isinstance(entry, dict)
                else entry
                for name, entry in entries.items()
            }
        return entries

    @property
    def source(self) -> str | None:
        """The file this configuration was loaded from, if any."""
        return self._source

    def sla_for(self, domain: str) -> EffectiveSLA:
        """The SLA of an execution domain: `seamless.sla`, overlaid with the domain's
        defaults (`DOMAIN_SLA_DEFAULTS`), overlaid with the keys `domains.<domain>.sla`
        sets (an explicit `null` budget is unbounded)."""
        values: dict[str, Any] = self.seamless.sla.model_dump()
        values.update(DOMAIN_SLA_DEFAULTS.get(domain, {}))
        configured = self.domains.get(domain)  # type: ignore[call-overload]
        if configured is not None and configured.sla is not None:
            values.update({k: getattr(configured.sla, k) for k in configured.sla.model_fields_set})
        if values["on_violation"] is None:
            values["on_violation"] = self.seamless.sla.on_violation
        return EffectiveSLA(**values)

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
            if not EventNodeId.is_event_id(node_id):
                node = NodeId.parse(node_id)
                found[str(node)] = node
        return tuple(found.values())

    @cached_property
    def event_nodes(self) -> tuple[EventNodeId, ...]:
        """The event series of the catalog (`funding:` and `trades:` entries of `series`)."""
        found: dict[str, EventNodeId] = {}
        for entry in self.series:
            if EventNodeId.is_event_id(entry):
                node = EventNodeId.parse(entry)
                found[str(node)] = node
        return tuple(found.values())

    @property
    def data_dir(self) -> Path:
        return Path(self.seamless.data_dir)

    @property
    def hot_store_path(self) -> Path:
        path = Path(self.seamless.hot_store.path.format(data_dir=self.seamless.data_dir))
        path = path.expanduser()
        if not path.is_absolute() and self._base_dir is not None:
            path = self._base_dir / path
        return path

    @property
    def artifact_uri(self) -> str:
        return self.seamless.artifact.object_store_uri.format(data_dir=self.seamless.data_dir)

    def _redis_setting(self) -> tuple[str, str]:
        """`(where it came from, value)` of the Redis DSN, first non-empty source wins."""
        candidates = (
            ("seamless.rate_limit.redis_dsn", self.seamless.rate_limit.redis_dsn),
            ("connectors.ccxt_rate_limiter_redis", self.connectors.get("ccxt_rate_limiter_redis")),
            ("environment.rate_limiter_redis", self.environment.rate_limiter_redis),
            (REDIS_ENV, self._redis_env),
        )
        for key, value in candidates:
            if value:
                return key, value
        return "seamless.rate_limit.redis_dsn", ""

    @property
    def redis_dsn(self) -> str:
        """The shared rate limiter's Redis DSN, or "" for the in-process limiter."""
        return self._redis_setting()[1]

    def exchange(self, exchange_id: str) -> ExchangeConfig:
        try:
            return self.exchanges[exchange_id]
        except KeyError:
            raise ConfigError(
                f"exchanges.{exchange_id}",
                f"exchange {exchange_id!r} is not configured; add it under `exchanges:`",
                self.source,
            ) from None

    def market_kinds(self, exchange_id: str) -> tuple[str, ...]:
        """The kinds of market (`nodes.MARKET_KINDS`) the catalog's nodes on this exchange
        trade: spot for `BTC/USDT`, linear for `BTC/USDT:USDT`, inverse for `BTC/USD:BTC`."""
        nodes: tuple[AnyNode, ...] = (*self.nodes, *self.event_nodes)
        kinds = {market_kind(n.symbol) for n in nodes if n.exchange == exchange_id}
        return tuple(k for k in MARKET_KINDS if k in kinds) or ("spot",)

    def rate_limit_for(self, exchange_id: str) -> RateLimitConfig:
        """The global rate-limit section with the exchange's overrides applied.

        `rate_limit_rps: N` means N of the exchange's units per second; it cannot be combined
        with `rate_limit.tokens_per_interval` / `rate_limit.interval_ms` (checked at load).
        `workers: null` becomes the exchange's pool limit (1 when it has none).
        """
        exchange = self.exchange(exchange_id)
        override = dict(exchange.rate_limit)
        if exchange.rate_limit_rps is not None:
            override.update(tokens_per_interval=exchange.rate_limit_rps, interval_ms=1000)
        base = self.seamless.rate_limit
        if override.get("workers", base.workers) is None:
            override["workers"] = exchange.pool_limit
        return base.merged(override)

    @cached_property
    def live_nodes(self) -> tuple[NodeId, ...]:
        """The nodes served live (`domains.live.nodes`), validated against the catalog."""
        live = self.domains.get("live")
        return tuple(NodeId.parse(n) for n in live.nodes) if live else ()

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

    def event_node(self, node_id: str) -> EventNodeId:
        """The configured event node with this id, or a `ConfigError` listing them."""
        wanted = str(EventNodeId.parse(node_id))
        for node in self.event_nodes:
            if str(node) == wanted:
                return node
        known = ", ".join(str(n) for n in self.event_nodes) or "none"
        raise ConfigError(
            "series",
            f"event node {wanted!r} is not in the catalog (known: {known}); add it to `series`",
            self.source,
        )

    def catalog_node(self, node_id: str) -> AnyNode:
        """The configured node of any kind (bars or events) with this id."""
        return self.event_node(node_id) if EventNodeId.is_event_id(node_id) else self.node(node_id)


# -- interpolation -------------------------------------------------------------------------


class _Interpolator:
    """Resolves `${ENV}`, `${ENV:-default}` and `${dotted.key}` in every string value."""

    def __init__(self, root: dict[str, Any], source: str | None) -> None:
        self.root, self.source = root, source
        self.resolving: list[str] = []

    def walk(self, value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self.render(value, key)
        return value

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(key, reason, self.source)

    def render(self, text: str, key: str) -> str:
        out, pos = [], 0
        while (start := text.find("${", pos)) >= 0:
            end = text.find("}", start + 2)
            expr = text[start + 2 : end]
            if end < 0 or "${" in expr:
                raise self.error(
                    key,
                    f"unclosed template in {text!r}: the '${{' at position {start} has no "
                    "matching '}' (templates cannot be nested)",
                )
            out += [text[pos:start], self.resolve(expr, key)]
            pos = end + 1
        out.append(text[pos:])
        return "".join(out)

    def resolve(self, expr: str, key: str) -> str:
        name, has_default, default = expr.partition(":-")
        if _DOTTED.fullmatch(name):
            value = self.reference(name, key)
        elif _ENV_NAME.fullmatch(name):
            value = os.environ.get(name, "")
        else:
            raise self.error(
                key,
                f"bad template ${{{expr}}}: use ${{ENV_VAR}}, ${{ENV_VAR:-default}} or "
                "${section.key} (names are letters, digits and '_', not starting with a digit)",
            )
        return default if has_default and not value else value

    def reference(self, name: str, key: str) -> str:
        target: Any = self.root
        for part in name.split("."):
            if not isinstance(target, dict) or part not in target:
                return ""  # like an unset variable: the default applies
            target = target[part]
        if isinstance(target, dict | list):
            raise self.error(key, f"${{{name}}} refers to a section, not to a single value")
        if name in self.resolving:
            cycle = " -> ".join([*self.resolving, name])
            raise self.error(key, f"${{{name}}} refers back to itself ({cycle})")
        if target is None:
            return ""
        if isinstance(target, bool):
            return str(target).lower()
        if not isinstance(target, str):
            return str(target)
        self.resolving.append(name)
        try:
            return self.render(target, name) if "${" in target else target
        finally:
            self.resolving.pop()


# -- errors --------------------------------------------------------------------------------


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "[key]":
            out += f".{part}" if out else str(part)
    return out


def _unwrap(annotation: Any) -> Any:
    """The model type inside `X | None` / `Annotated[X, ...]`, else the annotation."""
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(options[0]) if len(options) == 1 else annotation
    return annotation


def _keys_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys the model accepts at `loc` (for a "did you mean" on unknown keys)."""
    current = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) in (dict, tuple):
            args = get_args(current)
            current = args[-1] if get_origin(current) is dict else args[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_error(
    exc: ValidationError, source: str | None, prefix: str = "", model: Any = SeamlessConfig
) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    loc = _dotted(first["loc"])
    key = f"{prefix}.{loc}" if prefix and loc else prefix or loc or "<root>"
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        name = str(first["loc"][-1])
        known = _keys_at(model, tuple(first["loc"][:-1]))
        close = difflib.get_close_matches(name, known, n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        reason = f"unknown key ({hint}allowed here: {', '.join(known) or 'none'})"
    elif first["type"] != "value_error":
        reason = f"{reason} (got {_short(first.get('input'))})"
    if len(errors) > 1:
        others = sorted({_dotted(e["loc"]) or "<root>" for e in errors[1:]} - {loc})
        if others:
            reason += f"; also invalid: {', '.join(others)}"
    return ConfigError(key, reason, source)


# -- cross-checks after the schema ---------------------------------------------------------


def _close_matches(word: str, candidates: list[str]) -> list[str]:
    lowered = word.lower()
    found = difflib.get_close_matches(lowered, candidates, n=3, cutoff=0.7)
    found += [c for c in candidates if c.startswith(lowered[:4]) and c not in found]
    return found[:5]


def _validate_exchanges(config: SeamlessConfig) -> None:
    from .exchange_catalog import exchange_catalog  # ccxt's ids and timeframes, cached

    catalog = exchange_catalog()
    source = config.source
    supported: dict[str, dict[str, Any]] = {}
    for exchange_id, exchange in config.exchanges.items():
        key = f"exchanges.{exchange_id}"
        if exchange_id not in catalog.timeframes:
            close = _close_matches(exchange_id, catalog.exchanges)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                key,
                f"ccxt has no exchange {exchange_id!r}{hint} (ids are lower-case, see "
                "ccxt.exchanges)",
                source,
            )
        timeframes = catalog.timeframes[exchange_id]
        supported[exchange_id] = timeframes
        if not timeframes and (exchange.timeframes or exchange.symbols):
            raise ConfigError(key, f"{exchange_id} offers no OHLCV candles through ccxt", source)
        for i, timeframe in enumerate(exchange.timeframes):
            _check_timeframe(f"{key}.timeframes[{i}]", exchange_id, timeframe, timeframes, source)
        for i, symbol in enumerate(exchange.symbols):
            _check_symbol(f"{key}.symbols[{i}]", symbol, source)
        if exchange.archives.enabled and exchange_id not in ARCHIVE_EXCHANGES:
            raise ConfigError(
                f"{key}.archives.enabled",
                f"public kline archives are read for {sorted(ARCHIVE_EXCHANGES)} only "
                f"(data.binance.vision); {exchange_id} has none: remove archives.enabled",
                source,
            )
        rate_keys = {"tokens_per_interval", "interval_ms"} & exchange.rate_limit.keys()
        if exchange.rate_limit_rps is not None and rate_keys:
            raise ConfigError(
                f"{key}.rate_limit_rps",
                f"conflicts with {key}.rate_limit.{sorted(rate_keys)[0]}; set either "
                "rate_limit_rps or rate_limit.tokens_per_interval + interval_ms",
                source,
            )
        try:
            config.rate_limit_for(exchange_id)
        except ValidationError as exc:
            raise _config_error(exc, source, f"{key}.rate_limit", RateLimitConfig) from None
    for i, entry in enumerate(config.series):
        key = f"series[{i}]"
        if EventNodeId.is_event_id(entry):
            _check_event_node(config, key, entry)
            continue
        try:
            node = NodeId.parse(entry)
        except SeamlessError as exc:
            raise ConfigError(key, str(exc), source) from None
        if node.exchange not in config.exchanges:
            raise ConfigError(
                key,
                f"{entry!r} uses exchange {node.exchange!r}, which has no entry under "
                f"`exchanges:`; add `exchanges: {{{node.exchange}: {{}}}}`",
                source,
            )
        _check_timeframe(key, node.exchange, node.timeframe.code, supported[node.exchange], source)
        _check_symbol(key, node.symbol, source)


def _check_event_node(config: SeamlessConfig, key: str, entry: str) -> None:
    try:
        node = EventNodeId.parse(entry)
    except SeamlessError as exc:
        raise ConfigError(key, str(exc), config.source) from None
    if node.exchange not in config.exchanges:
        raise ConfigError(
            key,
            f"{entry!r} uses exchange {node.exchange!r}, which has no entry under "
            f"`exchanges:`; add `exchanges: {{{node.exchange}: {{}}}}`",
            config.source,
        )
    _check_symbol(key, node.symbol, config.source)


def _check_timeframe(
    key: str, exchange_id: str, timeframe: str, supported: dict[str, Any], source: str | None
) -> None:
    try:
        Timeframe.parse(timeframe)
    except SeamlessError as exc:
        raise ConfigError(key, str(exc), source) from None
    if timeframe not in supported:
        offered = sorted(supported, key=lambda tf: _seconds_or_max(tf))
        raise ConfigError(
            key, f"{exchange_id} has no timeframe {timeframe!r}; it offers {offered}", source
        )


def _seconds_or_max(timeframe: str) -> int:
    try:
        return Timeframe.parse(timeframe).seconds
    except SeamlessError:
        return 1 << 62


def _check_symbol(key: str, symbol: str, source: str | None) -> None:
    try:
        check_symbol(symbol)
    except SeamlessError as exc:
        raise ConfigError(key, str(exc), source) from None
    if "/" not in symbol:
        raise ConfigError(
            key,
            f"{symbol!r} is not a ccxt unified symbol like 'BTC/USDT' or 'BTC/USDT:USDT'",
            source,
        )
    try:
        market_kind(symbol)
    except SeamlessError as exc:
        raise ConfigError(key, str(exc), source) from None


def _validate_domains(config: SeamlessConfig) -> None:
    """Backtest/research read snapshots only; dryrun artifacts; only live blends and lags."""
    allowed = {
        "backtest": {"artifact_only"},
        "research": {"artifact_only"},
        "dryrun": {"artifact_only", "artifact_prefers"},
    }
    for name, domain in config.domains.items():
        key = f"domains.{name}"
        if domain.nodes and name != "live":
            raise ConfigError(
                f"{key}.nodes",
                f"only the live domain lists nodes (those served live); {name} reads any node",
                config.source,
            )
        if name not in allowed:
            _validate_live_nodes(config, domain.nodes, f"{key}.nodes")
            continue
        if not domain.require_as_of:
            raise ConfigError(
                f"{key}.require_as_of",
                f"{name} reads immutable snapshots and always needs an as_of; it cannot be false",
                config.source,
            )
        if domain.source is not None and domain.source not in allowed[name]:
            raise ConfigError(
                f"{key}.source",
                f"{name} may read {sorted(allowed[name])}, not {domain.source!r}",
                config.source,
            )
        if domain.max_lag_sec is not None:
            raise ConfigError(
                f"{key}.max_lag_sec",
                f"only the live domain has a max lag; {name} reads fixed snapshots",
                config.source,
            )


def _validate_live_nodes(config: SeamlessConfig, nodes: tuple[str, ...], key: str) -> None:
    catalog = {str(n) for n in config.nodes}
    for i, entry in enumerate(nodes):
        try:
            node = str(NodeId.parse(entry))
        except SeamlessError as exc:
            raise ConfigError(f"{key}[{i}]", str(exc), config.source) from None
        if node not in catalog:
            close = _close_matches(node, sorted(catalog))
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"{key}[{i}]", f"{entry!r} is not a node of the catalog{hint}", config.source
            )


def _validate_locations(config: SeamlessConfig) -> None:
    source = config.source
    uri = urlparse(config.artifact_uri)
    if uri.scheme == "file" and (uri.netloc not in ("", "localhost") or not uri.path):
        raise ConfigError(
            "seamless.artifact.object_store_uri",
            f"{config.seamless.artifact.object_store_uri!r} gives {config.artifact_uri!r}, "
            "which is not an absolute file URI; use file:///absolute/path or "
            "file://{data_dir}/artifacts",
            source,
        )
    key, dsn = config._redis_setting()
    if dsn and urlparse(dsn).scheme not in _REDIS_SCHEMES:
        raise ConfigError(
            key,
            f"{dsn!r} is not a Redis URL; use redis://host:6379/0, rediss://… or unix://…",
            source,
        )


# -- loading -------------------------------------------------------------------------------


def load_config_dict(
    raw: dict[str, Any], source: str | None = None, *, base_dir: str | Path | None = None
) -> SeamlessConfig:
    """Validate an already-parsed mapping (environment overrides applied here).

    Relative paths in it resolve against `base_dir` (default: the working directory).
    """
    if not isinstance(raw, dict):
        raise ConfigError("<root>", "the config must be a mapping at the top level", source)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    resolved = _Interpolator(raw, source).walk(raw, "")
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        section = resolved.get("seamless")
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError("seamless", f"must be a mapping (got {_short(section)})", source)
        resolved["seamless"] = {**section, "data_dir": str(Path(data_dir).expanduser().absolute())}
    try:
        config = SeamlessConfig.model_validate(resolved, context={"base_dir": base})
    except ValidationError as exc:
        raise _config_error(exc, source) from None
    config._source = source
    config._base_dir = base
    config._redis_env = os.environ.get(REDIS_ENV, "")
    _validate_exchanges(config)
    _validate_domains(config)
    _validate_locations(config)
    config.nodes  # noqa: B018 - every node id is valid now; build them once, at load
    return config


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)


def load_config(path: str | Path | None = None) -> SeamlessConfig:
    """Load, interpolate and validate `seamless.yaml`; relative paths resolve next to it."""
    config_path = Path(path) if path is not None else default_config_path()
    if not config_path.is_file():
        hint = (
            f"{CONFIG_ENV} is set to it"
            if path is None and os.environ.get(CONFIG_ENV)
            else (f"pass a path, set {CONFIG_ENV}, or run from the project root")
        )
        raise ConfigError("<file>", f"config file {str(config_path)!r} not found; {hint}")
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(
            "<file>", f"not valid YAML: {_yaml_problem(exc)}", str(config_path)
        ) from None
    return load_config_dict(
        {} if raw is None else raw, source=str(config_path), base_dir=config_path.parent.resolve()
    )


def _yaml_problem(exc: Exception) -> str:
    """One line: what is wrong and where (PyYAML's own message spans several lines)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"
