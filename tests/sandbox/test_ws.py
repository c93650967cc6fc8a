"""Binance-compatible kline WebSocket streams (`sandbox/ws.py`), over real sockets.

Each test builds its own aiohttp app (`web.Application` + `add_ws_routes`, or `make_app`
when it needs the REST API or the admin clock too), serves it on 127.0.0.1:0 and talks to
it with aiohttp's WebSocket client or real ccxt.pro binance, all in one `asyncio.run`.
Frozen-clock tests move the sandbox clock in-process (`state.clock`) or over the admin
API; the real-clock test shifts the clock so a minute closes ~1.2 s after it starts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import ccxt
import ccxt.pro
import numpy as np
import pytest
from aiohttp import WSMsgType, web

from sandbox import SandboxConfig, SandboxState, expected_bars
from sandbox.bars import generate_bars
from sandbox.server import STATE_KEY, make_app
from sandbox.ws import WS_KEY, WsHub, WsSettings, add_ws_routes, ccxt_pro_config
from sandbox.ws_klines import parse_stream

T0 = 1_699_999_980  # a minute boundary (2023-11-14 22:13:00 UTC)
NOW = T0 + 30.5  # frozen: 30.5 s into the T0 bar
KLINE_KEYS = ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]
QUIET_S = 0.12  # > 5 polls: long enough for a duplicate to show up
Msg = dict[str, Any]


# --------------------------------------------------------------------------- harness
@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    ws: str  # ws://127.0.0.1:PORT
    app: web.Application
    state: SandboxState
    hub: WsHub


@asynccontextmanager
async def serve(
    config: SandboxConfig, *, settings: WsSettings | None = None, rest: bool = False
) -> AsyncIterator[Served]:
    state = SandboxState(config)
    if rest:  # REST + admin clock too (make_app may already wire the streams: idempotent)
        app = make_app(state)
    else:
        app = web.Application()
        app[STATE_KEY] = state
    add_ws_routes(app, STATE_KEY, settings=settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app, state, app[WS_KEY])
    finally:
        await runner.cleanup()


def run(body: Callable[[], Coroutine[Any, Any, None]], timeout_s: float = 20.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), timeout_s)

    asyncio.run(bounded())


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 2.0) -> Msg:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == WSMsgType.TEXT, f"socket ended: {msg}"
    data: Msg = json.loads(msg.data)
    return data


async def read_until(
    ws: aiohttp.ClientWebSocketResponse, done: Callable[[Msg], bool], timeout: float = 3.0
) -> list[Msg]:
    """Messages up to and including the first one `done` accepts."""
    out: list[Msg] = []
    deadline = time.monotonic() + timeout
    while True:
        out.append(await recv(ws, max(0.01, deadline - time.monotonic())))
        if done(out[-1]):
            return out


async def read_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[Msg]:
    """Every message arriving within `seconds`."""
    out: list[Msg] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(await recv(ws, left))
        except TimeoutError:
            break
    return out


def klines(msgs: list[Msg], *, closed: bool | None = None, stream: str | None = None) -> list[Msg]:
    """The `k` objects of kline events (unwrapping combined payloads)."""
    out = []
    for m in msgs:
        if "stream" in m and "data" in m:
            if stream is not None and m["stream"] != stream:
                continue
            m = m["data"]
        if m.get("e") != "kline" or (closed is not None and m["k"]["x"] is not closed):
            continue
        out.append(m["k"])
    return out


def assert_closed_equal(
    ks: list[Msg], symbol: str, interval_s: int, start: int, end: int, cfg: SandboxConfig
) -> None:
    """Closed klines equal the oracle bars opening in [start, end), in order, once each."""
    exp = expected_bars(symbol, interval_s, start, end, cfg)
    assert [k["t"] // 1000 for k in ks] == exp["ts"].tolist()
    assert all(k["x"] is True for k in ks)
    for col, key in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c"), ("volume", "v")):
        assert [float(k[key]) for k in ks] == exp[col].tolist(), col


def is_kline(t: int, *, x: bool | None = None) -> Callable[[Msg], bool]:
    def match(m: Msg) -> bool:
        ks = klines([m])
        return bool(ks) and ks[0]["t"] == t * 1000 and (x is None or ks[0]["x"] is x)

    return match


# --------------------------------------------------------------------------- payload
def test_stream_names() -> None:
    s = parse_stream("btcusdt@kline_1m")
    assert s is not None and (s.market_id, s.interval, s.interval_s) == ("BTCUSDT", "1m", 60)
    for bad in ("BTCUSDT@kline_1m", "btcusdt@trade", "btcusdt@kline_1M", "btcusdt@kline_7m", "0"):
        assert parse_stream(bad) is None


def test_payload_is_binance_kline_with_rest_values() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        async with (
            serve(cfg, rest=True) as sx,
            aiohttp.ClientSession() as http,
            http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m") as ws,
        ):
            first = await recv(ws)
            assert list(first) == ["e", "E", "s", "k"]
            assert (first["e"], first["E"], first["s"]) == ("kline", int(NOW * 1000), "BTCUSDT")
            k = first["k"]
            assert list(k) == KLINE_KEYS
            assert (k["t"], k["T"], k["i"], k["x"], k["B"]) == (
                T0 * 1000,
                T0 * 1000 + 59_999,
                "1m",
                False,
                "0",
            )
            assert k["L"] - k["f"] + 1 == k["n"] > 0
            async with http.get(
                sx.url + "/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m"}
            ) as resp:
                forming = (await resp.json())[-1]  # REST's forming bar at the same instant
            assert forming[0] == k["t"]
            rest_fields = [k[f] for f in ("o", "h", "l", "c", "v", "T", "q", "n", "V", "Q")]
            assert rest_fields == forming[1:11]

            sx.state.clock.advance(120)
            sx.hub.poke()
            msgs = await read_until(ws, is_kline(T0 + 60, x=True))
            closed = klines(msgs, closed=True)
            query = {"symbol": "BTCUSDT", "interval": "1m", "startTime": str(T0 * 1000)}
            async with http.get(sx.url + "/api/v3/klines", params=query) as resp:
                rows = (await resp.json())[:2]
            assert len(closed) == 2
            for k, row in zip(closed, rows, strict=True):
                assert [k[f] for f in ("t", "o", "h", "l", "c", "v")] == row[:6]
                assert [k[f] for f in ("T", "q", "n", "V", "Q")] == row[6:11]
            assert all(m["E"] == int((NOW + 120) * 1000) for m in msgs if m["k"]["x"])

    run(body)


# --------------------------------------------------------------------------- timing
def test_frozen_clock_advances_send_every_closed_bar_once_in_order() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        async with serve(cfg) as sx, aiohttp.ClientSession() as http:
            async with http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m") as ws:
                msgs = [await recv(ws)]
                # small steps, a no-op, a multi-bar jump; half poked, half left to the poll
                for step, poke in ((20, True), (10, False), (29, True), (0, False), (181, False)):
                    sx.state.clock.advance(step)
                    if poke:
                        sx.hub.poke()
                    msgs += await read_for(ws, QUIET_S)
                sx.state.clock.advance(300)  # 5 more minutes at once
                msgs += await read_until(ws, is_kline(T0 + 540, x=False))
                msgs += await read_for(ws, QUIET_S)
                end = int(sx.state.clock.now_s())
            closed = klines(msgs, closed=True)
            assert_closed_equal(closed, "BTC/USDT", 60, T0, end - 60, cfg)
            assert len(closed) == 9
            # a bar is updated (x:false) only before its closed message, never after
            done: set[int] = set()
            for k in klines(msgs):
                assert k["t"] not in done
                if k["x"]:
                    done.add(k["t"])
            assert sx.hub.stats()["closed_bars_sent"] == 9

    run(body)


def test_admin_clock_advance_over_http_sends_the_minutes_passed() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        async with serve(cfg, rest=True) as sx, aiohttp.ClientSession() as http:
            async with http.ws_connect(sx.ws + "/stream?streams=ethusdt@kline_1m") as ws:
                await recv(ws)
                async with http.post(sx.url + "/sandbox/clock", json={"advance_s": 300}) as r:
                    assert r.status == 200
                msgs = await read_until(ws, is_kline(T0 + 240, x=True), timeout=1.0)
                msgs += await read_for(ws, QUIET_S)
            assert all(m["stream"] == "ethusdt@kline_1m" for m in msgs)
            assert_closed_equal(klines(msgs, closed=True), "ETH/USDT", 60, T0, T0 + 300, cfg)

    run(body)


def test_real_clock_closed_bar_arrives_right_after_close() -> None:
    wall = time.time()
    offset = 60 - wall % 60 - 1.2  # sandbox clock 1.2 s before a minute boundary
    cfg = SandboxConfig(clock_offset_s=offset)

    async def body() -> None:
        async with serve(cfg) as sx, aiohttp.ClientSession() as http:
            clock = sx.state.clock
            start = clock.now_s()
            boundary = round(start + 1.2)
            assert boundary % 60 == 0
            streams = "btcusdt@kline_1m/btcusdt@kline_1s"
            async with http.ws_connect(f"{sx.ws}/stream?streams={streams}") as ws:
                msgs: list[Msg] = []
                arrival: dict[tuple[str, int], int] = {}  # closed (stream, t) -> receipt ms
                while True:
                    m = await recv(ws, timeout=3.0)
                    msgs.append(m)
                    k = m["data"]["k"]
                    if k["x"]:
                        arrival[(m["stream"], k["t"])] = clock.now_ms()
                        if m["stream"] == "btcusdt@kline_1m":
                            break
            t = boundary - 60
            one_m = klines(msgs, closed=True, stream="btcusdt@kline_1m")
            assert_closed_equal(one_m, "BTC/USDT", 60, t, boundary, cfg)
            lag_ms = arrival[("btcusdt@kline_1m", t * 1000)] - boundary * 1000
            event_lag_ms = msgs[-1]["data"]["E"] - boundary * 1000
            print(f"1m close -> message: {lag_ms} ms at the client (E - close {event_lag_ms} ms)")
            assert 0 <= event_lag_ms <= lag_ms < 300
            # the 1s bars closed meanwhile: in order, once, each right after its close
            one_s = klines(msgs, closed=True, stream="btcusdt@kline_1s")
            assert len(one_s) >= 1
            first = one_s[0]["t"] // 1000
            assert_closed_equal(one_s, "BTC/USDT", 1, first, first + len(one_s), cfg)
            lags = [arrival[("btcusdt@kline_1s", k["t"])] - (k["t"] + 1000) for k in one_s]
            assert all(0 <= lag < 300 for lag in lags), lags
            # forming updates of the 1m bar: x:false, every ~250 ms, values as at E
            updates = [m["data"] for m in msgs if m["stream"].endswith("1m")][:-1]
            assert len(updates) >= 3 and not any(u["k"]["x"] for u in updates)
            gaps = np.diff([u["E"] for u in updates])
            assert all(200 <= g <= 400 for g in gaps), gaps
            market = cfg.market_for("BTC/USDT")
            for u in updates:
                bars = generate_bars(market, 60, np.array([t], np.int64), cfg, u["E"])
                assert float(u["k"]["c"]) == bars.close[0] / 1e8
                assert float(u["k"]["v"]) == bars.volume[0] / 1e8

    run(body)


def test_forming_updates_every_update_ms() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        async with (
            serve(cfg, settings=WsSettings(update_ms=40)) as sx,
            aiohttp.ClientSession() as http,
            http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m") as ws,
        ):
            msgs = await read_for(ws, 0.4)
            assert 6 <= len(msgs) <= 12, len(msgs)
            assert {(k["t"], k["x"], k["c"]) for k in klines(msgs)} == {
                (T0 * 1000, False, msgs[0]["k"]["c"])
            }

    run(body)


# --------------------------------------------------------------------------- shaping
def test_gap_bars_send_nothing() -> None:
    gap = [T0 + 60, T0 + 180]  # the T0+60 and T0+120 bars do not exist
    cfg = SandboxConfig(frozen_now_s=NOW, gaps={"BTC/USDT": [gap]})

    async def body() -> None:
        async with (
            serve(cfg, settings=WsSettings(update_ms=20)) as sx,
            aiohttp.ClientSession() as h,
        ):
            async with h.ws_connect(sx.ws + "/ws/btcusdt@kline_1m") as ws:
                msgs = [await recv(ws)]
                sx.state.clock.advance(60)  # into the gap: T0 closes, nothing forms
                sx.hub.poke()
                msgs += await read_until(ws, is_kline(T0, x=True))
                assert await read_for(ws, QUIET_S) == []
                sx.state.clock.advance(120)  # T0+180 forms
                msgs += await read_until(ws, is_kline(T0 + 180, x=False))
                sx.state.clock.advance(120)
                msgs += await read_until(ws, is_kline(T0 + 300, x=False))
            assert not any(gap[0] <= k["t"] // 1000 < gap[1] for k in klines(msgs))
            closed = klines(msgs, closed=True)
            assert [k["t"] // 1000 for k in closed] == [T0, T0 + 180, T0 + 240]
            assert_closed_equal(closed, "BTC/USDT", 60, T0, T0 + 300, cfg)

    run(body)


def test_publish_delay_holds_the_closed_bar_like_rest() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW, publish_delay_s=5)

    async def rest_has(http: aiohttp.ClientSession, url: str, t: int) -> bool:
        query = {"symbol": "BTCUSDT", "interval": "1m", "startTime": str(t * 1000), "limit": "1"}
        async with http.get(url + "/api/v3/klines", params=query) as resp:
            rows = await resp.json()
        return bool(rows) and rows[0][0] == t * 1000

    async def body() -> None:
        async with serve(cfg, rest=True) as sx, aiohttp.ClientSession() as http:
            async with http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m") as ws:
                await recv(ws)
                sx.state.clock.advance(34)  # T0+64.5: T0 closed 4.5 s ago, not published
                sx.hub.poke()
                late = klines(await read_for(ws, 0.3))
                assert late and all(k["t"] == T0 * 1000 and not k["x"] for k in late)
                assert not await rest_has(http, sx.url, T0)
                exp = expected_bars("BTC/USDT", 60, T0, T0 + 60, cfg)
                assert float(late[-1]["c"]) == exp["close"][0]  # final values, x:false
                sx.state.clock.advance(1)  # T0+65.5: published
                sx.hub.poke()
                msgs = await read_until(ws, is_kline(T0 + 60, x=False))
                assert await rest_has(http, sx.url, T0)
            closed = klines(msgs, closed=True)
            assert_closed_equal(closed, "BTC/USDT", 60, T0, T0 + 60, cfg)
            assert klines(msgs)[-1]["t"] == (T0 + 60) * 1000

    run(body)


def test_down_refuses_handshakes_and_closes_sockets() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        async with serve(cfg) as sx, aiohttp.ClientSession() as http:
            ws = await http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m")
            await recv(ws)
            sx.state.configure({"down": True})
            msg = await ws.receive(timeout=1.0)
            while msg.type == WSMsgType.TEXT:
                msg = await ws.receive(timeout=1.0)
            assert msg.type == WSMsgType.CLOSE and msg.data == 1001
            await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m")
            assert err.value.status == 503
            sx.state.configure({"down": False})
            async with http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m") as ws2:
                await recv(ws2)
            stats = sx.hub.stats()
            assert stats["closed_by_down"] == 1
            assert stats["refusals_by_reason"] == {"down": 1}
            assert stats["connections"] == 2

    run(body)


# --------------------------------------------------------------------------- faults
async def _dropped(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """Read until the socket ends; True when it ended without a close frame."""
    while True:
        msg = await ws.receive(timeout=2.0)
        if msg.type != WSMsgType.TEXT:
            return msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)


def test_drop_in_process_and_over_admin_api() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        async with serve(cfg) as sx, aiohttp.ClientSession() as http:
            a = await http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m")
            b = await http.ws_connect(sx.ws + "/ws/ethusdt@kline_1m")
            await recv(a)
            await recv(b)
            assert sx.hub.drop_all() == 2  # in-process, on the loop
            assert await _dropped(a) and await _dropped(b)
            c = await http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m")
            await recv(c)
            assert await asyncio.to_thread(sx.hub.drop_all) == 1  # from another thread
            assert await _dropped(c)
            d = await http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m")
            await recv(d)
            async with http.post(sx.url + "/sandbox/ws/drop") as resp:
                assert await resp.json() == {"dropped": 1}
            assert await _dropped(d)
            for ws in (a, b, c, d):
                await ws.close()
            async with http.get(sx.url + "/sandbox/ws/stats") as resp:
                stats = await resp.json()
            assert stats["drops"] == 4 and stats["drops_by_reason"] == {"admin": 4}
            assert stats["connections"] == 4 and stats["open_connections"] == 0

    run(body)


def test_refuse_connections_and_drop_after_messages() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        async with (
            serve(cfg, settings=WsSettings(update_ms=10)) as sx,
            aiohttp.ClientSession() as h,
        ):
            url = sx.ws + "/ws/btcusdt@kline_1m"
            async with h.post(sx.url + "/sandbox/ws/config", json={"refuse_connections": 2}) as r:
                assert (await r.json())["refuse_connections"] == 2
            for _ in range(2):
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await h.ws_connect(url)
                assert err.value.status == 503
            async with h.ws_connect(url) as ws:
                await recv(ws)
            async with h.post(sx.url + "/sandbox/ws/config", json={"drop_after_messages": 3}) as r:
                assert r.status == 200
            async with h.post(sx.url + "/sandbox/ws/config", json={"bogus": 1}) as r:
                assert r.status == 400
            async with h.ws_connect(url) as ws:
                got = 0
                while (msg := await ws.receive(timeout=2.0)).type == WSMsgType.TEXT:
                    got += 1
                assert got == 3 and msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
            sx.hub.configure({"drop_after_messages": None})
            sx.hub.refuse_next(1)
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await h.ws_connect(url)
            stats = sx.hub.stats()
            assert stats["refusals_by_reason"] == {"refuse_connections": 3}
            assert stats["drops_by_reason"] == {"drop_after_messages": 1}
            assert stats["connections"] == 2

    run(body)


# --------------------------------------------------------------------------- protocol
def test_live_methods_and_combined_property() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        async with (
            serve(cfg, settings=WsSettings(update_ms=20)) as sx,
            aiohttp.ClientSession() as http,
            http.ws_connect(sx.ws + "/ws/0") as ws,  # ccxt.pro's URL: "0" is ignored
        ):
            assert await read_for(ws, QUIET_S) == []
            streams = ["btcusdt@kline_1m", "ethusdt@kline_5m"]
            await ws.send_json({"method": "SUBSCRIBE", "params": streams, "id": 1})
            assert await recv(ws) == {"result": None, "id": 1}  # before any kline
            msgs = await read_for(ws, 0.1)
            assert {(k["s"], k["i"]) for k in klines(msgs)} == {
                ("BTCUSDT", "1m"),
                ("ETHUSDT", "5m"),
            }
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
            reply = (await read_until(ws, lambda m: m.get("id") == 2))[-1]
            assert reply == {"result": streams, "id": 2}
            await ws.send_json({"method": "UNSUBSCRIBE", "params": [streams[1]], "id": 3})
            await read_until(ws, lambda m: m.get("id") == 3)
            assert {k["s"] for k in klines(await read_for(ws, 0.1))} == {"BTCUSDT"}
            await ws.send_json({"method": "GET_PROPERTY", "params": ["combined"], "id": 4})
            assert (await read_until(ws, lambda m: m.get("id") == 4))[-1]["result"] is False
            await ws.send_json({"method": "SET_PROPERTY", "params": ["combined", True], "id": 5})
            await read_until(ws, lambda m: m.get("id") == 5)
            wrapped = await recv(ws)
            assert wrapped["stream"] == "btcusdt@kline_1m" and wrapped["data"]["e"] == "kline"
            errors = [
                ("{not json", 3),
                (json.dumps({"method": "PING", "id": 6}), 2),
                (json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}), 2),
                (json.dumps({"method": "GET_PROPERTY", "params": ["nope"], "id": 8}), 0),
                (json.dumps({"method": "SET_PROPERTY", "params": ["combined", 1], "id": 9}), 1),
                (json.dumps({"method": "SUBSCRIBE", "params": [], "id": -1}), 2),
            ]
            for text, code in errors:
                await ws.send_str(text)
                reply = (await read_until(ws, lambda m: "error" in m or "result" in m))[-1]
                assert reply["error"]["code"] == code, (text, reply)
            await ws.send_json({"method": "SUBSCRIBE", "params": ["dogeusdt@kline_1m"], "id": 10})
            assert (await read_until(ws, lambda m: m.get("id") == 10))[-1]["result"] is None
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 11})
            reply = (await read_until(ws, lambda m: m.get("id") == 11))[-1]
            assert reply["result"] == ["btcusdt@kline_1m", "dogeusdt@kline_1m"]
            # an unlisted symbol is accepted (as Binance does) but never sends anything
            assert {m["data"]["s"] for m in await read_for(ws, 0.1)} == {"BTCUSDT"}

    run(body)


# --------------------------------------------------------------------------- ccxt.pro
def test_ccxt_pro_watch_ohlcv_matches_the_oracle_and_reconnects() -> None:
    cfg = SandboxConfig(frozen_now_s=NOW)

    async def body() -> None:
        # forming updates only on subscribe and after a close: the drop below must find
        # the next watch pending
        async with serve(cfg, settings=WsSettings(update_ms=60_000), rest=True) as sx:
            # spot + linear: BTCUSDT is ambiguous, ccxt.pro must see a spot URL (/stream/ws)
            ex = ccxt.pro.binance(ccxt_pro_config(sx.url, market_types=("spot", "linear")))
            try:
                first = await ex.watch_ohlcv("BTC/USDT", "1m")
                market = cfg.market_for("BTC/USDT")
                forming = generate_bars(market, 60, np.array([T0], np.int64), cfg, int(NOW * 1000))
                assert first[-1] == [
                    T0 * 1000,
                    forming.open[0] / 1e8,
                    forming.high[0] / 1e8,
                    forming.low[0] / 1e8,
                    forming.close[0] / 1e8,
                    forming.volume[0] / 1e8,
                ]
                sx.state.clock.advance(300)
                sx.hub.poke()
                rows: dict[int, list[float]] = {}
                while (T0 + 300) * 1000 not in rows:
                    for row in await ex.watch_ohlcv("BTC/USDT", "1m"):
                        rows[row[0]] = row
                exp = expected_bars("BTC/USDT", 60, T0, T0 + 300, cfg)
                got = np.array([rows[t * 1000] for t in exp["ts"].tolist()])
                assert got[:, 0].tolist() == (exp["ts"] * 1000).tolist()
                for i, col in enumerate(("open", "high", "low", "close", "volume"), start=1):
                    assert got[:, i].tolist() == exp[col].tolist(), col
                # a dropped socket fails the pending watch; the next watch reconnects
                assert sx.hub.open_connections == 1
                pending = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                await asyncio.sleep(0.05)
                assert not pending.done()
                sx.hub.drop_all()
                with pytest.raises(ccxt.NetworkError):
                    await pending
                sx.state.clock.advance(60)
                again: dict[int, list[float]] = {}
                while (T0 + 360) * 1000 not in again:
                    for row in await ex.watch_ohlcv("BTC/USDT", "1m"):
                        again[row[0]] = row
                assert sx.hub.stats()["connections"] == 2
                opens = [s["streams"] for s in sx.hub.stats()["open"]]
                assert opens == [["btcusdt@kline_1m"]]
            finally:
                await ex.close()

    run(body)


def test_add_ws_routes_twice_only_applies_settings() -> None:
    app = web.Application()
    app[STATE_KEY] = SandboxState(SandboxConfig(frozen_now_s=NOW))
    add_ws_routes(app, STATE_KEY)
    routes = len(app.router.routes())
    add_ws_routes(app, STATE_KEY, settings=WsSettings(update_ms=40, drop_after_messages=2))
    assert len(app.router.routes()) == routes
    assert app[WS_KEY].settings == WsSettings(update_ms=40, drop_after_messages=2)
    with pytest.raises(ValueError):
        app[WS_KEY].configure({"update_ms": 0})


def test_the_sandbox_itself_serves_the_streams() -> None:
    """`SandboxExchange` (and so `python -m sandbox`) routes the kline streams."""
    from sandbox import SandboxExchange

    t0 = 1_700_000_040  # a minute boundary
    config = SandboxConfig(frozen_now_s=t0 + 30)
    with SandboxExchange(config) as sx:
        ws_url = sx.url.replace("http://", "ws://") + "/ws/btcusdt@kline_1m"

        async def body() -> None:
            async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
                first = klines(await read_until(ws, is_kline(t0)))[-1]
                assert first["x"] is False and first["s"] == "BTCUSDT"
                sx.set_clock(now=t0 + 61)
                closed = klines(await read_until(ws, is_kline(t0, x=True)), closed=True)
                assert_closed_equal(closed, "BTC/USDT", 60, t0, t0 + 60, config)

        run(body)
