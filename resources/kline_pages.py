"""What one OHLCV page of an exchange becomes: ccxt's rows, or two arrays.

ccxt's `fetch_ohlcv` answers rows `[open_ms, o, h, l, c, v]` (Python numbers), parsed row by
row and field by field. A backfill packs its pages into two arrays as they arrive (48
bytes a bar instead of ~280 as lists), and for exchanges whose klines are plain rows of
decimal strings (`FAST_OHLCV_ROW_EXCHANGES`) a page is parsed:

* at once into rows (`unfiltered(..., fast_rows=True)`), the same values as ccxt's path;
* while a backfill packs its pages (`packing_pages`), straight into arrays
  (`PackedPage`): Arrow parses the decimal strings (correctly rounded, like `float()`),
  with no Python object per value. Anything Arrow does not parse exactly as `float()`
  would (spaces, underscores, non-ASCII digits), a null, NaN or an infinity, an open time
  that is not an int: the page goes the row path instead, which decides as before.

`tests/resources/test_exchange_pages.py` checks that every path gives the same values,
types and order on clean pages and garbage alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

PackedRows = tuple[np.ndarray, np.ndarray]  # int64 open times, (n, 5) float64 values

# Exchanges whose spot klines are rows `[open_ms, "o", "h", "l", "c", "v", ...]`, for which
# `float()` per field gives exactly what ccxt's own per-field parsing gives, ~5x cheaper
# (tests/resources/test_exchange.py checks the equality on real responses, garbage too).
FAST_OHLCV_ROW_EXCHANGES = frozenset({"binance"})

# Whether the task's OHLCV pages are wanted as arrays (`packing_pages`): a task's own
# context, so a backfill packing its pages and another caller of the same exchange
# object (history discovery, a live feed) each get what they asked for.
_PACKING: ContextVar[bool] = ContextVar("ohlcv_pages_packed", default=False)


@contextmanager
def packing_pages() -> Iterator[None]:
    """In the block (this task), `fetch_ohlcv` of a fast-row exchange may answer a
    `PackedPage` instead of rows."""
    token = _PACKING.set(True)
    try:
        yield
    finally:
        _PACKING.reset(token)


@dataclass(frozen=True)
class PackedPage:
    """A page as arrays, sorted by open time (stable): what `pack_rows` makes of the rows
    the row path would give."""

    opens: np.ndarray  # int64 open times, ms
    values: np.ndarray  # (n, 5) float64

    def __len__(self) -> int:
        return len(self.opens)

    def rows(self) -> list[list[Any]]:
        return unpack_rows((self.opens, self.values))

    def packed(self) -> PackedRows:
        return self.opens, self.values


def pack_page(ohlcvs: list[list[Any]]) -> PackedPage | None:
    """`ohlcvs` (rows of at least six fields) parsed into arrays, or None when the row
    path must decide: a value that is not a string Arrow parses exactly as `float()`
    does, a null, NaN or an infinity, an open time that is not an int64."""
    import pyarrow as pa

    if not ohlcvs:
        return None
    opens, *columns = itertools.islice(zip(*ohlcvs, strict=False), 6)
    if set(map(type, opens)) != {int}:
        return None
    try:
        times = np.array(opens, dtype=np.int64)
        # from a list: Arrow converts an iterator ~6x slower
        strings = pa.array(list(itertools.chain.from_iterable(columns)), type=pa.string())
        if strings.null_count:
            return None
        flat = strings.cast(pa.float64()).to_numpy()
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if not np.isfinite(flat).all():
        return None
    values = flat.reshape(5, -1).T
    if (np.diff(times) < 0).any():
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
    return PackedPage(times, values)


def pack_rows(rows: list[list[Any]]) -> PackedRows | None:
    """`rows` as two arrays when they are all `[int, float, float, float, float, float]`,
    else None (what the exchange's parser makes of garbage stays as it came).
    `unpack_rows` gives back equal rows of the same types."""
    if set(map(len, rows)) != {6}:
        return None
    opens, *columns = zip(*rows, strict=True)
    if set(map(type, opens)) != {int} or set(map(type, itertools.chain(*columns))) != {float}:
        return None
    try:
        return np.array(opens, dtype=np.int64), np.array(columns, dtype=np.float64).T
    except OverflowError:  # an open time beyond int64 (garbage)
        return None


def unpack_rows(packed: PackedRows) -> list[list[Any]]:
    opens, values = packed
    return [[t, *v] for t, v in zip(opens.tolist(), values.tolist(), strict=True)]


def fast_row_parser(ccxt_parse: Any) -> Any:
    """ccxt's `parse_ohlcv` with `float()` per field for a plain row."""

    def parse_ohlcv(ohlcv: Any, market: Any = None) -> Any:
        if type(ohlcv) is list and len(ohlcv) >= 6 and not (market and market.get("inverse")):
            try:
                return [
                    int(ohlcv[0]),
                    float(ohlcv[1]),
                    float(ohlcv[2]),
                    float(ohlcv[3]),
                    float(ohlcv[4]),
                    float(ohlcv[5]),
                ]
            except (TypeError, ValueError, OverflowError):
                pass  # garbage: ccxt's parser decides (e.g. None for "abc")
        return ccxt_parse(ohlcv, market)

    return parse_ohlcv


def unfiltered(ccxt_parse_ohlcvs: Any, fast_rows: bool = False) -> Any:
    """ccxt's `parse_ohlcvs` without its since/limit filter, which silently drops rows
    before `since` (a bar an exchange repeats from the previous page) or without a time.
    The client clips pages to their windows itself and hands such rows to conformance,
    which flags them (`duplicate_ts`, `invalid_timestamp`) instead of losing them unseen.

    `fast_rows` (`FAST_OHLCV_ROW_EXCHANGES`): a page whose rows are all lists of at least
    six fields is a `PackedPage` while the task packs its pages (`pack_page`); otherwise,
    or when `pack_page` leaves it to rows, a page whose fields `int`/`float` parse (no NaN)
    is parsed in one comprehension, the same values as the per-row parser, in ccxt's order
    (sorted by open time, stable); any other page goes through ccxt's path, row by row."""

    def parse_ohlcvs(
        ohlcvs: Any,
        market: Any = None,
        timeframe: str = "1m",
        since: Any = None,
        limit: Any = None,
        tail: bool = False,
    ) -> Any:
        if (
            fast_rows
            and type(ohlcvs) is list
            and not (market and market.get("inverse"))
            and set(map(type, ohlcvs)) <= {list}
            and min(map(len, ohlcvs), default=6) >= 6
        ):
            if _PACKING.get() and (page := pack_page(ohlcvs)) is not None:
                return page
            try:
                rows = [
                    [int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])]
                    for r in ohlcvs
                ]
            except (TypeError, ValueError, OverflowError):
                pass  # garbage somewhere: ccxt's path parses row by row
            else:
                # NaN anywhere makes the sum NaN (so does inf - inf: ccxt's path then too)
                total = sum(itertools.chain.from_iterable(rows))
                if total == total:
                    return sorted(rows, key=_open_time)
        return ccxt_parse_ohlcvs(ohlcvs, market, timeframe, None, None, tail)

    return parse_ohlcvs


def _open_time(row: list[Any]) -> Any:
    return row[0]


def split_page(
    page: list[list[Any]], cursor: int, end_ms: int, fetched_start_ms: int, fetched_end_ms: int
) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
    """(in the request's window, repeated from earlier in the fetch, impossible) rows of a
    page asked from `cursor`; rows after the window but inside the fetch are left out (see
    `ExchangeClient._fetch_window`). The usual page, sorted integer open times all inside
    the window, is recognised from its ends without a loop per row."""
    if page:
        first, last = page[0][0], page[-1][0]
        if (
            type(first) is int
            and type(last) is int
            and _usual_ends(first, last, cursor, end_ms)
            and all(type(r[0]) is int for r in page)
            and all(a[0] <= b[0] for a, b in itertools.pairwise(page))
        ):
            return page, [], []
    in_window: list[list[Any]] = []
    repeats: list[list[Any]] = []
    odd: list[list[Any]] = []
    for r in page:
        t = r[0]
        if not is_ms(t):
            odd.append(r)
        elif cursor <= t < end_ms:
            in_window.append(r)
        elif fetched_start_ms <= t < cursor:
            repeats.append(r)
        elif not end_ms <= t < fetched_end_ms:
            odd.append(r)  # impossible for this request
    return in_window, repeats, odd


def page_within(page: PackedPage, cursor: int, end_ms: int) -> bool:
    """Whether every row of a packed page (sorted, not empty) opens in `[cursor, end_ms)`,
    in ms: the usual page, all in its request's window."""
    return _usual_ends(int(page.opens[0]), int(page.opens[-1]), cursor, end_ms)


def _usual_ends(first: int, last: int, cursor: int, end_ms: int) -> bool:
    """Whether a sorted page's first and last open times (ms) lie in `[cursor, end_ms)`."""
    return cursor <= first and last < end_ms and is_ms(first) and is_ms(last)


def is_ms(value: Any) -> bool:
    """A number in the range of epoch milliseconds (years 1973–5138)."""
    return isinstance(value, int | float) and 1e11 <= value < 1e14
