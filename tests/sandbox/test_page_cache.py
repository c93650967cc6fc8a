"""The sandbox's page cache answers byte for byte what a fresh encoding would, over HTTP."""

from __future__ import annotations

import urllib.request

from sandbox import SandboxExchange
from sandbox.bars import generate_bars, select_open_times
from sandbox.encode import encode_klines_reference

from .conftest import NOW, T0

MIN = 60_000


def _raw(sx: SandboxExchange, **params: object) -> bytes:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"{sx.url}/api/v3/klines?{query}", timeout=10) as resp:
        return bytes(resp.read())


def _reference(sx: SandboxExchange, lo_s: int, hi_s: int, limit: int, now_s: float = NOW) -> bytes:
    cfg = sx.state.config
    market = cfg.markets()["BTCUSDT"]
    ts = select_open_times(market, 60, cfg, lo_s=lo_s, hi_s=hi_s, limit=limit)
    return encode_klines_reference(generate_bars(market, 60, ts, cfg, int(now_s * 1000)))


def test_repeated_page_is_served_from_cache_unchanged(sandbox: SandboxExchange) -> None:
    start = T0 - 5000 * 60
    params = {"symbol": "BTCUSDT", "interval": "1m", "startTime": start * 1000, "limit": 1000}
    first = _raw(sandbox, **params)
    hits = sandbox.state.pages.hits
    again = _raw(sandbox, **params)
    assert sandbox.state.pages.hits == hits + 1
    assert first == again == _reference(sandbox, start, start + 999 * 60, 1000)
    # a different endTime selecting the same bars is the same page (and the same bytes)
    same_rows = _raw(sandbox, **params, endTime=(start + 999 * 60) * 1000 + 59_999)
    assert same_rows == first and sandbox.state.pages.hits == hits + 2


def test_forming_bar_is_never_cached(sandbox: SandboxExchange) -> None:
    params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 3}  # the last 3: T0 is forming
    hits = sandbox.state.pages.hits
    first = _raw(sandbox, **params)
    sandbox.set_clock(now=NOW + 10)  # the forming bar moves on
    second = _raw(sandbox, **params)
    assert sandbox.state.pages.hits == hits
    assert first == _reference(sandbox, T0 - 120, T0, 3)
    assert second == _reference(sandbox, T0 - 120, T0, 3, now_s=NOW + 10) != first


def test_a_data_knob_empties_the_cache_and_others_keep_it(sandbox: SandboxExchange) -> None:
    start = T0 - 3000 * 60
    params = {"symbol": "BTCUSDT", "interval": "1m", "startTime": start * 1000, "limit": 500}
    before = _raw(sandbox, **params)
    sandbox.configure(weight_limit_per_minute=10**9, latency_ms=1)  # bars unchanged
    hits = sandbox.state.pages.hits
    assert _raw(sandbox, **params) == before
    assert sandbox.state.pages.hits == hits + 1
    sandbox.configure(seed=7)  # another market: every page differs
    after = _raw(sandbox, **params)
    assert after != before
    assert after == _reference(sandbox, start, start + 499 * 60, 500)
    sandbox.configure(gaps={"BTC/USDT": [[start + 60, start + 180]]})
    gapped = _raw(sandbox, **params)
    assert gapped == _reference(sandbox, start, start + 501 * 60, 500)
    assert gapped.count(b"],[") == 499
