"""Bars rebuilt from trades (trades -> bars repair): a window the exchange's candles miss
while its trades exist gets the bars those trades make, exactly as the exchange would.

A bar is the trades opening in `[ts, ts + interval)`: open the first trade's price, close
the last's, high the highest, low the lowest, volume the sum of amounts. Prices are trade
prices, so exact; the volume is summed in integer units of `10**-decimals` (amounts with at
most `decimals` decimals, Binance's 8), so it is the float of the exchange's printed sum,
not a sum with float rounding. Slots without trades get no bar (coverage reports them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .frame import empty_frame, frame_from_arrays

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

_MAX_EXACT_UNITS = 2**53  # integer units a float64 holds exactly


def bars_from_trades(
    ts_ms: npt.ArrayLike,
    price: npt.ArrayLike,
    amount: npt.ArrayLike,
    interval_s: int,
    *,
    origin_s: int = 0,
    decimals: int = 8,
) -> pd.DataFrame:
    """Canonical bars (`frame.CANONICAL_COLUMNS`) of trades given in the exchange's order
    (by trade id); trades of one instant keep that order. `ValueError` for a trade without
    a finite positive price, a negative or non-finite amount, or an amount finer than
    `decimals` (its sum would not be exact)."""
    import numpy as np

    ts = np.asarray(ts_ms, dtype=np.int64)
    px = np.asarray(price, dtype=np.float64)
    qty = np.asarray(amount, dtype=np.float64)
    if not len(ts) == len(px) == len(qty):
        raise ValueError("ts_ms, price and amount must have one value per trade")
    if not len(ts):
        return empty_frame()
    if not (np.isfinite(px).all() and (px > 0).all()):
        raise ValueError("every trade needs a finite, positive price")
    if not (np.isfinite(qty).all() and (qty >= 0).all()):
        raise ValueError("every trade needs a finite amount >= 0")
    scale = 10.0**decimals
    units = np.rint(qty * scale)
    if not np.array_equal(units / scale, qty) or units.sum() >= _MAX_EXACT_UNITS:
        raise ValueError(f"amounts must have at most {decimals} decimals to be summed exactly")
    order = np.argsort(ts, kind="stable")
    ts, px, units = ts[order], px[order], units[order].astype(np.int64)
    opens = (ts // 1000 - origin_s) // interval_s * interval_s + origin_s
    starts = np.flatnonzero(np.r_[True, opens[1:] != opens[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    values = {
        "open": px[starts],
        "high": np.maximum.reduceat(px, starts),
        "low": np.minimum.reduceat(px, starts),
        "close": px[ends],
        "volume": np.add.reduceat(units, starts) / scale,
    }
    return frame_from_arrays(opens[starts], values)
