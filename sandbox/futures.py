"""Binance USDⓈ-M perpetual futures public endpoints under /fapi/v1.

One perpetual (`BTCUSDT`, ccxt `BTC/USDT:USDT`) per spot market quoted in USDT
(`SandboxConfig.perpetuals`). Served: `ping`, `time`, `exchangeInfo` (futures shape),
`klines` and `markPriceKlines` (spot kline semantics, every interval but 1s, limit up to
1500), `fundingRate` (see `funding.py`).

Rate limits: one sandbox weight budget is shared by /api/v3 and /fapi/v1 (both
exchangeInfo documents publish the same REQUEST_WEIGHT limit), and every fapi request
goes through the same admission and faults as spot (down, bans, 5xx, latency). Weights
are Binance's: klines and markPriceKlines by `limit` (<100: 1, <500: 2, <=1000: 5, else
10; default 500), the rest 1; a `weights` knob entry named like the stats endpoint
(`"fapi/klines": 3`) overrides one flatly. Stats name them `fapi/<endpoint>`;
`force_429` applies to klines, markPriceKlines and fundingRate; the kline log records
the kline endpoints with `endpoint: "fapi/klines" | "fapi/markPriceKlines"`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from .config import INTERVALS, MarketSpec, SandboxConfig
from .funding import serve_funding
from .klines import DEFAULT_LIMIT, BinanceError, serve_klines
from .markets import _dec
from .state import SandboxState

FAPI_PREFIX = "/fapi/v1"
FAPI_MAX_KLINE_LIMIT = 1500
FAPI_INTERVALS = {k: v for k, v in INTERVALS.items() if k != "1s"}
FAPI_ENDPOINTS = ("ping", "time", "exchangeInfo", "klines", "markPriceKlines", "fundingRate")
_KLINES = ("klines", "markPriceKlines")
PERPETUAL_DELIVERY_MS = 4_133_404_800_000  # 2100-12-25: Binance's "no delivery"


@dataclass(frozen=True)
class Route:
    """How an API request is counted: stats name, weight, whether `force_429` applies
    (`kline_like`) and whether it goes to the kline log."""

    endpoint: str
    weight: int
    kline_like: bool
    logged: bool


def kline_weight(raw_limit: str | None) -> int:
    """Binance fapi kline weight by limit."""
    limit = int(raw_limit) if raw_limit and raw_limit.isdigit() else DEFAULT_LIMIT
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def fapi_route(name: str, query: Any, config: SandboxConfig) -> Route:
    endpoint = f"fapi/{name}" if name in FAPI_ENDPOINTS else "fapi/other"
    default = kline_weight(query.get("limit")) if name in _KLINES else 1
    weight = int(config.weights.get(endpoint, default))
    return Route(endpoint, weight, name in (*_KLINES, "fundingRate"), name in _KLINES)


def serve_fapi(name: str, state: SandboxState, query: Any) -> tuple[bytes, int, int]:
    """`(body, kline rows, corrupted rows)` of an admitted /fapi/v1 request."""
    cfg = state.config
    if name == "ping":
        return b"{}", 0, 0
    if name == "time":
        return b'{"serverTime":%d}' % state.clock.now_ms(), 0, 0
    if name == "exchangeInfo":
        info = fapi_exchange_info(cfg, state.clock.now_ms())
        return json.dumps(info, separators=(",", ":")).encode(), 0, 0
    if name in _KLINES:
        markets = cfg.perpetuals()
        if name == "markPriceKlines":
            markets = {k: dataclasses.replace(m, kind="mark") for k, m in markets.items()}
        return serve_klines(
            state, query, markets, max_limit=FAPI_MAX_KLINE_LIMIT, intervals=FAPI_INTERVALS
        )
    if name == "fundingRate":
        return serve_funding(state, query), 0, 0
    raise BinanceError(-1000, f"Unknown endpoint {FAPI_PREFIX}/{name}.", status=404)


def _decimals(units: int) -> int:
    """Decimals of a power-of-ten step given in 1e-8 units (1_000_000 -> 2)."""
    places = 8
    while places and units % 10 == 0:
        units, places = units // 10, places - 1
    return places


def perp_symbol_info(m: MarketSpec) -> dict[str, Any]:
    """One entry of fapi exchangeInfo `symbols` (what ccxt's parse_market reads)."""
    max_price = _dec(int(m.base_price * 100) * 10**8 or 10**8)
    return {
        "symbol": m.id,
        "pair": m.id,
        "contractType": "PERPETUAL",
        "deliveryDate": PERPETUAL_DELIVERY_MS,
        "onboardDate": m.listing_ts * 1000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": m.base,
        "quoteAsset": m.quote,
        "marginAsset": m.quote,
        "pricePrecision": _decimals(m.tick_units),
        "quantityPrecision": _decimals(m.step_units),
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _dec(m.tick_units),
                "maxPrice": max_price,
                "tickSize": _dec(m.tick_units),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _dec(m.step_units),
                "maxQty": "1000.00000000",
                "stepSize": _dec(m.step_units),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": _dec(m.step_units),
                "maxQty": "120.00000000",
                "stepSize": _dec(m.step_units),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


def fapi_exchange_info(config: SandboxConfig, server_time_ms: int) -> dict[str, Any]:
    """GET /fapi/v1/exchangeInfo: every perpetual; the shared REQUEST_WEIGHT limit."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": config.weight_limit_per_minute or 6000,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [perp_symbol_info(m) for m in config.perpetuals().values()],
    }
