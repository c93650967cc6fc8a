"""aiohttp server: Binance spot public endpoints under /api/v3, USDⓈ-M perpetual futures
public endpoints under /fapi/v1 (`futures.py`), Bybit v5 public market data under
/v5/market (`bybit.py`) and the admin API under /sandbox.

Why aiohttp: already a project dependency, and one event loop serves many concurrent ccxt
clients cheaply. The same `make_app` runs in a background thread (tests, demos) or in a
subprocess (`python -m sandbox`, for scenarios that kill or restart the exchange).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from aiohttp import web

from .archives import add_archive_routes
from .bybit import BYBIT_PREFIX, serve_bybit
from .bybit_markets import bybit_ccxt_config
from .clock import clock_request
from .config import SandboxConfig
from .futures import FAPI_PREFIX, Route, fapi_route, serve_fapi
from .http import read_json_object
from .klines import BinanceError, kline_entry, serve_klines
from .markets import exchange_info
from .state import Admission, SandboxState
from .trades import AGG_TRADES_WEIGHT, serve_agg_trades
from .ws import add_ws_routes

API_PREFIX = "/api/v3"
ADMIN_PREFIX = "/sandbox"
STATE_KEY = web.AppKey("sandbox_state", SandboxState)
MAX_LIMIT = 1000
MARKET_TYPES = ("spot", "linear")
_JSON = "application/json;charset=UTF-8"

_5XX_BODIES = {
    500: b"Internal Server Error",
    502: b"<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
    503: b"Service Unavailable",
}

__all__ = [
    "BinanceError",
    "SandboxExchange",
    "bybit_ccxt_config",
    "ccxt_config",
    "make_app",
    "start_site",
]


def ccxt_config(
    url: str, *, market_types: tuple[str, ...] = ("spot",), **overrides: Any
) -> dict[str, Any]:
    """ccxt `binance` constructor config pointing at a sandbox. `market_types` picks what
    `load_markets` loads: `("spot",)` (the default), `("spot", "linear")` or `("linear",)`
    for the USDⓈ-M perpetuals (`BTC/USDT:USDT`) served under /fapi/v1."""
    unknown = sorted(set(market_types) - set(MARKET_TYPES))
    if unknown or not market_types:
        raise ValueError(f"market_types {market_types!r}: choose from {list(MARKET_TYPES)}")
    api = {"public": f"{url}{API_PREFIX}"}
    if "linear" in market_types:
        api["fapiPublic"] = f"{url}{FAPI_PREFIX}"
    config: dict[str, Any] = {
        "enableRateLimit": False,
        "timeout": 10_000,
        "urls": {"api": api},
        "options": {"fetchMarkets": {"types": list(market_types)}},
    }
    config.update(overrides)
    return config


# ---------------------------------------------------------------------------- /api/v3
def _exchange_info(state: SandboxState, query: Any) -> bytes:
    cfg = state.config
    markets = cfg.markets()
    only: list[str] | None = None
    if query.get("symbol"):
        only = [query["symbol"]]
    elif query.get("symbols"):
        try:
            only = [str(s) for s in json.loads(query["symbols"])]
        except (ValueError, TypeError) as exc:
            raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'.") from exc
    if only is not None and any(s not in markets for s in only):
        raise BinanceError(-1121, "Invalid symbol.")
    return json.dumps(
        exchange_info(cfg, state.clock.now_ms(), only), separators=(",", ":")
    ).encode()


def _rejection(adm: Admission, state: SandboxState) -> web.Response:
    headers = {"X-MBX-USED-WEIGHT-1M": str(adm.used_weight)}
    if adm.retry_after is not None:
        headers["Retry-After"] = str(adm.retry_after)
    if adm.status == 429:
        msg = (
            "Too many requests; too much request weight used; current limit is "
            f"{state.config.weight_limit_per_minute} request weight per 1 MINUTE. Please use "
            "WebSocket Streams for live updates to avoid polling the API."
        )
        body = json.dumps({"code": -1003, "msg": msg}).encode()
        return web.Response(status=429, body=body, headers=headers, content_type="application/json")
    if adm.status == 418:
        msg = (
            f"Way too much request weight used; IP banned for {adm.retry_after}s. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
        body = json.dumps({"code": -1003, "msg": msg}).encode()
        return web.Response(status=418, body=body, headers=headers, content_type="application/json")
    return web.Response(
        status=adm.status, body=_5XX_BODIES.get(adm.status, b"error"), headers=headers
    )


async def _bybit(request: web.Request) -> web.Response:
    return await serve_bybit(request, request.app[STATE_KEY])


async def _api(request: web.Request) -> web.Response:
    return await _serve(request, fapi=False)


async def _fapi(request: web.Request) -> web.Response:
    return await _serve(request, fapi=True)


def _spot_route(name: str, cfg: SandboxConfig) -> Route:
    known = name in ("ping", "time", "exchangeInfo", "klines", "aggTrades")
    weight = int(cfg.weights.get(name, AGG_TRADES_WEIGHT if name == "aggTrades" else 1))
    return Route(name if known else "other", weight, name == "klines", name == "klines")


async def _serve(request: web.Request, *, fapi: bool) -> web.Response:
    state = request.app[STATE_KEY]
    arrived_at = state.enter()
    try:
        resp = await _serve_api(request, state, arrived_at, fapi)
        # Date on the rate-limit clock, as Binance's own: clients place the used-weight
        # header's count in the right minute (tests may shift that clock).
        resp.headers["Date"] = formatdate(state.wall_now(), usegmt=True)
        return resp
    finally:
        state.leave()


async def _serve_api(
    request: web.Request, state: SandboxState, arrived_at: float, fapi: bool
) -> web.Response:
    name = request.match_info["name"]
    cfg = state.config
    route = fapi_route(name, request.query, cfg) if fapi else _spot_route(name, cfg)
    if cfg.latency_ms > 0:
        await asyncio.sleep(cfg.latency_ms / 1000.0)
    adm = state.admit(route.endpoint, route.weight, klines=route.kline_like, arrived_at=arrived_at)
    entry = kline_entry(request.query, route.endpoint) if route.logged else None
    if adm.status:
        resp = _rejection(adm, state)
    else:
        headers = {"X-MBX-USED-WEIGHT-1M": str(adm.used_weight)}
        try:
            if fapi:
                body, rows, corrupted = serve_fapi(name, state, request.query)
                if entry is not None:
                    entry["rows"], entry["corrupted"] = rows, corrupted
            elif name == "ping":
                body = b"{}"
            elif name == "time":
                body = json.dumps(
                    {"serverTime": state.clock.now_ms()}, separators=(",", ":")
                ).encode()
            elif name == "exchangeInfo":
                body = _exchange_info(state, request.query)
            elif name == "klines" and entry is not None:
                body, entry["rows"], entry["corrupted"] = serve_klines(
                    state, request.query, cfg.markets(), max_limit=MAX_LIMIT
                )
            elif name == "aggTrades":
                body, _rows = serve_agg_trades(state, request.query)
            else:
                raise BinanceError(-1000, f"Unknown endpoint {API_PREFIX}/{name}.", status=404)
            resp = web.Response(body=body, headers={**headers, "Content-Type": _JSON})
        except BinanceError as exc:
            resp = web.Response(status=exc.status, body=exc.body(), headers=headers)
            resp.content_type = "application/json"
    if entry is not None:
        entry["status"] = resp.status
        entry["reason"] = adm.reason
        entry["admitted_at"] = adm.at
        entry["t"] = round(time.time(), 3)
    state.finish(resp.status, entry)
    return resp


# ---------------------------------------------------------------------------- /sandbox
def _admin_json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _admin_stats(request: web.Request) -> web.Response:
    return _admin_json(request.app[STATE_KEY].stats())


async def _admin_reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return _admin_json({"ok": True})


async def _admin_clock(request: web.Request) -> web.Response:
    clock = request.app[STATE_KEY].clock
    if request.method == "POST":
        try:
            clock.apply(await read_json_object(request))
        except ValueError as exc:
            return _admin_json({"error": str(exc)}, status=400)
    return _admin_json(clock.state())


async def _admin_config(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if request.method == "POST":
        try:
            state.configure(await read_json_object(request))
        except (ValueError, TypeError, KeyError) as exc:
            return _admin_json({"error": str(exc)}, status=400)
    return _admin_json(state.config_dict())


def make_app(state: SandboxState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_get(API_PREFIX + "/{name}", _api)
    app.router.add_get(FAPI_PREFIX + "/{name}", _fapi)
    app.router.add_get(BYBIT_PREFIX + "/{name}", _bybit)
    app.router.add_get(ADMIN_PREFIX + "/stats", _admin_stats)
    app.router.add_post(ADMIN_PREFIX + "/reset", _admin_reset)
    for path, handler in (("/clock", _admin_clock), ("/config", _admin_config)):
        app.router.add_get(ADMIN_PREFIX + path, handler)
        app.router.add_post(ADMIN_PREFIX + path, handler)
    add_archive_routes(app, STATE_KEY)  # data.binance.vision: /data/spot|futures/um/...
    add_ws_routes(app, STATE_KEY)  # kline streams: /ws, /stream, /stream/ws
    return app


async def start_site(state: SandboxState, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Listen on host:port (0 = ephemeral) and return the runner and the base URL."""
    runner = web.AppRunner(
        make_app(state), access_log=None, handle_signals=False, shutdown_timeout=0.5
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}"


# ---------------------------------------------------------------------------- in-process
class SandboxExchange:
    """A sandbox served from a background thread of this process.

    >>> with SandboxExchange(SandboxConfig()) as sx:
    ...     ex = ccxt.binance(sx.ccxt_config())
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        """`wallclock` drives rate-limit windows and bans (tests may pass a fake one)."""
        self.state = SandboxState(config, wallclock=wallclock)
        self.host, self._port = host, port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("sandbox is not running; call start() first")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, timeout_s: float = 10.0) -> str:
        """Start serving; returns the base URL `http://127.0.0.1:PORT`."""
        if self._thread is not None:
            return self.url
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:
                errors.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="sandbox-exchange", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s) or errors:
            self._thread = None
            raise RuntimeError(f"sandbox failed to start: {errors[0] if errors else 'timeout'}")
        return self.url

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        runner, self._url = await start_site(self.state, self.host, self._port)
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        self._thread, self._loop, self._stop, self._url = None, None, None, None

    def __enter__(self) -> SandboxExchange:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # conveniences mirroring the admin API
    def ccxt_config(
        self, *, market_types: tuple[str, ...] = ("spot",), **overrides: Any
    ) -> dict[str, Any]:
        return ccxt_config(self.url, market_types=market_types, **overrides)

    def bybit_ccxt_config(
        self, *, market_types: tuple[str, ...] = ("spot",), **overrides: Any
    ) -> dict[str, Any]:
        return bybit_ccxt_config(self.url, market_types=market_types, **overrides)

    def configure(self, **knobs: Any) -> SandboxConfig:
        return self.state.configure(knobs)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def reset(self) -> None:
        self.state.reset()

    def set_clock(
        self,
        *,
        now: float | None = None,
        offset_s: float | None = None,
        advance_s: float | None = None,
        real: bool = False,
    ) -> dict[str, object]:
        body = clock_request(now=now, offset_s=offset_s, advance_s=advance_s, real=real)
        self.state.clock.apply(body)
        return self.state.clock.state()
