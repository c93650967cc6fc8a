"""Binance kline stream semantics for the sandbox WebSocket (`ws.py`): stream names, the
event payload, and which bar a subscription sends next.

Why separate from the socket code: what a stream emits at a given sandbox instant is a
pure function of (config, subscription cursor, now), so it can be reasoned about (and
tested) without a socket, exactly like the REST klines.

Per subscription a `KlineCursor` holds the open time of the oldest bar whose closed
(`"x": true`) message has not been sent yet. At each sandbox instant `now`:

* a bar is *published* once `(open + interval) * 1000 + publish_delay_ms <= now_ms`
  (the REST klines' rule: a late bar appears on both at the same instant); every existing
  bar from the cursor up to the last published one is sent closed, in order, once, and
  the cursor moves past them (so a clock jump of N bars sends N closed bars);
* the *forming* bar is the oldest existing bar at or after the cursor that has opened:
  normally the bar containing `now`; while a closed bar waits for its publish delay it is
  that bar, with its final values and `"x": false`;
* bars that do not exist (inside a maintenance gap or a kline gap, before listing) send
  nothing.

Values are `generate_bars` output printed as the REST klines print them (8 decimals);
the trade ids `f`/`L` are synthetic (`f` = open time in ms, `L = f + n - 1`; -1 when the
bar has no trade).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .bars import Bars, interval_origin, select_open_times
from .config import INTERVALS, UNITS_PER_ONE, MarketSpec, SandboxConfig

I64 = npt.NDArray[np.int64]

#: Closed bars generated per batch when a clock jump publishes many at once.
CLOSED_BATCH = 1000

_STREAM = re.compile(r"^(?P<symbol>[a-z0-9]+)@kline_(?P<interval>[0-9]+[smhdwM])$")


@dataclass(frozen=True)
class KlineStream:
    """A parsed stream name such as `btcusdt@kline_1m`."""

    name: str
    market_id: str  # `BTCUSDT`
    interval: str  # `1m`
    interval_s: int


def parse_stream(name: str) -> KlineStream | None:
    """The kline stream a Binance stream name denotes, or None when it is not one this
    sandbox serves (another stream type, an upper-case symbol, an unknown interval)."""
    m = _STREAM.match(name)
    if m is None or m["interval"] not in INTERVALS:
        return None
    return KlineStream(name, m["symbol"].upper(), m["interval"], INTERVALS[m["interval"]])


def _dec(units: int) -> str:
    return f"{units // UNITS_PER_ONE}.{units % UNITS_PER_ONE:08d}"


def kline_event(
    stream: KlineStream, bars: Bars, i: int, *, closed: bool, event_ms: int
) -> dict[str, Any]:
    """Binance's kline event for bar `i` of `bars` (field order as Binance sends it)."""
    open_ms = int(bars.open_ms[i])
    trades = int(bars.trades[i])
    first, last = (open_ms, open_ms + trades - 1) if trades > 0 else (-1, -1)
    sym = stream.market_id
    return {
        "e": "kline",
        "E": int(event_ms),
        "s": sym,
        "k": {
            "t": open_ms,
            "T": int(bars.close_ms[i]),
            "s": sym,
            "i": stream.interval,
            "f": first,
            "L": last,
            "o": _dec(int(bars.open[i])),
            "c": _dec(int(bars.close[i])),
            "h": _dec(int(bars.high[i])),
            "l": _dec(int(bars.low[i])),
            "v": _dec(int(bars.volume[i])),
            "n": trades,
            "x": bool(closed),
            "q": _dec(int(bars.quote_volume[i])),
            "V": _dec(int(bars.taker_base[i])),
            "Q": _dec(int(bars.taker_quote[i])),
            "B": "0",
        },
    }


def encode_event(stream: KlineStream, event: dict[str, Any], *, combined: bool) -> str:
    """The text frame: the raw payload, or `{"stream": name, "data": payload}`."""
    body = {"stream": stream.name, "data": event} if combined else event
    return json.dumps(body, separators=(",", ":"))


def published_hi_s(now_ms: int, delay_ms: int, interval_s: int) -> int:
    """Latest open time (s) whose bar is published at `now_ms` (as `serve_klines`)."""
    return (now_ms - delay_ms - interval_s * 1000) // 1000


def delay_ms_for(market: MarketSpec, config: SandboxConfig) -> int:
    return int(config.publish_delay_for(market.key) * 1000)


class KlineCursor:
    """What one subscription of one connection has sent: see the module docstring."""

    def __init__(self, stream: KlineStream, config: SandboxConfig, now_ms: int, delay_ms: int):
        self.stream = stream
        self.next_s = 0
        self.rebase(config, now_ms, delay_ms)
        self.next_update = 0.0  # event-loop time of the next forming update (0: now)

    def _align_down(self, t: int, config: SandboxConfig) -> int:
        iv = self.stream.interval_s
        return t - (t - interval_origin(iv, config)) % iv

    def rebase(self, config: SandboxConfig, now_ms: int, delay_ms: int) -> None:
        """Start at the first bar not yet published at `now_ms` (a new subscription)."""
        hi = published_hi_s(now_ms, delay_ms, self.stream.interval_s)
        self.next_s = self._align_down(hi, config) + self.stream.interval_s

    def take_closed(
        self, market: MarketSpec, config: SandboxConfig, now_ms: int, delay_ms: int
    ) -> I64:
        """Open times (s) of the next bars to send closed (at most `CLOSED_BATCH`, call
        again until empty); the cursor moves past them."""
        iv = self.stream.interval_s
        hi = published_hi_s(now_ms, delay_ms, iv)
        if hi < self.next_s:
            return np.empty(0, np.int64)
        ts = select_open_times(market, iv, config, lo_s=self.next_s, hi_s=hi, limit=CLOSED_BATCH)
        if len(ts) == CLOSED_BATCH:
            self.next_s = int(ts[-1]) + iv
        else:
            self.next_s = self._align_down(hi, config) + iv
        return ts

    def forming(self, market: MarketSpec, config: SandboxConfig, now_ms: int) -> int | None:
        """Open time (s) of the bar to send as forming at `now_ms`, or None."""
        ts = select_open_times(
            market, self.stream.interval_s, config, lo_s=self.next_s, hi_s=now_ms // 1000, limit=1
        )
        return int(ts[0]) if len(ts) else None

    def seconds_to_publish(self, now_ms: int, delay_ms: int) -> float:
        """Sandbox seconds until the cursor's bar is published (gaps ignored: an early
        wake-up finds nothing to send)."""
        due_ms = (self.next_s + self.stream.interval_s) * 1000 + delay_ms
        return (due_ms - now_ms) / 1000.0
