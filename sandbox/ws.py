"""Binance-compatible kline WebSocket streams on the sandbox clock, with socket faults.

Wiring: `add_ws_routes(app, STATE_KEY)` (idempotent) registers

* `GET /ws` and `/ws/<stream>[/<stream>...]`: raw streams (payloads unwrapped); unknown
  stream names in the path are ignored, as Binance does (ccxt.pro connects to `/ws/0`);
* `GET /stream?streams=<a>/<b>`: combined streams (`{"stream": name, "data": payload}`);
* `GET /stream/ws[/...]`: the same as `/ws`. Point ccxt.pro at this one
  (`ccxt_ws_urls`): ccxt.pro binance tells a spot socket from a futures one by `/stream`
  in its URL (`is_spot_url`), which matters once linear markets are loaded too;
* on every socket, Binance's live methods: `SUBSCRIBE` / `UNSUBSCRIBE` (`{"result": null,
  "id": ..}`), `LIST_SUBSCRIPTIONS`, `SET_PROPERTY` / `GET_PROPERTY` `combined`; errors
  as `{"error": {"code": .., "msg": ..}, "id": ..}` (codes 0-3 as Binance's);
* admin: `GET /sandbox/ws/stats`, `POST /sandbox/ws/reset` (counters), `POST
  /sandbox/ws/drop` (abort every open stream socket now: no close frame),
  `GET|POST /sandbox/ws/config` (`WsSettings` knobs: `update_ms`, `poll_ms`,
  `ping_interval_s`, `drop_after_messages`, `refuse_connections`).

Streams: `<symbol lower>@kline_<interval>` of the spot markets (`ws_klines.py` says which
bar is sent when). A forming bar is updated every `update_ms` (`"x": false`); a closed bar
is sent as soon as the sandbox clock passes its close (plus `publish_delay_s`), then the
next bar's first update; `E` is the sandbox instant the values were computed for (a
closed bar's `E - close` is its publication lag: ~1-3 ms with a running clock). The
sender of each socket sleeps until the next due instant when the clock runs, and re-reads
the clock at least every `poll_ms`, so clock changes made through the admin API (a frozen
clock advanced by N bars) are seen within `poll_ms`; in-process callers may
`WsHub.poke()` instead of waiting. Each bar's closed message goes out once per
subscription, in order, however far the clock jumps (in batches of `CLOSED_BATCH`).

Shared knobs: `down` refuses new sockets (HTTP 503) and closes open ones (close code
1001); `latency_ms` delays the handshake; `gaps`, `kline_gaps`, `listing_ts`,
`restatements` and `publish_delay_s` shape the bars as on REST (`corruptions` are
REST-only).

Faults (`WsHub`, also in-process, thread-safe): `drop_all()` aborts every socket;
`drop_after_messages: N` aborts each socket after it sent N kline messages;
`refuse_connections: k` (or `refuse_next(k)`) answers the next k handshakes 503.
Counters: `WsHub.stats()` / `GET /sandbox/ws/stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from .bars import Bars, generate_bars
from .config import MarketSpec, SandboxConfig
from .http import add_admin_routes
from .state import SandboxState
from .ws_klines import (
    KlineCursor,
    KlineStream,
    delay_ms_for,
    encode_event,
    kline_event,
    parse_stream,
)

RAW_PATH = "/ws"
COMBINED_PATH = "/stream"
SPOT_ALIAS_PATH = "/stream/ws"  # what `ccxt_ws_urls` hands to ccxt.pro
WS_ADMIN_PREFIX = "/sandbox/ws"
DEFAULT_UPDATE_MS = 250.0
DEFAULT_POLL_MS = 20.0
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_CLOSE_TIMEOUT_S = 2.0  # how long a server-initiated close waits for the client's reply

__all__ = [
    "COMBINED_PATH",
    "RAW_PATH",
    "SPOT_ALIAS_PATH",
    "WS_KEY",
    "WsHub",
    "WsSettings",
    "add_ws_routes",
    "ccxt_pro_config",
    "ccxt_ws_urls",
    "ws_base_url",
]


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class WsSettings:
    """Knobs of the WebSocket streams (separate from `SandboxConfig`)."""

    update_ms: float = DEFAULT_UPDATE_MS  # forming-bar update period
    poll_ms: float = DEFAULT_POLL_MS  # longest sleep between two reads of the clock
    ping_interval_s: float | None = 20.0  # server pings (Binance: every 20 s); None: off
    drop_after_messages: int | None = None  # abort each socket after N kline messages
    refuse_connections: int = 0  # answer the next k handshakes 503

    def updated(self, knobs: dict[str, Any]) -> WsSettings:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(knobs) - names)
        if unknown:
            raise ValueError(f"unknown ws knob(s) {unknown}; known: {sorted(names)}")
        clean: dict[str, Any] = {}
        for key, value in knobs.items():
            if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
                raise ValueError(f"ws knob `{key}` must be a number, got {value!r}")
            if key in ("update_ms", "poll_ms"):
                if value is None or not value > 0:
                    raise ValueError(f"ws knob `{key}` must be > 0 ms, got {value!r}")
                clean[key] = float(value)
            elif key == "ping_interval_s":
                if value is not None and not value > 0:
                    raise ValueError(f"ws knob `{key}` must be > 0 s or null, got {value!r}")
                clean[key] = None if value is None else float(value)
            elif key == "drop_after_messages":
                if value is not None and (int(value) != value or value < 1):
                    raise ValueError(f"`drop_after_messages` must be >= 1 or null, got {value!r}")
                clean[key] = None if value is None else int(value)
            else:  # refuse_connections
                if value is None or int(value) != value or value < 0:
                    raise ValueError(f"`refuse_connections` must be >= 0, got {value!r}")
                clean[key] = int(value)
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- the hub
@dataclass
class _Counters:
    connections: int = 0
    messages_sent: int = 0  # kline messages (closed + forming)
    closed_bars_sent: int = 0
    updates_sent: int = 0
    replies_sent: int = 0  # method replies and errors
    subscriptions: int = 0
    drops: Counter[str] = dataclasses.field(default_factory=Counter)  # by reason
    refusals: Counter[str] = dataclasses.field(default_factory=Counter)  # by reason
    closed_by_down: int = 0


class WsHub:
    """Open stream sockets, settings, faults and counters of one app (`app[WS_KEY]`).
    Public methods are thread-safe (the app may run in another thread's loop)."""

    def __init__(self, settings: WsSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._settings = settings or WsSettings()
        self._conns: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._c = _Counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._markets: tuple[SandboxConfig, dict[str, MarketSpec]] | None = None

    # -------------------------------------------------------------- settings and faults
    @property
    def settings(self) -> WsSettings:
        with self._lock:
            return self._settings

    def configure(self, knobs: dict[str, Any]) -> WsSettings:
        """Replace the named knobs (`WsSettings` fields); returns the new settings."""
        with self._lock:
            self._settings = self._settings.updated(knobs)
            new = self._settings
        self.poke()
        return new

    def refuse_next(self, count: int) -> None:
        """Answer the next `count` handshakes with HTTP 503."""
        self.configure({"refuse_connections": count})

    def drop_all(self, reason: str = "admin") -> int:
        """Abort every open stream socket (TCP closed, no close frame: the client sees an
        abnormal closure, 1006). Returns how many were open. From another thread the
        aborts are scheduled on the app's loop and happen right after."""
        with self._lock:
            conns = list(self._conns.values())
            loop = self._loop
        if not conns or loop is None:
            return 0
        if _running_loop() is loop:
            for conn in conns:
                conn.abort(reason)
        else:
            for conn in conns:
                loop.call_soon_threadsafe(conn.abort, reason)
        return len(conns)

    def poke(self) -> None:
        """Wake every sender now (after an in-process clock change: no `poll_ms` wait)."""
        with self._lock:
            conns = list(self._conns.values())
            loop = self._loop
        if loop is None:
            return
        if _running_loop() is loop:
            for conn in conns:
                conn.wake.set()
        else:
            for conn in conns:
                loop.call_soon_threadsafe(conn.wake.set)

    # -------------------------------------------------------------- counters
    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = self._c
            return {
                "connections": c.connections,
                "open_connections": len(self._conns),
                "messages_sent": c.messages_sent,
                "closed_bars_sent": c.closed_bars_sent,
                "updates_sent": c.updates_sent,
                "replies_sent": c.replies_sent,
                "subscriptions": c.subscriptions,
                "drops": sum(c.drops.values()),
                "drops_by_reason": dict(c.drops),
                "refusals": sum(c.refusals.values()),
                "refusals_by_reason": dict(c.refusals),
                "closed_by_down": c.closed_by_down,
                "settings": self._settings.to_dict(),
                "open": [
                    {"id": cid, "streams": list(conn.subs), "messages": conn.sent}
                    for cid, conn in self._conns.items()
                ],
            }

    def reset(self) -> None:
        """Zero the counters (open sockets and settings stay)."""
        with self._lock:
            self._c = _Counters()

    # -------------------------------------------------------------- internal
    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop

    def _admit(self, down: bool) -> bool:
        """Whether a handshake may proceed; counts the refusal otherwise."""
        with self._lock:
            if down:
                self._c.refusals["down"] += 1
                return False
            if self._settings.refuse_connections > 0:
                left = self._settings.refuse_connections - 1
                self._settings = dataclasses.replace(self._settings, refuse_connections=left)
                self._c.refusals["refuse_connections"] += 1
                return False
            return True

    def _register(self, conn: _Connection) -> int:
        with self._lock:
            cid = next(self._ids)
            self._conns[cid] = conn
            self._c.connections += 1
            return cid

    def _unregister(self, cid: int) -> None:
        with self._lock:
            self._conns.pop(cid, None)

    def _count(self, field: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._c, field, getattr(self._c, field) + n)

    def _count_kline(self, closed: bool) -> None:
        with self._lock:
            self._c.messages_sent += 1
            if closed:
                self._c.closed_bars_sent += 1
            else:
                self._c.updates_sent += 1

    def _count_drop(self, reason: str) -> None:
        with self._lock:
            self._c.drops[reason] += 1

    def _markets_of(self, config: SandboxConfig) -> dict[str, MarketSpec]:
        cached = self._markets
        if cached is None or cached[0] is not config:
            cached = (config, config.markets())
            self._markets = cached
        return cached[1]

    async def _shutdown(self, app: web.Application) -> None:
        with self._lock:
            conns = list(self._conns.values())
        await asyncio.gather(*(c.close(WSCloseCode.GOING_AWAY, b"shutdown") for c in conns))


WS_KEY = web.AppKey("sandbox_ws", WsHub)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# ---------------------------------------------------------------------------- a socket
class _MethodError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


class _Connection:
    """One stream socket: its subscriptions, and the sender task that feeds it."""

    def __init__(
        self,
        hub: WsHub,
        state: SandboxState,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        *,
        combined: bool,
    ) -> None:
        self.hub, self.state, self.ws, self.transport = hub, state, ws, transport
        self.combined = combined
        self.subs: dict[str, KlineCursor] = {}
        self.outbox: deque[str] = deque()
        self.wake = asyncio.Event()
        self.sent = 0  # kline messages sent on this socket
        self.aborted = False
        self.stopping = False
        self._loop = asyncio.get_running_loop()

    # -------------------------------------------------------------- faults / closing
    def abort(self, reason: str) -> None:
        """Close the TCP connection now, without a close frame (runs on the loop)."""
        if self.aborted or self.ws.closed:
            return
        self.aborted = True
        self.hub._count_drop(reason)
        if self.transport is not None:
            self.transport.abort()
        self.wake.set()

    async def close(self, code: int, message: bytes) -> None:
        if self.aborted or self.ws.closed:
            return
        try:
            await self.ws.close(code=code, message=message)
        except Exception:  # the peer vanished meanwhile: nothing left to close
            if self.transport is not None:
                self.transport.close()

    # -------------------------------------------------------------- subscriptions
    def subscribe(self, stream: KlineStream) -> None:
        if stream.name in self.subs:
            return
        cfg = self.state.config
        market = self.hub._markets_of(cfg).get(stream.market_id)
        delay = delay_ms_for(market, cfg) if market is not None else 0
        self.subs[stream.name] = KlineCursor(stream, cfg, self.state.clock.now_ms(), delay)
        self.hub._count("subscriptions")

    def on_text(self, text: str) -> None:
        """Answer one client message (queued before any kline it causes)."""
        req_id: Any = None
        try:
            try:
                req = json.loads(text)
            except ValueError as exc:
                raise _MethodError(3, f"Invalid JSON: {exc}") from exc
            if not isinstance(req, dict):
                raise _MethodError(3, "Invalid JSON: expected an object")
            req_id = req.get("id")
            reply = {"result": self._method(req), "id": req_id}
        except _MethodError as exc:
            reply = {"error": {"code": exc.code, "msg": exc.msg}, "id": req_id}
        self.outbox.append(json.dumps(reply, separators=(",", ":")))
        self.wake.set()

    def _method(self, req: dict[str, Any]) -> Any:
        req_id = req.get("id")
        if isinstance(req_id, bool) or not (
            req_id is None or (isinstance(req_id, int) and req_id >= 0) or isinstance(req_id, str)
        ):
            raise _MethodError(2, "Invalid request: request ID must be an unsigned integer")
        method = req.get("method")
        if method is None:
            raise _MethodError(2, "Invalid request: missing field `method`")
        if method not in METHODS:
            raise _MethodError(
                2, f"Invalid request: unknown variant `{method}`, expected one of {list(METHODS)}"
            )
        params = req.get("params", [])
        if not isinstance(params, list):
            raise _MethodError(2, "Invalid request: `params` must be an array")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            streams: list[KlineStream] = []
            for name in params:
                stream = parse_stream(name) if isinstance(name, str) else None
                if stream is None:
                    raise _MethodError(
                        2, f"Invalid request: invalid stream {name!r} (served: <symbol>@kline_<i>)"
                    )
                streams.append(stream)
            for stream in streams:
                if method == "SUBSCRIBE":
                    self.subscribe(stream)
                else:
                    self.subs.pop(stream.name, None)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            return list(self.subs)
        if not params or not isinstance(params[0], str):
            raise _MethodError(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise _MethodError(0, "Unknown property")
        if method == "GET_PROPERTY":
            return self.combined
        if len(params) != 2 or not isinstance(params[1], bool):
            raise _MethodError(1, "Invalid value type: expected Boolean")
        self.combined = params[1]
        return None

    # -------------------------------------------------------------- the sender
    def _done(self) -> bool:
        return self.aborted or self.stopping or self.ws.closed

    async def run(self) -> None:
        """Send replies and kline events until the socket ends."""
        try:
            while not self._done():
                self.wake.clear()
                while self.outbox and not self._done():
                    await self.ws.send_str(self.outbox.popleft())
                    self.hub._count("replies_sent")
                cfg = self.state.config
                if cfg.down:
                    self.hub._count("closed_by_down")
                    await self.close(WSCloseCode.GOING_AWAY, b"service unavailable")
                    return
                timeout = await self._emit(cfg)
                if self._done():
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.wake.wait()
        except (ConnectionError, RuntimeError):
            pass  # the socket went away under a send: the handler cleans up
        except Exception:
            self.abort("error")
            raise

    async def _emit(self, cfg: SandboxConfig) -> float:
        """Send what is due now; the seconds until something may be due next."""
        settings = self.hub.settings
        clock = self.state.clock
        now_ms = clock.now_ms()
        timeout = settings.poll_ms / 1000.0
        markets = self.hub._markets_of(cfg)
        for name, sub in list(self.subs.items()):
            if self.subs.get(name) is not sub:
                continue  # unsubscribed meanwhile
            market = markets.get(sub.stream.market_id)
            if market is None:  # not listed (yet): nothing exists to send
                sub.rebase(cfg, now_ms, 0)
                continue
            delay = delay_ms_for(market, cfg)
            iv = sub.stream.interval_s
            while len(ts := sub.take_closed(market, cfg, now_ms, delay)):
                bars = generate_bars(market, iv, ts, cfg)
                for i in range(len(ts)):
                    if not await self._send(sub.stream, bars, i, True, now_ms):
                        return 0.0
                sub.next_update = 0.0  # the next bar's first update follows at once
            t = sub.forming(market, cfg, now_ms)
            if t is not None:
                if self._loop.time() >= sub.next_update:
                    bars = generate_bars(market, iv, np.array([t], np.int64), cfg, now_ms)
                    if not await self._send(sub.stream, bars, 0, False, now_ms):
                        return 0.0
                    sub.next_update = self._loop.time() + settings.update_ms / 1000.0
                timeout = min(timeout, sub.next_update - self._loop.time())
            timeout = min(timeout, sub.seconds_to_publish(now_ms, delay) + 0.001)
        return max(timeout, 0.001)

    async def _send(
        self, stream: KlineStream, bars: Bars, i: int, closed: bool, event_ms: int
    ) -> bool:
        """Send one kline event; False once the socket is gone or dropped. `event_ms`
        (`E`) is the sandbox instant the values were computed for."""
        if self._done():
            return False
        event = kline_event(stream, bars, i, closed=closed, event_ms=event_ms)
        await self.ws.send_str(encode_event(stream, event, combined=self.combined))
        self.sent += 1
        self.hub._count_kline(closed)
        limit = self.hub.settings.drop_after_messages
        if limit is not None and self.sent >= limit:
            self.abort("drop_after_messages")
        return not self._done()


# ---------------------------------------------------------------------------- routes
def _stream_names(request: web.Request, combined: bool) -> list[str]:
    raw = request.query.get("streams", "") if combined else request.match_info.get("streams", "")
    return [n for n in raw.split("/") if n]


def add_ws_routes(
    app: web.Application,
    state_key: web.AppKey[SandboxState],
    *,
    settings: WsSettings | None = None,
) -> None:
    """Serve the kline streams and their admin routes on `app`, whose `SandboxState` is
    `app[state_key]`; the `WsHub` goes to `app[WS_KEY]`. A second call on the same app
    (say, after `make_app` wired it) only applies `settings`, when given."""
    if WS_KEY in app:
        if settings is not None:
            app[WS_KEY].configure(settings.to_dict())
        return
    app[WS_KEY] = WsHub(settings)

    async def handle(request: web.Request, combined: bool) -> web.StreamResponse:
        state = request.app[state_key]
        hub = request.app[WS_KEY]
        hub._bind(asyncio.get_running_loop())
        cfg = state.config
        if cfg.latency_ms > 0:
            await asyncio.sleep(cfg.latency_ms / 1000.0)
        if not hub._admit(state.config.down):
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(timeout=_CLOSE_TIMEOUT_S, heartbeat=hub.settings.ping_interval_s)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="WebSocket upgrade expected")
        await ws.prepare(request)
        conn = _Connection(hub, state, ws, request.transport, combined=combined)
        for name in _stream_names(request, combined):
            stream = parse_stream(name)
            if stream is not None:  # Binance ignores what it does not know here
                conn.subscribe(stream)
        cid = hub._register(conn)
        sender = asyncio.create_task(conn.run())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    conn.on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.on_text(msg.data.decode("utf-8", "replace"))
        finally:
            conn.stopping = True
            conn.wake.set()
            try:  # let a server-initiated close (down) finish; stop the sender otherwise
                await asyncio.wait_for(asyncio.shield(sender), _CLOSE_TIMEOUT_S + 1.0)
            except asyncio.CancelledError:
                sender.cancel()
                raise
            except Exception:
                sender.cancel()
            finally:
                hub._unregister(cid)
        return ws

    async def raw(request: web.Request) -> web.StreamResponse:
        return await handle(request, combined=False)

    async def combined(request: web.Request) -> web.StreamResponse:
        return await handle(request, combined=True)

    async def drop(request: web.Request) -> web.Response:
        return web.json_response({"dropped": request.app[WS_KEY].drop_all("admin")})

    for prefix in (RAW_PATH, SPOT_ALIAS_PATH):
        app.router.add_get(prefix, raw)
        app.router.add_get(prefix + "/{streams:.*}", raw)
    app.router.add_get(COMBINED_PATH, combined)
    app.router.add_post(WS_ADMIN_PREFIX + "/drop", drop)
    add_admin_routes(
        app,
        WS_KEY,
        stats=WS_ADMIN_PREFIX + "/stats",
        reset=WS_ADMIN_PREFIX + "/reset",
        config=WS_ADMIN_PREFIX + "/config",
    )
    app.on_shutdown.append(app[WS_KEY]._shutdown)


# ---------------------------------------------------------------------------- clients
def ws_base_url(base_url: str) -> str:
    """`http://127.0.0.1:PORT` -> `ws://127.0.0.1:PORT` (https -> wss)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    return base_url


def ccxt_ws_urls(base_url: str) -> dict[str, str]:
    """ccxt.pro binance `urls.api.ws` entries for spot (and margin) streams."""
    url = ws_base_url(base_url.rstrip("/")) + SPOT_ALIAS_PATH
    return {"spot": url, "margin": url}


def ccxt_pro_config(
    base_url: str, *, market_types: tuple[str, ...] = ("spot",), **overrides: Any
) -> dict[str, Any]:
    """`ccxt.pro.binance` constructor config: the REST config of `server.ccxt_config` plus
    the spot stream URLs (ccxt deep-merges `urls`, so its other ws entries stay)."""
    from .server import ccxt_config  # lazy: server.py may import this module

    config = ccxt_config(base_url, market_types=market_types)
    config["urls"]["api"]["ws"] = ccxt_ws_urls(base_url)
    config.update(overrides)
    return config
