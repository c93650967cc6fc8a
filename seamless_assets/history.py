"""Where a node's history begins: the open time of the first bar its exchange has.

Discovered once from the exchange (one candle request from `since=0`: exchanges answer
with their oldest candles) and recorded write-once in the artifact store, at
`{node prefix}/history_start.json`. Partitions that end before it are not "missing" for
the checks, gap repair, coverage or snapshots: the exchange has nothing for them.

Why the artifact store: it is the durable record every process shares whatever the hot
store (a QuestDB TTL drops old bars, a DuckDB file is a local cache that can be rebuilt),
and it holds what backtests read, whose snapshots list the partitions they lack from this
start. The value is a fact about the exchange that does not change, so the first recorded
value wins (`put_if_absent`); delete the file to discover it again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .core.frame import iso_utc
from .errors import ExchangeUnavailable
from .nodes import NodeId

if TYPE_CHECKING:  # ccxt loads with the client, not with the sensors that read the start
    from resources.artifacts.base import ArtifactStore
    from resources.exchange import ExchangeClient

HISTORY_START_FILE = "history_start.json"
FIRST_CANDLES = 5  # a few, so one malformed first row does not decide the start
_MIN_PLAUSIBLE_MS = 10**11  # 1973: an open time before this is garbage, not history


def history_start_key(store: ArtifactStore, node: NodeId) -> str:
    return f"{store.segment_prefix(node)}/{HISTORY_START_FILE}"


def history_start_s(store: ArtifactStore, node: NodeId) -> int | None:
    """The recorded open time (epoch s) of `node`'s first bar, None until discovered."""
    data = store.blobs.get(history_start_key(store, node))
    if not data:
        return None
    try:
        return int(json.loads(data)["history_start_s"])
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: treated as unknown and discovered again


def record_history_start(store: ArtifactStore, node: NodeId, start_s: int) -> int:
    """Record `start_s` unless a start is already recorded; the recorded start."""
    record = {"node_id": str(node), "history_start_s": start_s, "history_start": iso_utc(start_s)}
    data = json.dumps(record, sort_keys=True, indent=2).encode() + b"\n"
    store.blobs.put_if_absent(history_start_key(store, node), data)
    recorded = history_start_s(store, node)
    return start_s if recorded is None else recorded


async def first_bar_s(client: ExchangeClient, node: NodeId) -> int | None:
    """Open time (epoch s) of the oldest candle the exchange serves for `node`, None when
    it serves none. Rows with implausible open times (0, garbage) are ignored.

    Asked from `since=0`. Exchanges that answer a range with its *newest* candles (Bybit
    v5: the last `limit` of `[start, end]`) answer that with today's, so when the answer
    reaches up to now one more request asks for any candle before the first one given:
    when there is one, the first candle is bisected (one-candle requests over halving
    spans, ~30 once per node). An answer from years ago costs nothing more."""
    await client.check_symbol(node.symbol)
    now_ms = int((await client.server_now_s()) * 1000)
    opens = await _opens(client, node, 0, now_ms, FIRST_CANDLES)
    if not opens:
        return None
    first_ms, interval_ms = min(opens), node.interval_s * 1000
    # only an answer reaching up to now may be a newest-first one (else: no request more)
    recent = max(opens) >= now_ms - (FIRST_CANDLES + 1) * interval_ms
    if recent and await _opens(client, node, 0, first_ms - 1, 1):
        lo, hi = _MIN_PLAUSIBLE_MS, first_ms  # a candle opens in [lo, hi)
        while hi - lo > interval_ms:
            mid = (lo + hi) // 2
            if await _opens(client, node, lo, mid - 1, 1):
                hi = mid
            else:
                lo = mid
        first_ms = min(await _opens(client, node, lo, hi - 1, FIRST_CANDLES) or [first_ms])
    first = first_ms // 1000
    interval, origin = node.interval_s, node.timeframe.origin_s
    return first - (first - origin) % interval  # a misaligned row still opens its bar


async def _opens(
    client: ExchangeClient, node: NodeId, since_ms: int, until_ms: int, limit: int
) -> list[int]:
    """Plausible open times (ms) of the candles the exchange answers for
    `[since_ms, until_ms]` with `limit`."""
    from resources.ccxt_lean import ccxt_errors

    params: dict[str, Any] = {"until": until_ms}
    if node.price is not None:
        params["price"] = node.price
    try:
        rows: list[list[Any]] = await client.exchange.fetch_ohlcv(
            node.symbol, node.timeframe.code, since=since_ms, limit=limit, params=params
        )
    except ccxt_errors.BaseError as exc:
        raise ExchangeUnavailable(
            f"{node.exchange} could not tell {node}'s first candle "
            f"({type(exc).__name__}: {str(exc)[:200]}); it is asked again next time"
        ) from exc
    return [
        int(row[0])
        for row in rows
        if isinstance(row[0], int | float) and _MIN_PLAUSIBLE_MS <= row[0] <= until_ms
    ]


def ensure_history_start(
    store: ArtifactStore, node: NodeId, client_factory: Callable[[], ExchangeClient]
) -> int | None:
    """The recorded history start of `node`, discovering and recording it first if needed.
    None when the exchange serves no candle yet (discovered again next time)."""
    recorded = history_start_s(store, node)
    if recorded is not None:
        return recorded

    async def discover() -> int | None:
        async with client_factory() as client:
            return await discover_history_start(store, node, client)

    return asyncio.run(discover())


async def discover_history_start(
    store: ArtifactStore, node: NodeId, client: ExchangeClient
) -> int | None:
    """Ask the exchange for `node`'s first bar with `client` and record it; the recorded
    start, None when the exchange serves no candle yet."""
    found = await first_bar_s(client, node)
    return None if found is None else record_history_start(store, node, found)
