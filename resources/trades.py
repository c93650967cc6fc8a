"""Trades of a window through ccxt (`fetch_trades`, Binance's aggTrades): groundwork of the
`trades:` nodes and of trades -> bars repair (`core.trades.bars_from_trades`).

Paging by id, not by time: a time-bounded Binance request may answer the *last* `limit`
trades of its range, so only the first trade is found by time, in a span narrow enough
to hold fewer than `limit` trades (halved until it does), and every page after it starts
at the id after the last one received (`fromId`) until a trade at or after the window's
end (or the exchange's newest trade) is reached. Trades are kept once per id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from seamless_assets.core.frame import Range

if TYPE_CHECKING:
    from .exchange import ExchangeClient

log = logging.getLogger(__name__)
TRADES_PAGE = 1000  # binance's largest aggTrades page
RAW_FIELDS = ("id", "timestamp", "price", "amount", "side")  # what conformance reads
FIRST_SPAN_MS = 60_000  # the first trade is looked for a minute at a time
PROBE_SPAN_MS = 3_600_000  # ... in the first hour a one-trade probe finds busy (binance's
# widest time-bounded aggTrades request): an empty window costs a request per hour


@dataclass(frozen=True)
class TradeRows:
    """Trades in id order: `id`, `ts_ms`, `price`, `amount` (base units). `raw`: ccxt's
    trades as received (their unified fields, `RAW_FIELDS`: the exchange's own `info`
    would double a day's memory), those in the window and those whose time is
    unreadable, for conformance (`core.trade_rows.conform_trades`) to keep or flag."""

    id: npt.NDArray[np.int64]
    ts_ms: npt.NDArray[np.int64]
    price: npt.NDArray[np.float64]
    amount: npt.NDArray[np.float64]
    requests: int
    raw: tuple[dict[str, Any], ...] = ()

    def __len__(self) -> int:
        return len(self.id)


async def fetch_trades(
    client: ExchangeClient, symbol: str, window: Range, page: int = TRADES_PAGE
) -> TradeRows:
    """Every trade of `symbol` with time in `window` (epoch s, half-open)."""
    await client.check_symbol(symbol)
    start_ms, end_ms = window.start * 1000, window.end * 1000
    found: dict[int, tuple[int, float, float]] = {}
    raw: list[dict[str, Any]] = []
    requests = 0

    async def call(
        since: int | None, params: dict[str, Any], limit: int = page
    ) -> list[dict[str, Any]]:
        nonlocal requests
        requests += 1
        trades: list[dict[str, Any]] = await client.request(
            f"fetch_trades {symbol} {window}",
            client.exchange.fetch_trades,
            symbol,
            since=since,
            limit=limit,
            params=params,
        )
        return trades

    def keep(trades: list[dict[str, Any]]) -> None:
        for t in trades:
            ts = t.get("timestamp")
            if not isinstance(ts, int) or start_ms <= ts < end_ms:
                raw.append({field: t.get(field) for field in RAW_FIELDS})
            if isinstance(ts, int) and start_ms <= ts < end_ms:
                try:  # what cannot be read is conformance's to flag, from `raw`
                    found[int(t["id"])] = (ts, float(t["price"]), float(t["amount"]))
                except (KeyError, TypeError, ValueError):
                    continue

    # the first hour holding a trade (a time-bounded request answers its range's LAST
    # trades, so one trade tells whether the hour has any)
    cursor = start_ms
    while cursor < end_ms and not await call(
        cursor, {"until": min(cursor + PROBE_SPAN_MS, end_ms) - 1}, limit=1
    ):
        cursor += PROBE_SPAN_MS
    # the first trade: the earliest span from there holding fewer than a page
    span = FIRST_SPAN_MS
    first: int | None = None
    while first is None and cursor < end_ms:
        until = min(cursor + span, end_ms)
        trades = await call(cursor, {"until": until - 1})
        if len(trades) >= page and span > 1:
            span //= 2  # maybe the span's last trades only: look at less of it
            continue
        if len(trades) >= page:  # a full page in one millisecond: earlier ones may be unseen
            log.warning("%s: %d+ trades at %d ms; the first may be missed", symbol, page, cursor)
        keep(trades)
        if trades:
            first = max(int(t["id"]) for t in trades)
        cursor, span = until, FIRST_SPAN_MS
    # then by id, page after page, until the window's end or the newest trade
    while first is not None:
        trades = await call(None, {"fromId": first + 1})
        keep(trades)
        if len(trades) < page or max(int(t["timestamp"]) for t in trades) >= end_ms:
            break
        first = max(int(t["id"]) for t in trades)
    ids = sorted(found)
    return TradeRows(
        np.array(ids, dtype=np.int64),
        np.array([found[i][0] for i in ids], dtype=np.int64),
        np.array([found[i][1] for i in ids], dtype=np.float64),
        np.array([found[i][2] for i in ids], dtype=np.float64),
        requests,
        tuple(raw),
    )
