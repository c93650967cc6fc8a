"""Config validation: every invalid value fails at load, naming the dotted key and why."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from seamless_assets.config import (
    CONFIG_ENV,
    DATA_DIR_ENV,
    REDIS_ENV,
    SeamlessConfig,
    load_config,
    load_config_dict,
)
from seamless_assets.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "exchanges": {"binance": {"symbols": ["BTC/USDT", "ETH/USDT"], "timeframes": ["1m", "1h"]}}
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (CONFIG_ENV, DATA_DIR_ENV, REDIS_ENV, "SEAMLESS_TEST_VALUE", "SEAMLESS_TEST_URL"):
        monkeypatch.delenv(name, raising=False)


def with_(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """BASE (or `base`) deep-merged with `overrides`."""
    merged = copy.deepcopy(BASE if base is None else base)

    def merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(merged, overrides)
    return merged


def load(raw: dict[str, Any], **kwargs: Any) -> SeamlessConfig:
    return load_config_dict(raw, "test.yaml", **kwargs)


def fails(raw: Any, key: str, *reason: str) -> ConfigError:
    """Loading `raw` raises a ConfigError for `key` whose reason contains every `reason`."""
    with pytest.raises(ConfigError) as info:
        load(raw)
    error = info.value
    assert error.key == key, str(error)
    assert f"`{key}`" in str(error) and "test.yaml" in str(error)
    for part in reason:
        assert part in error.reason, str(error)
    return error


def write(path: Path, raw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


# -- the shipped file ----------------------------------------------------------------------


def test_shipped_seamless_yaml_loads() -> None:
    config = load_config(ROOT / "seamless.yaml")
    assert config.source == str(ROOT / "seamless.yaml")
    assert [str(n) for n in config.nodes] == [
        "ohlcv:binance:BTC/USDT:1m",
        "ohlcv:binance:BTC/USDT:1h",
        "ohlcv:binance:ETH/USDT:1m",
        "ohlcv:binance:ETH/USDT:1h",
    ]
    assert config.data_dir == ROOT / "data"
    assert config.hot_store_path == ROOT / "data" / "hot.duckdb"
    assert config.artifact_uri == f"file://{ROOT}/data/artifacts"
    assert config.redis_dsn == ""
    assert config.domains["backtest"].require_as_of
    assert config.domains["live"].max_lag_sec == 120
    ccxt_config = config.exchange("binance").ccxt_config
    assert ccxt_config == {"urls": {"api": {"public": "http://127.0.0.1:8765/api/v3"}}}


def test_an_empty_file_means_every_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "seamless.yaml", ""))
    assert config.nodes == () and config.exchanges == {}
    assert config.seamless.rate_limit.key_template == "ccxt:{exchange}:{account?}"
    assert config.data_dir == tmp_path / "data"


def test_config_is_immutable() -> None:
    config = load(BASE)
    with pytest.raises(Exception, match="frozen"):
        config.seamless.rate_limit.burst_tokens = 1  # type: ignore[misc]


# -- exchanges, symbols, timeframes --------------------------------------------------------


@pytest.mark.parametrize(("exchange", "hint"), [("binanse", "'binance'"), ("Binance", "'binance'")])
def test_unknown_exchange_names_the_key_and_hints(exchange: str, hint: str) -> None:
    fails(
        {"exchanges": {exchange: {"symbols": ["BTC/USDT"]}}},
        f"exchanges.{exchange}",
        f"ccxt has no exchange {exchange!r}",
        f"did you mean {hint}",
    )


def test_unknown_exchange_without_near_match_still_says_where_to_look() -> None:
    fails({"exchanges": {"zzzzqqq": {}}}, "exchanges.zzzzqqq", "ccxt.exchanges")


def test_timeframe_the_exchange_lacks() -> None:
    fails(
        with_({"exchanges": {"binance": {"timeframes": ["1m", "2m"]}}}),
        "exchanges.binance.timeframes[1]",
        "binance has no timeframe '2m'",
        "'3m'",
    )
    fails(
        {"exchanges": {"bybit": {"timeframes": ["8h"]}}},
        "exchanges.bybit.timeframes[0]",
        "bybit has no timeframe '8h'",
    )


@pytest.mark.parametrize("timeframe", ["1M", "1y"])
def test_calendar_timeframes_fail_at_load(timeframe: str) -> None:
    fails(
        with_({"exchanges": {"binance": {"timeframes": [timeframe]}}}),
        "exchanges.binance.timeframes[0]",
        "no fixed length",
    )


def test_garbage_timeframe_fails_at_load() -> None:
    fails(
        with_({"exchanges": {"binance": {"timeframes": ["1 minute"]}}}),
        "exchanges.binance.timeframes[0]",
        "not a ccxt timeframe",
    )


@pytest.mark.parametrize("symbol", ["BTCUSDT", " BTC/USDT", "BTC/USDT\n", ""])
def test_bad_symbols_fail_at_load(symbol: str) -> None:
    fails(
        with_({"exchanges": {"binance": {"symbols": ["ETH/USDT", symbol]}}}),
        "exchanges.binance.symbols[1]",
        "'BTC/USDT'",
    )


def test_an_exchange_without_settings_takes_the_defaults() -> None:
    config = load_config_dict(yaml.safe_load("exchanges:\n  binance:\n"))
    assert config.exchange("binance").timeframes == ("1m",)
    assert config.nodes == ()


def test_unconfigured_exchange_lookup_is_a_config_error() -> None:
    config = load(BASE)
    with pytest.raises(ConfigError, match="not configured") as info:
        config.exchange("kraken")
    assert info.value.key == "exchanges.kraken"
    with pytest.raises(ConfigError):
        config.rate_limit_for("kraken")


def test_node_lookup() -> None:
    config = load(BASE)
    assert str(config.node("ohlcv:binance:BTC/USDT:1h")) == "ohlcv:binance:BTC/USDT:1h"
    with pytest.raises(ConfigError, match="not in the catalog") as info:
        config.node("ohlcv:binance:BTC/USDT:5m")
    assert "ohlcv:binance:ETH/USDT:1m" in str(info.value)


# -- series --------------------------------------------------------------------------------


def test_series_add_nodes_including_symbols_with_colons() -> None:
    config = load(
        with_(
            {
                "exchanges": {"bybit": {"symbols": []}},
                "series": ["ohlcv:bybit:BTC/USDT:USDT:1h", "ohlcv:binance:BTC/USDT:1m"],
            }
        )
    )
    ids = [str(n) for n in config.nodes]
    assert ids.count("ohlcv:binance:BTC/USDT:1m") == 1  # duplicates collapse
    assert "ohlcv:bybit:BTC/USDT:USDT:1h" in ids
    assert config.node("ohlcv:bybit:BTC/USDT:USDT:1h").symbol == "BTC/USDT:USDT"


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("binance:BTC/USDT:1m", "e.g. 'ohlcv:binance:BTC/USDT:1m'"),
        ("ohlcv:binance:BTC/USDT", "e.g. 'ohlcv:binance:BTC/USDT:1m'"),
        ("ohlcv:binance:BTC/USDT:1M", "no fixed length"),
        ("ohlcv:binance:BTC/USDT:2m", "binance has no timeframe '2m'"),
        ("ohlcv:binance:BTCUSDT:1m", "'BTC/USDT'"),
        ("ohlcv:kraken:BTC/USD:1h", "no entry under `exchanges:`"),
    ],
)
def test_bad_series_entries_name_their_index(entry: str, reason: str) -> None:
    fails(with_({"series": ["ohlcv:binance:ETH/USDT:1m", entry]}), "series[1]", reason)


def test_series_must_be_a_list() -> None:
    fails(with_({"series": "ohlcv:binance:BTC/USDT:1m"}), "series", "valid tuple")


# -- rate limits ---------------------------------------------------------------------------


def test_min_interval_ms_and_s_that_disagree() -> None:
    fails(
        with_({"seamless": {"rate_limit": {"min_interval_ms": 25, "min_interval_s": 0.5}}}),
        "seamless.rate_limit",
        "min_interval_ms=25.0 and min_interval_s=0.5 disagree",
    )


@pytest.mark.parametrize(
    ("settings", "seconds"),
    [
        ({"min_interval_ms": 25, "min_interval_s": 0.025}, 0.025),
        ({"min_interval_ms": 40}, 0.04),
        ({"min_interval_s": 0.5}, 0.5),
        ({}, 0.002),
    ],
)
def test_min_interval_that_agrees_is_fine(settings: dict[str, Any], seconds: float) -> None:
    config = load(with_({"seamless": {"rate_limit": settings}}))
    assert config.seamless.rate_limit.min_interval_seconds == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("seamless.rate_limit.tokens_per_interval", -1),
        ("seamless.rate_limit.tokens_per_interval", 0),
        ("seamless.rate_limit.interval_ms", 0),
        ("seamless.rate_limit.burst_tokens", -1),
        ("seamless.rate_limit.local_semaphore", 0),
        ("seamless.rate_limit.min_interval_ms", -1),
        ("seamless.rate_limit.min_interval_s", -0.1),
        ("seamless.rate_limit.penalty_backoff_ms", -5),
        ("seamless.sla.total_deadline_ms", -1),
        ("seamless.sla.max_wait_storage_ms", -1),
        ("seamless.backfill.max_concurrent_requests", 0),
        ("seamless.backfill.window_bars", 0),
        ("seamless.backfill.retry_backoff_ms", -1),
        ("seamless.backfill.jitter_ratio", 1.5),
        ("seamless.artifact.stabilization_bars", -1),
        ("seamless.observability.coverage_ratio_threshold", 1.1),
        ("cache.ttl_ms", -1),
        ("exchanges.binance.rate_limit_rps", -1),
        ("exchanges.binance.rate_limit_rps", 0),
        ("exchanges.binance.max_candles_per_call", 0),
        ("domains.live.max_lag_sec", -1),
    ],
)
def test_negative_or_zero_budgets_fail(section: str, value: float) -> None:
    override: dict[str, Any] = {}
    node = override
    *parents, leaf = section.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    fails(with_(override), section, "than", repr(value))


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_budgets_fail(value: float) -> None:
    fails(
        with_({"seamless": {"rate_limit": {"tokens_per_interval": value}}}),
        "seamless.rate_limit.tokens_per_interval",
        "finite",
    )


def test_per_exchange_overrides_apply_over_the_global_section() -> None:
    config = load(
        with_(
            {
                "exchanges": {
                    "binance": {"rate_limit": {"burst_tokens": 5, "min_interval_s": 0.1}},
                    "bybit": {"rate_limit_rps": 8},
                    "okx": {},
                }
            }
        )
    )
    binance = config.rate_limit_for("binance")
    assert binance.burst_tokens == 5
    assert binance.min_interval_seconds == pytest.approx(0.1)  # replaces the global 25 ms
    assert binance.tokens_per_interval == config.seamless.rate_limit.tokens_per_interval
    bybit = config.rate_limit_for("bybit")
    assert (bybit.tokens_per_interval, bybit.interval_ms) == (8, 1000)
    # workers: null becomes the exchange's pool limit (1 by default)
    okx = config.seamless.rate_limit.model_copy(update={"workers": 1})
    assert config.rate_limit_for("okx") == okx


def test_per_exchange_override_min_interval_against_global_ms() -> None:
    config = load(
        with_(
            {
                "seamless": {"rate_limit": {"min_interval_ms": 25}},
                "exchanges": {"binance": {"rate_limit": {"min_interval_s": 0.2}}},
            }
        )
    )
    assert config.rate_limit_for("binance").min_interval_seconds == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("override", "key", "reason"),
    [
        ({"burst_tokens": -1}, "exchanges.binance.rate_limit.burst_tokens", "greater than"),
        ({"burst_tokenz": 1}, "exchanges.binance.rate_limit.burst_tokenz", "'burst_tokens'"),
        (
            {"min_interval_ms": 10, "min_interval_s": 1},
            "exchanges.binance.rate_limit",
            "disagree",
        ),
        ({"key_template": "ccxt"}, "exchanges.binance.rate_limit.key_template", "{exchange}"),
    ],
)
def test_bad_per_exchange_overrides(override: dict[str, Any], key: str, reason: str) -> None:
    fails(with_({"exchanges": {"binance": {"rate_limit": override}}}), key, reason)


def test_rate_limit_rps_conflicts_with_an_explicit_token_rate() -> None:
    fails(
        with_(
            {
                "exchanges": {
                    "binance": {"rate_limit_rps": 5, "rate_limit": {"tokens_per_interval": 9}}
                }
            }
        ),
        "exchanges.binance.rate_limit_rps",
        "conflicts with exchanges.binance.rate_limit.tokens_per_interval",
    )


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("ccxt:{exchnage}", "unknown placeholder {exchnage}"),
        ("ccxt:{account}", "{exchange} or {exchange_id}"),
        ("ccxt:{exchange?}", "unknown placeholder {exchange?}"),
        ("ccxt:{exchange}:{account", "not a valid template"),
        ("ccxt:{exchange}}", "not a valid template"),
        ("ccxt:{exchange!r}", "unknown placeholder {exchange!r}"),
        ("ccxt:{exchange:>9}", "unknown placeholder {exchange:>9}"),
        ("ccxt:{}", "unknown placeholder {}"),
    ],
)
def test_bad_key_templates(template: str, reason: str) -> None:
    fails(
        with_({"seamless": {"rate_limit": {"key_template": template}}}),
        "seamless.rate_limit.key_template",
        reason,
    )


@pytest.mark.parametrize(
    "template",
    [
        "ccxt:{exchange}:{account?}",
        "ccxt:{exchange_id}",
        "{exchange}:{suffix?}",
        "{exchange}:{key_suffix}",
    ],
)
def test_good_key_templates(template: str) -> None:
    config = load(with_({"seamless": {"rate_limit": {"key_template": template}}}))
    assert config.seamless.rate_limit.key_template == template


# -- artifact ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("exchange={exchange}/symbol={symbol}", "exactly once"),
        ("{exchange}/{symbol}/{timeframe}/{symbol}", "exactly once"),
        ("{exchange}/{symbol}/{timeframe}/{node}", "unknown placeholder {node}"),
        ("{exchange}/{symbol}{timeframe}", "separated"),
        ("{exchange}/{symbol}_{timeframe}", "separated"),
        ("/{exchange}/{symbol}/{timeframe}", "relative path"),
        ("{exchange}/{symbol}/{timeframe}/", "relative path"),
        ("{exchange}//{symbol}/{timeframe}", "relative path"),
        ("../{exchange}/{symbol}/{timeframe}", "relative path"),
        ("{exchange}\\{symbol}/{timeframe}", "relative path"),
        ("{exchange}/{symbol/{timeframe}", "not a valid template"),
    ],
)
def test_bad_partition_templates(template: str, reason: str) -> None:
    fails(
        with_({"seamless": {"artifact": {"partition_template": template}}}),
        "seamless.artifact.partition_template",
        reason,
    )


@pytest.mark.parametrize(
    "template", ["{exchange}/{symbol}/{timeframe}", "x={exchange}/{symbol}={timeframe}"]
)
def test_good_partition_templates(template: str) -> None:
    assert load(with_({"seamless": {"artifact": {"partition_template": template}}}))


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://example.com/artifacts", "must start with file:// (local directory) or s3://"),
        ("/var/artifacts", "must start with file://"),
        ("gs://bucket", "must start with file://"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("file://relative/artifacts", "not an absolute file URI"),
        ("file://{datadir}/artifacts", "unknown placeholder {datadir}"),
    ],
)
def test_bad_object_store_uris(uri: str, reason: str) -> None:
    fails(
        with_({"seamless": {"artifact": {"object_store_uri": uri}}}),
        "seamless.artifact.object_store_uri",
        reason,
    )


@pytest.mark.parametrize("uri", ["s3://bucket", "s3://bucket/prefix", "file:///srv/artifacts"])
def test_good_object_store_uris(uri: str) -> None:
    assert load(with_({"seamless": {"artifact": {"object_store_uri": uri}}})).artifact_uri == uri


def test_blueprint_nan_policy_zero_is_refused_with_the_reason() -> None:
    fails(
        with_({"seamless": {"artifact": {"fingerprint": {"normalize_nan": "zero"}}}}),
        "seamless.artifact.fingerprint.normalize_nan",
        "'canonical'",
    )


def test_hot_store_path_placeholders() -> None:
    fails(
        with_({"seamless": {"hot_store": {"path": "{datadir}/hot.duckdb"}}}),
        "seamless.hot_store.path",
        "unknown placeholder {datadir}",
    )


# -- ${...} templates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("${SEAMLESS_TEST_URL", "unclosed template"),
        ("http://${SEAMLESS_TEST_URL:-x", "unclosed template"),
        ("${A:-${B}}", "unclosed template"),
        ("${}", "bad template ${}"),
        ("${1ABC}", "bad template ${1ABC}"),
        ("${A B}", "bad template ${A B}"),
        ("${A-default}", "bad template ${A-default}"),
        ("${A:default}", "bad template ${A:default}"),
        ("${connectors.}", "bad template ${connectors.}"),
        ("${.x}", "bad template ${.x}"),
        ("${exchanges.binance}", "refers to a section"),
    ],
)
def test_bad_interpolation(value: str, reason: str) -> None:
    fails(with_({"environment": {"coordinator_url": value}}), "environment.coordinator_url", reason)


def test_bad_interpolation_in_a_list_names_the_index() -> None:
    fails(
        with_({"exchanges": {"binance": {"symbols": ["BTC/USDT", "${oops"]}}}),
        "exchanges.binance.symbols[1]",
        "unclosed template",
    )


def test_cyclic_references_fail() -> None:
    fails(
        with_({"connectors": {"a": "${connectors.b}", "b": "${connectors.a}"}}),
        "connectors.a",
        "refers back to itself",
    )


def test_env_interpolation_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = with_(
        {
            "environment": {"coordinator_url": "http://${SEAMLESS_TEST_VALUE:-localhost}:9000"},
            "seamless": {"backfill": {"window_bars": "${SEAMLESS_TEST_BARS:-500}"}},
        }
    )
    config = load(raw)
    assert config.environment.coordinator_url == "http://localhost:9000"
    assert config.seamless.backfill.window_bars == 500
    monkeypatch.setenv("SEAMLESS_TEST_VALUE", "")  # empty counts as unset for `:-`
    assert load(raw).environment.coordinator_url == "http://localhost:9000"
    monkeypatch.setenv("SEAMLESS_TEST_VALUE", "coord.internal")
    monkeypatch.setenv("SEAMLESS_TEST_BARS", "250")
    config = load(raw)
    assert config.environment.coordinator_url == "http://coord.internal:9000"
    assert config.seamless.backfill.window_bars == 250
    monkeypatch.setenv("SEAMLESS_TEST_BARS", "lots")
    fails(raw, "seamless.backfill.window_bars", "valid integer", "'lots'")


def test_unset_env_without_default_is_empty() -> None:
    config = load(with_({"environment": {"coordinator_url": "${SEAMLESS_TEST_VALUE}"}}))
    assert config.environment.coordinator_url == ""


def test_references_to_other_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = with_(
        {
            "connectors": {"ccxt_rate_limiter_redis": "${SEAMLESS_TEST_URL:-redis://r:6379/1}"},
            "environment": {"rate_limiter_redis": "${connectors.ccxt_rate_limiter_redis}"},
        }
    )
    config = load(raw)
    assert config.environment.rate_limiter_redis == "redis://r:6379/1"
    assert config.redis_dsn == "redis://r:6379/1"
    monkeypatch.setenv("SEAMLESS_TEST_URL", "redis://other:6379/0")
    assert load(raw).environment.rate_limiter_redis == "redis://other:6379/0"


def test_reference_to_a_missing_key_is_empty_or_its_default() -> None:
    config = load(
        with_(
            {
                "environment": {
                    "rate_limiter_redis": "${connectors.ccxt_rate_limiter_redis}",
                    "coordinator_url": "${connectors.coordinator:-http://c:1}",
                }
            }
        )
    )
    assert config.environment.rate_limiter_redis == ""
    assert config.environment.coordinator_url == "http://c:1"


def test_ccxt_config_is_kept_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAMLESS_TEST_URL", "http://127.0.0.1:9999")
    ccxt_config: dict[str, Any] = {
        "urls": {"api": {"public": "${SEAMLESS_TEST_URL}/api/v3", "private": "x"}},
        "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "n": [1, 2.5]},
        "timeout": 5000,
        "enableRateLimit": True,
        "headers": {},
    }
    config = load(with_({"exchanges": {"binance": {"ccxt_config": ccxt_config}}}))
    expected = copy.deepcopy(ccxt_config)
    expected["urls"]["api"]["public"] = "http://127.0.0.1:9999/api/v3"
    assert config.exchange("binance").ccxt_config == expected


def test_ccxt_config_cannot_switch_off_the_shared_throttle() -> None:
    fails(
        with_({"exchanges": {"binance": {"ccxt_config": {"enableRateLimit": False}}}}),
        "exchanges.binance.ccxt_config",
        "enableRateLimit must stay true",
    )


# -- unknown keys and wrong types ----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ({"exchange": {}}, "exchange", "'exchanges'"),
        ({"seamless": {"rate_limits": {}}}, "seamless.rate_limits", "'rate_limit'"),
        (
            {"seamless": {"rate_limit": {"min_interval": 5}}},
            "seamless.rate_limit.min_interval",
            "'min_interval_ms'",
        ),
        (
            {"exchanges": {"binance": {"timeframe": ["1m"]}}},
            "exchanges.binance.timeframe",
            "'timeframes'",
        ),
        ({"domains": {"live": {"max_lag": 5}}}, "domains.live.max_lag", "'max_lag_sec'"),
        ({"seamless": {"live": {"ws": {"enable": True}}}}, "seamless.live.ws.enable", "'enabled'"),
        ({"cache": {"ttl": 5}}, "cache.ttl", "'ttl_ms'"),
        ({"source": "x"}, "source", "allowed here"),
    ],
)
def test_unknown_keys_are_typos(override: dict[str, Any], key: str, hint: str) -> None:
    fails(with_(override), key, "unknown key", hint)


def test_every_other_invalid_key_is_listed_too() -> None:
    error = fails(
        with_({"cache": {"ttl_ms": -1}, "seamless": {"sla": {"max_wait_live_ms": -1}}}),
        "seamless.sla.max_wait_live_ms",
    )
    assert "also invalid: cache.ttl_ms" in error.reason


@pytest.mark.parametrize(
    ("override", "key", "reason"),
    [
        ({"exchanges": {"binance": {"symbols": "BTC/USDT"}}}, "exchanges.binance.symbols", "tuple"),
        (
            {"exchanges": {"binance": {"timeframes": [1]}}},
            "exchanges.binance.timeframes[0]",
            "string",
        ),
        ({"exchanges": ["binance"]}, "exchanges", "dictionary"),
        ({"exchanges": {"binance": {"sandbox": "maybe"}}}, "exchanges.binance.sandbox", "boolean"),
        (
            {"seamless": {"backfill": {"window_bars": True}}},
            "seamless.backfill.window_bars",
            "boolean",
        ),
        (
            {"seamless": {"backfill": {"window_bars": 1.5}}},
            "seamless.backfill.window_bars",
            "integer",
        ),
        (
            {"seamless": {"backfill": {"window_bars": "many"}}},
            "seamless.backfill.window_bars",
            "integer",
        ),
        (
            {"seamless": {"sla": {"on_violation": "IGNORE"}}},
            "seamless.sla.on_violation",
            "PARTIAL_FILL",
        ),
        ({"seamless": {"strategy": "FAST"}}, "seamless.strategy", "SEAMLESS"),
        (
            {"seamless": {"rate_limit": {"redis_dsn": 6379}}},
            "seamless.rate_limit.redis_dsn",
            "string",
        ),
        ({"seamless": {"data_dir": ""}}, "seamless.data_dir", "empty"),
        ({"seamless": {"data_dir": ["a"]}}, "seamless.data_dir", "string"),
        ({"seamless": "fast"}, "seamless", "dictionary"),
        ({"seamless": {"conformance": {"version": "v1"}}}, "seamless.conformance.version", "'v2'"),
        ({"domains": {"paper": {}}}, "domains.paper", "'backtest'"),
        ({"connectors": {"x": {"y": 1}}}, "connectors.x", "string"),
        (
            {"seamless": {"partitions": {"intraday_start": "2017-02-30"}}},
            "seamless.partitions.intraday_start",
            "calendar date",
        ),
        (
            {"seamless": {"partitions": {"daily_start": "01/01/2017"}}},
            "seamless.partitions.daily_start",
            "YYYY-MM-DD",
        ),
        ({"cache": {"key_template": "{node_id}:{start}:{end}"}}, "cache.key_template", "world_id"),
        ({"cache": {"key_template": "{node}"}}, "cache.key_template", "unknown placeholder {node}"),
        (
            {"seamless": {"live": {"ws": {"reconnect_backoff_ms": [-1]}}}},
            "seamless.live.ws.reconnect_backoff_ms[0]",
            "greater than",
        ),
    ],
)
def test_wrong_types_and_values(override: dict[str, Any], key: str, reason: str) -> None:
    fails(with_(override), key, reason)


def test_unquoted_yaml_dates_are_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "seamless.yaml", "seamless:\n  partitions:\n    daily_start: 2018-05-01\n"
    )
    assert load_config(path).seamless.partitions.daily_start == "2018-05-01"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping") as info:
        load_config(write(tmp_path / "seamless.yaml", "- a\n- b\n"))
    assert info.value.key == "<root>"


# -- domains -------------------------------------------------------------------------------


def test_snapshot_domains_require_as_of_by_default() -> None:
    config = load(with_({"domains": {"backtest": {}, "dryrun": {}, "live": {}}}))
    assert config.domains["backtest"].require_as_of and config.domains["dryrun"].require_as_of
    assert not config.domains["live"].require_as_of
    config = load_config_dict(yaml.safe_load("domains:\n  research:\n  live:\n"))
    assert config.domains["research"].require_as_of


@pytest.mark.parametrize(
    ("domain", "key", "reason"),
    [
        (
            {"backtest": {"require_as_of": False}},
            "domains.backtest.require_as_of",
            "needs an as_of",
        ),
        ({"research": {"source": "live_blend"}}, "domains.research.source", "artifact_only"),
        ({"dryrun": {"source": "live_blend"}}, "domains.dryrun.source", "artifact_prefers"),
        ({"backtest": {"max_lag_sec": 5}}, "domains.backtest.max_lag_sec", "only the live domain"),
    ],
)
def test_domain_policies_are_cross_checked(domain: dict[str, Any], key: str, reason: str) -> None:
    fails(with_({"domains": domain}), key, reason)


# -- files and environment -----------------------------------------------------------------


def test_malformed_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "seamless.yaml", "seamless:\n  rate_limit: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert info.value.key == "<file>" and info.value.source == str(path)
    assert "line" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.key == "<file>" and "nope.yaml" in str(info.value)


def test_seamless_config_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "elsewhere" / "catalog.yaml", BASE)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    config = load_config()
    assert config.source == str(path)
    assert config.data_dir == tmp_path / "elsewhere" / "data"
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=f"not found; {CONFIG_ENV} is set to it"):
        load_config()


def test_without_seamless_config_the_working_directory_file_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "seamless.yaml", BASE)
    monkeypatch.chdir(tmp_path)
    assert load_config().source == "seamless.yaml"
    assert load_config().data_dir == tmp_path / "data"


def test_relative_data_dir_resolves_next_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "project" / "seamless.yaml", with_({"seamless": {"data_dir": "../lake"}})
    )
    monkeypatch.chdir(tmp_path / "project")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "project" / "seamless.yaml")
    assert config.data_dir == tmp_path / "lake"
    assert config.hot_store_path == tmp_path / "lake" / "hot.duckdb"
    assert config.artifact_uri == f"file://{tmp_path}/lake/artifacts"
    assert load_config(path).data_dir == tmp_path / "lake"


def test_relative_hot_store_path_resolves_next_to_the_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "seamless.yaml", with_({"seamless": {"hot_store": {"path": "db/hot.duckdb"}}})
    )
    assert load_config(path).hot_store_path == tmp_path / "db" / "hot.duckdb"


def test_load_config_dict_resolves_against_the_working_directory_or_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(BASE).data_dir == tmp_path / "data"
    assert load(BASE).artifact_uri == f"file://{tmp_path}/data/artifacts"
    assert load(BASE, base_dir=tmp_path / "x").data_dir == tmp_path / "x" / "data"


def test_seamless_data_dir_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "project" / "seamless.yaml", with_({"seamless": {"data_dir": "d"}}))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "override"))
    config = load_config(path)
    assert config.data_dir == tmp_path / "override"
    assert config.hot_store_path == tmp_path / "override" / "hot.duckdb"
    # relative: to the working directory, like any path given in a shell
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, "rel")
    assert load_config(path).data_dir == tmp_path / "rel"
    # also when the file has no `seamless:` section at all
    assert load_config(write(tmp_path / "bare.yaml", BASE)).data_dir == tmp_path / "rel"


def test_redis_dsn_sources_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(BASE).redis_dsn == ""
    monkeypatch.setenv(REDIS_ENV, "redis://env:6379/0")
    assert load(BASE).redis_dsn == "redis://env:6379/0"
    with_environment = with_({"environment": {"rate_limiter_redis": "redis://environment/0"}})
    assert load(with_environment).redis_dsn == "redis://environment/0"
    with_connector = with_(
        {"connectors": {"ccxt_rate_limiter_redis": "rediss://connector/0"}}, with_environment
    )
    assert load(with_connector).redis_dsn == "rediss://connector/0"
    explicit = with_(
        {"seamless": {"rate_limit": {"redis_dsn": "redis://explicit/0"}}}, with_connector
    )
    assert load(explicit).redis_dsn == "redis://explicit/0"


def test_redis_dsn_is_read_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_ENV, "redis://env:6379/0")
    config = load(BASE)
    monkeypatch.delenv(REDIS_ENV)
    assert config.redis_dsn == "redis://env:6379/0"


@pytest.mark.parametrize(
    ("where", "key"),
    [
        (
            {"seamless": {"rate_limit": {"redis_dsn": "localhost:6379"}}},
            "seamless.rate_limit.redis_dsn",
        ),
        (
            {"connectors": {"ccxt_rate_limiter_redis": "http://r"}},
            "connectors.ccxt_rate_limiter_redis",
        ),
    ],
)
def test_bad_redis_dsn(where: dict[str, Any], key: str) -> None:
    fails(with_(where), key, "not a Redis URL")


def test_bad_redis_dsn_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_ENV, "127.0.0.1:6379")
    fails(BASE, REDIS_ENV, "not a Redis URL")


def test_websocket_live_feed_keys_are_acted_on_or_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_dict(
            yaml.safe_load("seamless:\n  live:\n    ws:\n      emit_building_candle: true\n")
        )
    assert "seamless.live.ws.emit_building_candle" in str(info.value)
    assert "closed bars only" in str(info.value)
    with pytest.raises(ConfigError, match="reconnect_backoff_ms"):
        load_config_dict(
            yaml.safe_load("seamless:\n  live:\n    ws:\n      reconnect_backoff_ms: []\n")
        )
    config = load_config_dict(
        yaml.safe_load(
            "seamless:\n  live:\n    ws:\n"
            "      enabled: true\n      reconnect_backoff_ms: [100, 200]\n"
        )
    )
    assert config.seamless.live.ws.enabled and config.seamless.live.ws.reconnect_backoff_ms == (
        100,
        200,
    )
