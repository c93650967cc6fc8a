"""Exchange trades (`trades:{exchange}:{symbol}`): canonical frame, conformance and
fingerprint. The bars they make are `core.trades.bars_from_trades`.

A trades frame holds one row per trade: `id` (int64, the exchange's trade id), `ts`
(int64, epoch milliseconds), `price` and `amount` (float64) and `side` (int8: 1 buy,
-1 sell, 0 unknown), sorted by `(ts, id)`: within one instant, the exchange's order.

`conform_trades` never drops a row silently: each removed row carries exactly one drop
flag, in the precedence `invalid_timestamp` (unreadable, or outside the requested window)
> `invalid_id` (not a non-negative integer: an exchange with other ids needs another
schema) > `dtype_mismatch` (a price or amount that is not a number) > `non_finite` >
`non_positive_price` > `negative_amount` (0 is kept: `bars_from_trades` accepts it) >
`conflicting_id` > `duplicate_id`.

A trade id names one immutable trade, so rows are deduplicated by id, of the valid rows:
a repeat with the same ts, price, amount and side is `duplicate_id` (one is kept, which
one does not matter). A repeat with *different* values is `conflicting_id`: the first
received version is kept and every later one dropped with that flag. Neither version is
known right, and keeping the first (not the last, as bars do) keeps a stored trade from
changing under a refetch; `dropped` lists the other versions with their `raw` row, so a
consumer finds every uncertain trade by its id there.

`side` is 1 for "buy", -1 for "sell" (ccxt's unified, lower-case values) and 0 otherwise,
unflagged (many exchanges give no side). `dtype_cast` counts kept rows whose timestamp,
price or amount came as a string (or a float ts) and was cast; an id is not counted, as
ccxt's unified trade id is a string. Dropped rows are listed as in `core.funding`; the
row reading is `core.event_rows`, shared with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from .event_rows import (
    ConformedEvents,
    account,
    empty_table,
    integer_column,
    number_column,
    records,
    table_fingerprint,
    table_schema,
    validate_table,
    window_ms,
)
from .flags import DTYPE_CAST, DTYPE_MISMATCH, INVALID_TIMESTAMP, NON_FINITE, NON_POSITIVE_PRICE
from .frame import TS, Range

INVALID_ID = "invalid_id"
NEGATIVE_AMOUNT = "negative_amount"
CONFLICTING_ID = "conflicting_id"
DUPLICATE_ID = "duplicate_id"

TRADES_COLUMNS: tuple[str, ...] = ("id", TS, "price", "amount", "side")
TRADES_DTYPES: dict[str, str] = {
    "id": "int64",
    TS: "int64",
    "price": "float64",
    "amount": "float64",
    "side": "int8",
}
TRADES_DROP_FLAGS: tuple[str, ...] = (
    INVALID_TIMESTAMP,
    INVALID_ID,
    DTYPE_MISMATCH,
    NON_FINITE,
    NON_POSITIVE_PRICE,
    NEGATIVE_AMOUNT,
    CONFLICTING_ID,
    DUPLICATE_ID,
)
TRADES_FLAGS: tuple[str, ...] = (*TRADES_DROP_FLAGS, DTYPE_CAST)
SIDES: dict[str, int] = {"buy": 1, "sell": -1}

ConformedTrades = ConformedEvents


def empty_trades_frame() -> pd.DataFrame:
    """A canonical trades frame with no rows."""
    return empty_table(TRADES_DTYPES)


def _sorted_by_ts_then_id(df: pd.DataFrame) -> bool:
    ts, ids = df[TS].to_numpy(), df["id"].to_numpy()
    later = ts[1:] > ts[:-1]
    return bool(np.all(later | ((ts[1:] == ts[:-1]) & (ids[1:] > ids[:-1]))))


def trades_schema() -> pa.DataFrameSchema:
    """The pandera contract of a canonical trades frame."""
    return table_schema(
        "canonical_trades",
        {
            "id": pa.Column(np.int64, pa.Check.ge(0), unique=True),
            TS: pa.Column(np.int64, pa.Check.ge(0)),
            "price": pa.Column(
                np.float64, pa.Check(lambda s: np.isfinite(s) & (s > 0), name="finite_positive")
            ),
            "amount": pa.Column(
                np.float64, pa.Check(lambda s: np.isfinite(s) & (s >= 0), name="finite_non_neg")
            ),
            "side": pa.Column(np.int8, pa.Check.isin([-1, 0, 1])),
        },
        pa.Check(_sorted_by_ts_then_id, name="sorted_by_ts_then_id"),
    )


def validate_trades(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` if it is a canonical trades frame, else `CanonicalFrameError`."""
    return validate_table(frame, trades_schema())


def conform_trades(rows: Sequence[Mapping[str, Any]], window: Range) -> ConformedTrades:
    """Conform ccxt `fetch_trades` rows (`id`, `timestamp` in ms, `price`, `amount`,
    `side`) requested for `window` to the canonical trades frame."""
    items = records(rows)
    n = len(items)
    ids = integer_column([r.get("id") for r in items])
    ts = integer_column([r.get("timestamp") for r in items])
    price = number_column([r.get("price") for r in items])
    amount = number_column([r.get("amount") for r in items])
    sides = [r.get("side") for r in items]
    side = np.fromiter((SIDES.get(s, 0) if isinstance(s, str) else 0 for s in sides), np.int8, n)
    inside = window_ms(ts, window)

    def flag(name: str) -> int:
        return TRADES_DROP_FLAGS.index(name) + 1

    code = np.zeros(n, dtype=np.int8)  # lowest precedence first: the highest one wins
    code[amount.values < 0] = flag(NEGATIVE_AMOUNT)
    code[price.values <= 0] = flag(NON_POSITIVE_PRICE)
    code[~(np.isfinite(price.values) & np.isfinite(amount.values))] = flag(NON_FINITE)
    code[price.mismatch | amount.mismatch] = flag(DTYPE_MISMATCH)
    code[~ids.ok | (ids.values < 0)] = flag(INVALID_ID)
    code[~inside] = flag(INVALID_TIMESTAMP)

    # Of the valid rows sharing an id, the first received is kept (rows sorted by id,
    # then input position); each later one is a duplicate if equal to it, else a conflict.
    valid = np.flatnonzero(code == 0)
    valid = valid[np.lexsort((valid, ids.values[valid]))]
    first = np.ones(valid.size, dtype=bool)
    first[1:] = ids.values[valid][1:] != ids.values[valid][:-1]
    head = valid[np.maximum.accumulate(np.where(first, np.arange(valid.size), 0))]
    same = (ts.values[valid] == ts.values[head]) & (side[valid] == side[head])
    same &= (price.values[valid] == price.values[head]) & (
        amount.values[valid] == amount.values[head]
    )
    code[valid[~first & same]] = flag(DUPLICATE_ID)
    code[valid[~first & ~same]] = flag(CONFLICTING_ID)

    kept = valid[first]
    kept = kept[np.lexsort((ids.values[kept], ts.values[kept]))]
    frame = pd.DataFrame(
        {
            "id": ids.values[kept],
            TS: ts.values[kept],
            "price": price.values[kept],
            "amount": amount.values[kept],
            "side": side[kept],
        },
        columns=list(TRADES_COLUMNS),
    )
    listed = np.where(inside, ts.values, window.start * 1000)
    cast = ts.cast | price.cast | amount.cast
    return account(items, code, TRADES_DROP_FLAGS, listed, cast, frame)


def trades_fingerprint(frame: pd.DataFrame, identity: Mapping[str, Any]) -> str:
    """Fingerprint of a canonical trades frame under `identity` (node id, range, version)."""
    return table_fingerprint(frame, TRADES_COLUMNS, TRADES_DTYPES, identity)
