"""Funding-rate history through real ccxt from the sandbox's /fapi/v1/fundingRate: every
funding of a window, exactly, across funding-interval changes, gaps and pages."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from resources.exchange import ExchangeClient
from resources.funding import FundingRows, fetch_funding
from resources.rate_limit import LocalRateLimiter
from sandbox import SandboxConfig, SandboxExchange, ccxt_config, expected_funding
from seamless_assets.core.frame import Range

from .test_exchange import limits, settings

DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01
PERP = "BTC/USDT:USDT"
# 8 h until day 2, then 4 h until day 4, then 1 h
INTERVALS = {PERP: [[T0 + 2 * DAY, 4], [T0 + 4 * DAY, 1]]}


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    config = SandboxConfig(frozen_now_s=T0 + 10 * DAY, funding_intervals=INTERVALS)
    with SandboxExchange(config) as sx:
        yield sx


def _fetch(sx: SandboxExchange, window: Range, page: int = 1000) -> FundingRows:
    config = ccxt_config(sx.url, market_types=("linear",))
    del config["timeout"]
    client = ExchangeClient(
        dataclasses.replace(settings(sx), ccxt_config=config, market_types=("linear",)),
        LocalRateLimiter(limits()),
    )

    async def run() -> FundingRows:
        async with client:
            return await fetch_funding(client, PERP, window, page)

    return asyncio.run(run())


def _assert_exact(rows: FundingRows, expected: list[tuple[int, float, float]]) -> None:
    assert rows.ts_ms.tolist() == [t for t, _, _ in expected]
    assert np.array_equal(rows.rate, np.array([r for _, r, _ in expected]))
    assert np.array_equal(rows.mark_price, np.array([m for _, _, m in expected]))


@pytest.mark.parametrize("page", [1000, 7])
def test_every_funding_across_interval_changes(sandbox: SandboxExchange, page: int) -> None:
    window = Range(T0, T0 + 6 * DAY)
    rows = _fetch(sandbox, window, page)
    expected = expected_funding(PERP, window.start, window.end, sandbox.state.config)
    _assert_exact(rows, expected)
    gaps = np.diff(rows.ts_ms) // 3_600_000
    # 3 a day at 8 h, 6 a day at 4 h, 24 a day at 1 h: 6 + 12 + 48 fundings
    assert len(rows) == 66 and sorted(set(gaps.tolist())) == [1, 4, 8]
    assert rows.requests == (1 if page == 1000 else -(-66 // page) + (66 % page == 0))


def test_a_gap_in_funding_is_simply_absent(sandbox: SandboxExchange) -> None:
    sandbox.configure(gaps={PERP: [[T0 + 4 * DAY + 3 * 3600, T0 + 4 * DAY + 7 * 3600]]})
    window = Range(T0 + 4 * DAY, T0 + 5 * DAY)
    rows = _fetch(sandbox, window)
    expected = expected_funding(PERP, window.start, window.end, sandbox.state.config)
    assert len(expected) == 20  # 24 hourly fundings less the 4 inside the outage
    _assert_exact(rows, expected)
