"""Fixtures for end-to-end runs: a sandbox exchange, a project config and a Dagster home."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from resources.artifacts.base import ArtifactStore
from resources.hot_store.base import HotStore
from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.runtime import resources_from_config

DAY = 86_400
PROJECT_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster_home" / "dagster.yaml"


def write_config(
    tmp_path: Path, sandbox_url: str, *, symbols: tuple[str, ...] = ("BTC/USDT",), **section: Any
) -> Path:
    """A seamless.yaml for tests: binance → sandbox, fast retries, data under tmp_path."""
    seamless: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "backfill": {"retry_backoff_ms": 20, "max_attempts": 4, "request_timeout_ms": 5000},
        "rate_limit": {
            "tokens_per_interval": 1_000_000,  # capped at what the exchange publishes
            "interval_ms": 1000,
            "burst_tokens": 100_000,
            "min_interval_ms": 0,
            "penalty_backoff_ms": 500,
        },
        "partitions": {"intraday_start": "2023-01-01", "daily_start": "2023-01-01"},
    }
    for key, value in section.items():
        seamless[key] = {**seamless.get(key, {}), **value}
    config = {
        "seamless": seamless,
        "exchanges": {
            "binance": {
                "symbols": list(symbols),
                "timeframes": ["1m", "1h"],
                "ccxt_config": {"urls": {"api": {"public": f"{sandbox_url}/api/v3"}}},
            }
        },
    }
    path = tmp_path / "seamless.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig()) as exchange:
        yield exchange


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The project's own instance config: its storage, pools and run limits are what users run.
    shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def project(tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path) -> SeamlessConfig:
    return load_config(write_config(tmp_path, sandbox.url))


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def kline_requests(sandbox: SandboxExchange) -> int:
    """Kline requests the sandbox received since its last reset."""
    return int(sandbox.stats()["by_endpoint"].get("klines", {}).get("requests", 0))


def open_artifacts(config: SeamlessConfig) -> ArtifactStore:
    return resources_from_config(config)["artifacts"].open()  # type: ignore[attr-defined, no-any-return]


def open_hot(config: SeamlessConfig) -> HotStore:
    return resources_from_config(config)["hot_store"].open()  # type: ignore[attr-defined, no-any-return]
