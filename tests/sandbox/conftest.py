"""Fixtures: an in-process sandbox with a frozen exchange clock and a fake wall clock."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest

from sandbox import SandboxConfig, SandboxExchange

T0 = 1_699_999_980  # a minute boundary (2023-11-14 22:13:00 UTC)
NOW = T0 + 30.5  # frozen exchange time: 30.5 s into the T0 minute bar


class FakeWall:
    """Wall clock for rate-limit windows, so minute boundaries never flake a test."""

    def __init__(self, t: float = 1_800_000_005.0) -> None:  # 5 s into a real minute
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def wall() -> FakeWall:
    return FakeWall()


@pytest.fixture
def sandbox(wall: FakeWall) -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=NOW), wallclock=wall) as sx:
        yield sx


@pytest.fixture
def exchange(sandbox: SandboxExchange) -> ccxt.binance:
    """Real (sync) ccxt binance pointed at the sandbox."""
    ex = ccxt.binance(sandbox.ccxt_config())
    ex.load_markets()
    return ex


def http_get(url: str) -> tuple[int, dict[str, str], Any]:
    """GET without ccxt: status, headers and parsed body (text when not JSON)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode()
