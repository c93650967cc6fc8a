"""A Binance-spot-compatible replay exchange over HTTP, for tests and demos.

Real ccxt talks to it (`ccxt_config(url)`); candles are a pure function of
(symbol, interval, open time, config), with a settable clock, maintenance gaps, restated
windows, a Binance-like weight budget (429 / 418 + Retry-After, with an in-flight grace
after each 429: see `state.py`), fault injection (5xx, latency, outages, late candles via
`publish_delay_s`, and malformed kline rows via the `corruptions` knob, optionally for the
first N responses only: see `corrupt.py`) and request counters.
"""

from .admin import SandboxAdmin, spawn_sandbox_process
from .bars import expected_bars
from .clock import SandboxClock
from .config import CORRUPTION_KINDS, INTERVALS, KNOWN_MARKETS, MarketSpec, SandboxConfig
from .server import SandboxExchange, ccxt_config, make_app, start_site
from .state import SandboxState

__all__ = [
    "CORRUPTION_KINDS",
    "INTERVALS",
    "KNOWN_MARKETS",
    "MarketSpec",
    "SandboxAdmin",
    "SandboxClock",
    "SandboxConfig",
    "SandboxExchange",
    "SandboxState",
    "ccxt_config",
    "expected_bars",
    "make_app",
    "spawn_sandbox_process",
    "start_site",
]
