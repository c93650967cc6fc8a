"""A Binance-compatible replay exchange over HTTP, for tests and demos: spot under /api/v3
and USDⓈ-M perpetuals (klines, mark-price klines, funding history) under /fapi/v1; and a
second venue, Bybit's v5 public market data (time, instruments-info, kline; spot and
linear) under /v5/market, for ccxt `bybit` (`bybit_ccxt_config(url)`; see `bybit.py`).

Real ccxt talks to it (`ccxt_config(url)`, or `ccxt_config(url, market_types=("spot",
"linear"))` for `BTC/USDT:USDT` perpetuals too); candles are a pure function of
(symbol, interval, open time, config), with a settable clock, maintenance gaps (no klines,
no trades), kline gaps (`kline_gaps`: klines missing while aggTrades go on), restated
windows, a Binance-like weight budget (429 / 418 + Retry-After, with an in-flight grace
after each 429: see `state.py`), fault injection (5xx, latency, outages, late candles via
`publish_delay_s`, and malformed kline rows via the `corruptions` knob, optionally for the
first N responses only: see `corrupt.py`) and request counters.
"""

from .admin import SandboxAdmin, spawn_sandbox_process
from .bars import expected_bars
from .bybit import BYBIT_PREFIX
from .bybit_markets import INSTRUMENTS_PAGE_CAP, bybit_ccxt_config
from .clock import SandboxClock
from .config import (
    BYBIT_INTERVALS,
    BYBIT_LISTING_FLOOR_TS,
    CORRUPTION_KINDS,
    FUNDING_HOURS,
    INTERVALS,
    KNOWN_MARKETS,
    PERP_LISTING_FLOOR_TS,
    MarketSpec,
    SandboxConfig,
)
from .funding import expected_funding
from .futures import FAPI_INTERVALS, FAPI_PREFIX
from .server import SandboxExchange, ccxt_config, make_app, start_site
from .state import SandboxState

__all__ = [
    "BYBIT_INTERVALS",
    "BYBIT_LISTING_FLOOR_TS",
    "BYBIT_PREFIX",
    "CORRUPTION_KINDS",
    "FAPI_INTERVALS",
    "FAPI_PREFIX",
    "FUNDING_HOURS",
    "INSTRUMENTS_PAGE_CAP",
    "INTERVALS",
    "KNOWN_MARKETS",
    "PERP_LISTING_FLOOR_TS",
    "MarketSpec",
    "SandboxAdmin",
    "SandboxClock",
    "SandboxConfig",
    "SandboxExchange",
    "SandboxState",
    "bybit_ccxt_config",
    "ccxt_config",
    "expected_bars",
    "expected_funding",
    "make_app",
    "spawn_sandbox_process",
    "start_site",
]
