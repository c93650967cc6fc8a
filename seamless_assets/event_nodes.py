"""Event series: `funding:{exchange}:{symbol}` (a perpetual's funding-rate events) and
`trades:{exchange}:{symbol}` (a market's trades).

Unlike bars, events lie on no grid: a funding every 8 h, then 4 h, then 1 h over a
contract's life; trades whenever they happen. So an event node has no timeframe: it is
partitioned by UTC day, its rows carry their own time in epoch *milliseconds* exactly as
the exchange states it, and its coverage is the windows the exchange's answers are known
complete for (`answered`), not counted slots. Its table, conformance and fingerprint are
`core.funding` and `core.trade_rows`; `EventKind` ties each kind to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .core.event_rows import ConformedEvents
from .core.frame import Range
from .errors import InvalidNodeId
from .nodes import (
    NodeId,
    check_exchange_id,
    check_symbol,
    from_readable_symbol,
    market_kind,
    path_slug,
    readable_symbol,
)


@dataclass(frozen=True)
class EventKind:
    """What one kind of event table is: its columns and dtypes (in order), the columns
    that identify a row (`key`: one row per key and node), the columns it is sorted by,
    its conformance (`conform(rows, window)`) and the UI's words for a row."""

    name: str
    dtypes: Mapping[str, str]
    key: tuple[str, ...]
    order: tuple[str, ...]
    conform: Callable[[Sequence[Mapping[str, Any]], Range], ConformedEvents]
    row_noun: str
    description: str

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.dtypes)

    def empty(self) -> pd.DataFrame:
        from .core.event_rows import empty_table

        return empty_table(self.dtypes)


def _funding_kind() -> EventKind:
    from .core.funding import FUNDING_DTYPES, conform_funding

    return EventKind(
        name="funding",
        dtypes=FUNDING_DTYPES,
        key=("ts",),
        order=("ts",),
        conform=conform_funding,
        row_noun="funding",
        description="Funding-rate events (funding time in epoch ms, rate, mark price)",
    )


def _trades_kind() -> EventKind:
    from .core.trade_rows import TRADES_DTYPES, conform_trades

    return EventKind(
        name="trades",
        dtypes=TRADES_DTYPES,
        key=("id",),
        order=("ts", "id"),
        conform=conform_trades,
        row_noun="trade",
        description="Trades (exchange trade id, time in epoch ms, price, amount, side)",
    )


EVENT_KINDS: dict[str, EventKind] = {"funding": _funding_kind(), "trades": _trades_kind()}


@dataclass(frozen=True)
class EventNodeId:
    """One event series: `{kind}:{exchange}:{symbol}`; the symbol may contain `:`
    (`funding:binance:BTC/USDT:USDT`). Funding nodes are of contracts only."""

    kind: str
    exchange: str
    symbol: str

    @classmethod
    def parse(cls, node_id: str) -> EventNodeId:
        parts = node_id.split(":") if isinstance(node_id, str) else []
        if len(parts) < 3 or parts[0] not in EVENT_KINDS:
            raise InvalidNodeId(
                f"event node id {node_id!r} must look like '{{kind}}:{{exchange}}:{{symbol}}' "
                f"with kind {' or '.join(EVENT_KINDS)}, e.g. 'funding:binance:BTC/USDT:USDT' "
                "or 'trades:binance:BTC/USDT'"
            )
        return cls.of(parts[0], parts[1], ":".join(parts[2:]))

    @classmethod
    def of(cls, kind: str, exchange: str, symbol: str) -> EventNodeId:
        if kind not in EVENT_KINDS:
            raise InvalidNodeId(f"event kind {kind!r} is not one of {sorted(EVENT_KINDS)}")
        check_exchange_id(exchange)
        check_symbol(symbol)
        if kind == "funding" and market_kind(symbol) == "spot":
            raise InvalidNodeId(
                f"{symbol!r} is a spot market, which has no funding; funding nodes are of "
                f"perpetuals, e.g. 'funding:{exchange}:BTC/USDT:USDT'"
            )
        return cls(kind=kind, exchange=exchange, symbol=symbol)

    @staticmethod
    def is_event_id(node_id: str) -> bool:
        """Whether a node id names an event series (by its kind)."""
        return isinstance(node_id, str) and node_id.split(":", 1)[0] in EVENT_KINDS

    @property
    def spec(self) -> EventKind:
        return EVENT_KINDS[self.kind]

    @property
    def interval_s(self) -> int:
        """0: events lie on no grid (what an event node's snapshots state as `interval_s`)."""
        return 0

    def __str__(self) -> str:
        return f"{self.kind}:{self.exchange}:{self.symbol}"

    @property
    def label(self) -> str:
        """The node's name in the UI: `{exchange}_{readable symbol}`."""
        return f"{self.exchange}_{readable_symbol(self.symbol)}"

    def asset_key_path(self) -> list[str]:
        """`[kind, label]`, e.g. `["funding", "binance_BTC_USDT__USDT"]`."""
        return [self.kind, self.label]

    @classmethod
    def from_asset_key_path(cls, path: Sequence[str]) -> EventNodeId:
        """Inverse of `asset_key_path`; `InvalidNodeId` for any other key."""
        parts = list(path)
        if len(parts) != 2 or parts[0] not in EVENT_KINDS or not isinstance(parts[1], str):
            raise InvalidNodeId(f"asset key {parts} is not an event node key")
        exchange, _, symbol = parts[1].partition("_")
        try:
            node = cls.of(parts[0], exchange, from_readable_symbol(symbol))
        except (ValueError, InvalidNodeId) as exc:
            raise InvalidNodeId(f"asset key {parts} is not an event node key: {exc}") from None
        return node

    def partition_prefix(self) -> str:
        """The artifact prefix of the node: `kind={kind}/exchange={…}/symbol={…}` (slugs
        escaped). No template field is a kind, so it never meets a bar node's prefix."""
        return (
            f"kind={self.kind}/exchange={path_slug(self.exchange)}/symbol={path_slug(self.symbol)}"
        )


AnyNode = NodeId | EventNodeId
"""A node of the catalog of any kind: bars (`NodeId`) or events (`EventNodeId`)."""
