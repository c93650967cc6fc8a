"""Fault injection on kline pages: the `corruptions` knob (malformed rows, as raw JSON).

Why raw JSON: the point is to see what survives the client (ccxt) and reaches the
consumer's conformance, so each corruption is what a misbehaving exchange would send.
For a bar opening at `ts` (seconds) of the configured symbol (and interval, if given):

* `string`: open is `"abc"`; `nan`: open is `"NaN"`; `inf`: open is `"Infinity"`
* `negative_volume`: volume negated (`"-1.00000000"` when it was 0)
* `high_below_low`: high and low swapped (low doubled if they were equal)
* `us_ts`: openTime and closeTime in microseconds
* `misaligned`: openTime and closeTime shifted by +30 s (off the grid for intervals >= 1m)
* `duplicate`: the clean row sent twice in a row in its page (the page grows by one)
* `duplicate_next_page`: the clean row prepended to the page whose first bar is the next
  existing bar after `ts` (that page grows by one; the page holding `ts` is clean)
* `ts_zero`: openTime 0 and closeTime one interval later (the bar's own slot is empty)
* `ts_future`: openTime 3000-01-01T00:00:00Z (32503680000000 ms), closeTime to match
* `zero_price`: open, high, low and close `"0.00000000"` (volume kept)
* `negative_price`: low negated (`"-1.00000000"` when it was 0); open, high, close kept
* `zero_bar`: open, high, low, close and volume all `"0.00000000"`

An entry with `times: N` applies to the first N responses that serve its bar (counted
by the sandbox state per entry); later responses serve the bar clean, as an exchange
recovering from a transient fault would.

Through ccxt's binance `fetch_ohlcv` (4.5): `"abc"` becomes None (`safe_number`), `"NaN"`
and `"Infinity"` float nan/inf; rows opening before `since` (so `duplicate_next_page`) and
rows past `limit` after sorting by time (a µs openTime sorts last) are dropped by ccxt.

Pages holding no corrupted bar are served byte for byte as without the knob, and with
no corruptions configured this module is never called (the encoder fast path).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from .bars import generate_bars, select_open_times
from .config import MarketSpec, SandboxConfig
from .encode import encode_klines

I64 = npt.NDArray[np.int64]

MISALIGN_MS = 30_000
YEAR_3000_MS = 32_503_680_000_000
_ZERO = "0.00000000"


def _shift_times(row: list[Any], open_ms: int) -> None:
    """Move a row's openTime to `open_ms`, keeping its closeTime one interval later."""
    span = int(row[6]) - int(row[0])
    row[0], row[6] = open_ms, open_ms + span


def _mutate(row: list[Any], kind: str) -> None:
    """Apply one in-row corruption to a Binance kline row (strings for decimals)."""
    if kind == "string":
        row[1] = "abc"
    elif kind == "nan":
        row[1] = "NaN"
    elif kind == "inf":
        row[1] = "Infinity"
    elif kind == "negative_volume":
        row[5] = f"-{row[5]}" if Decimal(row[5]) > 0 else "-1.00000000"
    elif kind == "high_below_low":
        row[2], row[3] = row[3], row[2]
        if Decimal(row[2]) == Decimal(row[3]):
            row[3] = f"{Decimal(row[3]) * 2:.8f}"
    elif kind == "us_ts":
        row[0] = int(row[0]) * 1000
        row[6] = int(row[6]) * 1000 + 999
    elif kind == "misaligned":
        row[0] = int(row[0]) + MISALIGN_MS
        row[6] = int(row[6]) + MISALIGN_MS
    elif kind == "ts_zero":
        _shift_times(row, 0)
    elif kind == "ts_future":
        _shift_times(row, YEAR_3000_MS)
    elif kind == "zero_price":
        row[1:5] = [_ZERO] * 4
    elif kind == "negative_price":
        row[3] = f"-{row[3]}" if Decimal(row[3]) > 0 else "-1.00000000"
    elif kind == "zero_bar":
        row[1:6] = [_ZERO] * 5
    else:  # pragma: no cover - validated by SandboxConfig
        raise ValueError(f"unknown in-row corruption {kind!r}")


def corrupt_klines(
    body: bytes,
    market: MarketSpec,
    interval: str,
    interval_s: int,
    ts: I64,
    config: SandboxConfig,
    now_ms: int | None,
    take: Callable[[int], bool] = lambda _entry: True,
) -> tuple[bytes, int, int]:
    """`(body, rows served, corruptions applied)` of a kline page under `config.corruptions`.

    `body` is the clean page of the bars opening at `ts` (sorted seconds). `take(entry)`
    is asked once per entry about to apply and says whether it still does (its `times`
    budget); it is only asked for entries whose bar this page serves.
    """
    hits = config.corruptions_for(market.key, interval)
    if not hits or ts.size == 0:
        return body, int(ts.size), 0
    in_page: list[tuple[int, str]] = []
    carried: list[int] = []
    for entry, t, kind in hits:
        if kind == "duplicate_next_page":
            if t < int(ts[0]) and t not in carried:
                prev = select_open_times(
                    market,
                    interval_s,
                    config,
                    lo_s=None,
                    hi_s=int(ts[0]) - 1,
                    limit=1,
                    from_end=True,
                )
                if prev.size and int(prev[0]) == t and take(entry):
                    carried.append(t)
            continue
        i = int(np.searchsorted(ts, t))
        if i < ts.size and int(ts[i]) == t and take(entry):
            in_page.append((i, kind))
    if not in_page and not carried:
        return body, int(ts.size), 0

    rows: list[list[Any]] = json.loads(body)
    clean = {i: list(rows[i]) for i, kind in in_page if kind == "duplicate"}
    for i, kind in in_page:
        if kind != "duplicate":
            _mutate(rows[i], kind)
    for i in sorted(clean, reverse=True):  # inserting from the end keeps indices valid
        rows.insert(i + 1, clean[i])
    if carried:
        extra = generate_bars(market, interval_s, np.array(carried, dtype=np.int64), config, now_ms)
        rows[:0] = json.loads(encode_klines(extra))
    corrupted = len(in_page) + len(carried)
    return json.dumps(rows, separators=(",", ":")).encode(), len(rows), corrupted
