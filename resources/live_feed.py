"""The WebSocket live feed (`seamless.live.ws`, the blueprint's `ccxt.live.pro`): ccxt.pro
`watch_ohlcv` keeps each live node's closed bars in the hot store as the exchange closes
them, so live reads find the newest bar there instead of asking the exchange.

* A bar is taken once it is closed: when the exchange has started the bar after it (the
  newest candle of a stream is the forming one and is never stored: `emit_building_candle`
  is false, a store holds closed bars only). `dedupe_by: ts`: a bar is stored once, the
  first time it is seen closed; later repeats are ignored.
* A dropped socket is reconnected on the `reconnect_backoff_ms` ladder (the last step
  repeats; a message resets it). Meanwhile live reads fall back to polling by themselves
  (`LiveRead` fills missing closed bars over REST). After a reconnect the bars that closed
  while the socket was down are fetched over REST (the stream does not replay them), and
  the candles the old socket left unfinished are never taken: nothing lost, nothing twice.
* Bars go through conformance before the hot store; what it flags or drops is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seamless_assets.config import SeamlessConfig
from seamless_assets.core.conformance import conform
from seamless_assets.core.frame import Range
from seamless_assets.nodes import NodeId

if TYPE_CHECKING:
    import pandas as pd

    from .exchange import ExchangeClient

log = logging.getLogger(__name__)
Store = Callable[[str, "pd.DataFrame"], Awaitable[None]]


@dataclass
class FeedStats:
    """What the feed did, for metadata and tests."""

    messages: int = 0
    stored_bars: int = 0
    caught_up_bars: int = 0
    reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_closed_s: dict[str, int] = field(default_factory=dict)


class LiveFeed:
    """Watches `nodes` (one task each) until cancelled; `store` upserts a canonical frame."""

    def __init__(
        self,
        config: SeamlessConfig,
        nodes: Sequence[NodeId],
        store: Store,
        client_factory: Callable[[str], ExchangeClient],
    ) -> None:
        self.config, self._store = config, store
        # ccxt.pro streams traded candles; mark-price nodes stay with polling
        self.nodes = [n for n in nodes if n.price is None]
        for node in nodes:
            if node.price is not None:
                log.info(
                    "%s: not streamed (no %s-price stream); the live edge polls it",
                    node,
                    node.price,
                )
        self._client_factory = client_factory
        self.ladder_s = [ms / 1000 for ms in config.seamless.live.ws.reconnect_backoff_ms]
        self.stats = FeedStats()
        self._exchanges: dict[str, Any] = {}
        self._stopping = False

    def _pro(self, exchange_id: str) -> Any:
        """The ccxt.pro exchange of an exchange id (one socket pool per exchange)."""
        if exchange_id not in self._exchanges:
            import ccxt.pro

            from .exchange import CREDENTIAL_KEYS, ExchangeSettings, load_market_types

            settings = ExchangeSettings.from_config(self.config, exchange_id)
            public = {k: v for k, v in settings.ccxt_config.items() if k not in CREDENTIAL_KEYS}
            exchange = getattr(ccxt.pro, exchange_id)(public)
            exchange.newUpdates = False  # the stream's whole cache, not only what changed
            load_market_types(exchange, settings)
            self._exchanges[exchange_id] = exchange
        return self._exchanges[exchange_id]

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._watch(node) for node in self.nodes))
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Close the sockets; the watches end instead of reconnecting."""
        self._stopping = True
        exchanges, self._exchanges = list(self._exchanges.values()), {}
        for exchange in exchanges:
            await exchange.close()

    async def _watch(self, node: NodeId) -> None:
        exchange, interval = self._pro(node.exchange), node.interval_s
        node_id, attempt = str(node), 0
        taken_from: int | None = None  # the first bar this socket may give (after a drop)
        while True:
            try:
                candles = await exchange.watch_ohlcv(node.symbol, node.timeframe.code)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ccxt's NetworkError & co: the socket is gone
                if self._stopping:
                    return
                self.stats.reconnects += 1
                self.stats.errors[type(exc).__name__] += 1
                delay = self.ladder_s[min(attempt, len(self.ladder_s) - 1)]
                attempt += 1
                log.warning(
                    "%s: live socket lost (%s); reconnecting in %.1f s", node_id, exc, delay
                )
                await asyncio.sleep(delay)
                taken_from = None
                continue
            attempt = 0
            self.stats.messages += 1
            if not candles:
                continue
            newest = int(candles[-1][0]) // 1000
            last = self.stats.last_closed_s.get(node_id)
            if taken_from is None:  # a new socket: its first candle is where it starts
                taken_from = newest
                if last is not None and newest > last + interval:
                    await self._catch_up(node, Range(last + interval, newest))
                    last = self.stats.last_closed_s.get(node_id)
            closed = [
                c
                for c in candles[:-1]
                if int(c[0]) // 1000 >= taken_from and (last is None or int(c[0]) // 1000 > last)
            ]
            if closed:
                await self._take(node, closed)

    async def _take(self, node: NodeId, rows: list[list[Any]], *, caught_up: bool = False) -> None:
        node_id = str(node)
        result = conform(rows, node.interval_s, "ms", origin_s=node.timeframe.origin_s)
        if result.flags and any(result.flags.values()):
            log.warning("%s: live bars flagged %s", node_id, dict(result.flags))
        frame = result.frame
        if len(frame):
            await self._store(node_id, frame)
            self.stats.last_closed_s[node_id] = int(frame["ts"].max())
            if caught_up:
                self.stats.caught_up_bars += len(frame)
            else:
                self.stats.stored_bars += len(frame)

    async def _catch_up(self, node: NodeId, window: Range) -> None:
        """The bars that closed while the socket was down, over REST."""
        async with self._client_factory(node.exchange) as client:
            fetched = await client.fetch_bars(node.symbol, node.timeframe, window, price=node.price)
        if fetched.rows:
            await self._take(node, sorted(fetched.rows), caught_up=True)
