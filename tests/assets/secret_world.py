"""The planted world of `test_secrets_at_rest`: the scenarios (how secrets reach the
config), the secrets of each place, and the config files and environment that plant them."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from seamless_assets.config import REDIS_ENV
from tests.services import QUESTDB_HTTP_ADDR, S3_ENDPOINT

from .secret_scan import Secret

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400
START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
NOW = T0 + 3 * DAY + 30  # the exchange's clock: 2024-01-04 00:00:30, two days are stable
NODES = ("ohlcv:binance:BTC/USDT:1m", "ohlcv:binance:ETH/USDT:1m")
CCXT_CREDENTIALS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")
REDIS_PLACES = (
    "seamless.rate_limit.redis_dsn",
    "connectors.ccxt_rate_limiter_redis",
    "environment.rate_limiter_redis",
    REDIS_ENV,
)
#: The variables the shipped seamless.yaml reads a place from (same value in every file).
ENV_NAMES = {"environment.coordinator_url": "SEAMLESS_COORDINATOR_URL"}
AWS_PLACES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class Scenario:
    name: str
    via_env: bool  # config values as `${ENV}` (else written literally in the yaml)
    redis_place: str  # where the effective Redis DSN comes from
    full: bool  # every path, or the backfill and a live read only


SCENARIOS = [
    Scenario("env", True, "seamless.rate_limit.redis_dsn", True),
    Scenario("literal", False, "seamless.rate_limit.redis_dsn", True),
    Scenario("connectors", False, "connectors.ccxt_rate_limiter_redis", False),
    Scenario("environment", True, "environment.rate_limiter_redis", False),
    Scenario("redis-env-var", False, REDIS_ENV, False),
]


@dataclass
class World:
    """One scenario's planted secrets, services, config files and process environment."""

    scenario: Scenario
    tmp: Path
    sandbox_url: str
    proxy_port: int
    redis_port: int
    secrets: dict[str, Secret]
    monkeypatch: pytest.MonkeyPatch
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}_")
    bucket: str = field(default_factory=lambda: f"secrets-{uuid.uuid4().hex[:12]}")
    env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.tmp / "dagster_home"

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    def values(
        self, *, redis_port: int | None = None, ilp_port: int | None = None
    ) -> dict[str, str]:
        """place -> the configured value holding its secret."""
        s = self.secrets
        redis = redis_port or self.redis_port
        ilp = ilp_port or QUESTDB_HTTP_ADDR[1]
        out = {
            "seamless.hot_store.questdb_dsn": (
                f"postgresql://admin:{s['seamless.hot_store.questdb_dsn'].url}"
                f"@127.0.0.1:{self.proxy_port}/qdb"
            ),
            "seamless.hot_store.questdb_ilp": (
                f"http::addr=127.0.0.1:{ilp};username=admin;"
                f"password={s['seamless.hot_store.questdb_ilp'].value};"
            ),
            "environment.coordinator_url": (
                f"https://ops:{s['environment.coordinator_url'].url}@coordinator.invalid:8443/"
            ),
            "exchanges.binance.ccxt_config.headers.Authorization": (
                f"Bearer {s['exchanges.binance.ccxt_config.headers.Authorization'].value}"
            ),
        }
        out.update(
            {
                f"exchanges.binance.ccxt_config.{c}": s[f"exchanges.binance.ccxt_config.{c}"].value
                for c in CCXT_CREDENTIALS
            }
        )
        for place in REDIS_PLACES:
            if place in s:
                out[place] = f"redis://:{s[place].url}@127.0.0.1:{redis}/0"
        return out

    def write_config(self, name: str, *, exchange_url: str | None = None, **ports: int) -> Path:
        """A config file planting every secret (through `${ENV}` or literally)."""
        raw: dict[str, Any] = {
            "seamless": {
                "data_dir": str(self.data),
                "backfill": {"retry_backoff_ms": 20, "max_attempts": 3, "request_timeout_ms": 5000},
                "rate_limit": {"tokens_per_interval": 1_000_000, "interval_ms": 1000},
                "partitions": {"intraday_start": "2024-01-01", "daily_start": "2024-01-01"},
                "hot_store": {"backend": "questdb", "questdb_table_prefix": self.prefix},
                "artifact": {
                    "object_store_uri": f"s3://{self.bucket}/lake",
                    "s3": {"endpoint_url": S3_ENDPOINT},
                },
            },
            "exchanges": {
                "binance": {
                    "symbols": ["BTC/USDT", "ETH/USDT"],
                    "timeframes": ["1m"],
                    "ccxt_config": {
                        "urls": {"api": {"public": f"{exchange_url or self.sandbox_url}/api/v3"}}
                    },
                }
            },
            "domains": {"live": {"max_lag_sec": 3 * DAY, "allow_partial": True}},
        }
        for place, value in self.values(**ports).items():
            if place == REDIS_ENV:  # an environment variable by nature
                self.setenv(REDIS_ENV, value)
                continue
            if self.scenario.via_env:
                var = ENV_NAMES.get(place) or (
                    "TEST_SECRET_" + place.replace(".", "_").upper() + f"_{name.upper()}"
                )
                self.setenv(var, value)
                value = f"${{{var}}}"
            *parents, leaf = place.split(".")
            section = raw
            for part in parents:
                section = section.setdefault(part, {})
            section[leaf] = value
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def setenv(self, name: str, value: str) -> None:
        """For this process (in-process paths) and the subprocesses."""
        self.env[name] = value
        self.monkeypatch.setenv(name, value)

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SEAMLESS_DATA_DIR"}
        env.update(self.env, PYTHONPATH=str(ROOT), DAGSTER_HOME=str(self.home))
        return env


def plant(scenario: Scenario) -> dict[str, Secret]:
    places = [
        "seamless.hot_store.questdb_dsn",
        "seamless.hot_store.questdb_ilp",
        "environment.coordinator_url",
        "exchanges.binance.ccxt_config.headers.Authorization",
        *(f"exchanges.binance.ccxt_config.{c}" for c in CCXT_CREDENTIALS),
        *AWS_PLACES,
    ]
    # The full scenarios set every Redis key (only the first is used); the others, one.
    places += REDIS_PLACES if scenario.full else (scenario.redis_place,)
    return {
        place: Secret.access_key_id(place) if place == "AWS_ACCESS_KEY_ID" else Secret.new(place)
        for place in places
    }
