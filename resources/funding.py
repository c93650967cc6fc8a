"""Funding-rate history of a perpetual through ccxt (`fetch_funding_rate_history`): every
funding in a window, paged by time, whatever the symbol's funding interval was (8 h, 4 h,
1 h: an interval change needs no schedule, the exchange's answer is the record).

Binance answers `fundingRate` with the first `limit` fundings from `startTime` up to
`endTime`, ascending; pages continue one millisecond after the last funding received and
end at a page shorter than asked for. Groundwork of the `funding:` nodes (issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import nan
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from seamless_assets.core.frame import Range

if TYPE_CHECKING:
    from .exchange import ExchangeClient

FUNDING_PAGE = 1000  # binance's largest fundingRate page


@dataclass(frozen=True)
class FundingRows:
    """Fundings in time order: `ts_ms` (funding time, epoch ms), `rate` (per funding, a
    fraction) and `mark_price` (NaN where the exchange gives none). `raw`: ccxt's entries
    as received, those in the window and those whose time is unreadable, for
    conformance (`core.funding.conform_funding`) to keep or flag."""

    ts_ms: npt.NDArray[np.int64]
    rate: npt.NDArray[np.float64]
    mark_price: npt.NDArray[np.float64]
    requests: int
    raw: tuple[dict[str, Any], ...] = ()

    def __len__(self) -> int:
        return len(self.ts_ms)


def _mark(entry: dict[str, Any]) -> float:
    info = entry.get("info") or {}
    raw = info.get("markPrice") if isinstance(info, dict) else None
    try:
        return float(raw) if raw not in (None, "") else nan
    except (TypeError, ValueError):
        return nan


async def fetch_funding(
    client: ExchangeClient, symbol: str, window: Range, page: int = FUNDING_PAGE
) -> FundingRows:
    """Every funding of `symbol` with funding time in `window` (epoch s, half-open)."""
    await client.check_symbol(symbol)
    start_ms, end_ms = window.start * 1000, window.end * 1000
    found: dict[int, tuple[float, float]] = {}
    raw: list[dict[str, Any]] = []
    cursor, requests = start_ms, 0
    while cursor < end_ms:
        entries = await client.request(
            f"fetch_funding_rate_history {symbol} {window}",
            client.exchange.fetch_funding_rate_history,
            symbol,
            since=cursor,
            limit=page,
            params={"until": end_ms - 1},
        )
        requests += 1
        times = []
        for entry in entries:
            ts = entry.get("timestamp")
            if not isinstance(ts, int) or start_ms <= ts < end_ms:
                raw.append(entry)
            if isinstance(ts, int) and start_ms <= ts < end_ms:
                rate = entry.get("fundingRate")  # garbage stays, as NaN, for conformance
                found[ts] = (float(rate) if isinstance(rate, int | float) else nan, _mark(entry))
                times.append(ts)
        if len(entries) < page or not times:
            break
        cursor = max(times) + 1
    order = sorted(found)
    return FundingRows(
        np.array(order, dtype=np.int64),
        np.array([found[t][0] for t in order], dtype=np.float64),
        np.array([found[t][1] for t in order], dtype=np.float64),
        requests,
        tuple(raw),
    )
