"""Bybit v5 instruments (GET /v5/market/instruments-info), its error envelope, and the
ccxt `bybit` config that points at the sandbox.

Listed (`SandboxConfig.bybit_markets`): category `spot` holds every spot market of the
sandbox, category `linear` a USDT perpetual (`LinearPerpetual`, ccxt `BTC/USDT:USDT`) per
USDT-quoted one; `inverse` and `option` list nothing. Documents carry what ccxt's
`fetch_spot_markets` / `fetch_future_markets` read: symbol, baseCoin, quoteCoin, status
`Trading`, lotSizeFilter, priceFilter.tickSize; for linear also contractType, settleCoin,
launchTime (ms, the market's listing time), leverageFilter. Decimals print as Bybit does,
without trailing zeros (`bybit_decimal`).

Request semantics: `category` is required (10001 otherwise); `symbol` and `baseCoin`
filter (an unknown symbol lists nothing); `status` `Trading` lists everything, the other
Bybit statuses (`PreLaunch`, which ccxt asks for, `Delivering`, `Closed`) nothing. Spot
answers everything in one page. Linear/inverse paginate by `limit` (1..1000, default
500) but never more than `INSTRUMENTS_PAGE_CAP` per page, a sandbox choice so clients
exercise Bybit's `nextPageCursor` (opaque here: `after:<last symbol>`; `""` on the last
page). Ordered by symbol.
"""

from __future__ import annotations

import json
from typing import Any

from .config import BYBIT_LISTING_FLOOR_TS, UNITS_PER_ONE, MarketSpec, SandboxConfig

INSTRUMENTS_PAGE_CAP = 2
DEFAULT_INSTRUMENTS_LIMIT = 500
BYBIT_MARKET_TYPES = ("spot", "linear")
CATEGORIES = ("spot", "linear", "inverse", "option")
STATUSES = ("Trading", "PreLaunch", "Delivering", "Closed")
_CURSOR_PREFIX = "after:"


class BybitError(Exception):
    """A request error answered, as Bybit does, with HTTP 200 and a non-zero `retCode`
    (10001: params error; ccxt maps it to BadRequest, and `Not supported symbols` to
    BadSymbol)."""

    def __init__(self, ret_code: int, msg: str) -> None:
        super().__init__(msg)
        self.ret_code, self.msg = ret_code, msg


def envelope(result: Any, time_ms: int, ret_code: int = 0, msg: str = "OK") -> bytes:
    """Bybit's response body around `result` (an object, or JSON bytes already encoded)."""
    if not isinstance(result, bytes):
        result = json.dumps(result, separators=(",", ":")).encode()
    head = json.dumps({"retCode": ret_code, "retMsg": msg}, separators=(",", ":")).encode()
    return head[:-1] + b',"result":' + result + b',"retExtInfo":{},"time":%d}' % time_ms


def bybit_decimal(units: int) -> str:
    """A 1e-8 fixed-point value as Bybit prints it: `38345.17`, `0.5`, `17071`, `0`."""
    sign, units = ("-", -units) if units < 0 else ("", units)
    whole, frac = divmod(units, UNITS_PER_ONE)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:08d}".rstrip("0")


def _decimals(units: int) -> int:
    text = bybit_decimal(units)
    return len(text.split(".", 1)[1]) if "." in text else 0


def spot_instrument(m: MarketSpec) -> dict[str, Any]:
    return {
        "symbol": m.id,
        "baseCoin": m.base,
        "quoteCoin": m.quote,
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "none",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": bybit_decimal(m.step_units),
            "quotePrecision": "0.00000001",
            "minOrderQty": bybit_decimal(m.step_units),
            "maxOrderQty": "9000",
            "minOrderAmt": "5",
            "maxOrderAmt": "2000000",
        },
        "priceFilter": {"tickSize": bybit_decimal(m.tick_units)},
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
    }


def linear_instrument(m: MarketSpec) -> dict[str, Any]:
    return {
        "symbol": m.id,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": m.base,
        "quoteCoin": m.quote,
        "launchTime": str(m.listing_ts * 1000),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(_decimals(m.tick_units)),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {
            "minPrice": bybit_decimal(m.tick_units),
            "maxPrice": bybit_decimal(int(m.base_price * 100) * UNITS_PER_ONE or UNITS_PER_ONE),
            "tickSize": bybit_decimal(m.tick_units),
        },
        "lotSizeFilter": {
            "maxOrderQty": "1190",
            "minOrderQty": bybit_decimal(m.step_units),
            "qtyStep": bybit_decimal(m.step_units),
            "postOnlyMaxOrderQty": "1190",
            "maxMktOrderQty": "500",
            "minNotionalValue": "5",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": m.quote,
        "copyTrading": "both",
        "upperFundingRate": "0.005",
        "lowerFundingRate": "-0.005",
        "isPreListing": False,
        "preListingInfo": None,
    }


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return min(DEFAULT_INSTRUMENTS_LIMIT, INSTRUMENTS_PAGE_CAP)
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BybitError(10001, "params error: limit must be in [1, 1000]")
    return min(int(raw), INSTRUMENTS_PAGE_CAP)


def instruments_info(config: SandboxConfig, query: Any) -> dict[str, Any]:
    """The `result` of GET /v5/market/instruments-info."""
    category = query.get("category", "")
    if category not in CATEGORIES:
        raise BybitError(10001, "params error: category is invalid")
    status = query.get("status") or "Trading"
    if status not in STATUSES:
        raise BybitError(10001, "params error: status is invalid")
    listed = config.bybit_markets(category) if category in BYBIT_LISTING_FLOOR_TS else {}
    markets = sorted(listed.values(), key=lambda m: m.id) if status == "Trading" else []
    if query.get("symbol"):
        markets = [m for m in markets if m.id == query["symbol"]]
    if query.get("baseCoin"):
        markets = [m for m in markets if m.base == query["baseCoin"]]
    if category == "spot":
        return {"category": "spot", "list": [spot_instrument(m) for m in markets]}
    size = _page_size(query.get("limit"))
    cursor = query.get("cursor") or ""
    if cursor:
        if not cursor.startswith(_CURSOR_PREFIX):
            raise BybitError(10001, "params error: cursor is invalid")
        after = cursor[len(_CURSOR_PREFIX) :]
        markets = [m for m in markets if m.id > after]
    page = markets[:size]
    more = len(markets) > size
    return {
        "category": category,
        "list": [linear_instrument(m) for m in page],
        "nextPageCursor": f"{_CURSOR_PREFIX}{page[-1].id}" if more else "",
    }


def bybit_ccxt_config(
    url: str, *, market_types: tuple[str, ...] = ("spot",), **overrides: Any
) -> dict[str, Any]:
    """ccxt `bybit` constructor config pointing at a sandbox. `market_types` picks what
    `load_markets` loads: `("spot",)` (the default), `("spot", "linear")` or `("linear",)`
    (`BTC/USDT:USDT`). Without credentials ccxt skips its private currencies request, and
    with the market types restricted it requests only instruments-info (spot; linear plus
    linear `status=PreLaunch` and the cursor pages), all served here. The private URL
    points at the sandbox too, so a client given keys fails here (404) instead of
    reaching api.bybit.com."""
    unknown = sorted(set(market_types) - set(BYBIT_MARKET_TYPES))
    if unknown or not market_types:
        raise ValueError(f"market_types {market_types!r}: choose from {list(BYBIT_MARKET_TYPES)}")
    config: dict[str, Any] = {
        "enableRateLimit": False,
        "timeout": 10_000,
        "urls": {"api": {"public": url.rstrip("/"), "private": url.rstrip("/")}},
        "options": {"fetchMarkets": {"types": list(market_types)}},
    }
    config.update(overrides)
    return config
