"""A Binance klines page parsed at once gives exactly what the row-by-row path gives (values,
types, order), garbage included; the page split recognises the usual page from its ends;
packed rows come back equal, of the same types."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from resources.exchange import _fast_row_parser, _pack_rows, _split_page, _unfiltered, _unpack_rows

T = 1_704_067_200_000
GOOD = [T, "42000.12345678", "42010.5", "41990.0", "42005.00000001", "12.345678"]


def row(i: int, *values: Any) -> list[Any]:
    return [
        T + i * 60_000,
        *(values or GOOD[1:]),
        T + i * 60_000 + 59_999,
        "1.0",
        10,
        "1",
        "1",
        "0",
    ]


def random_page(rng: random.Random, n: int) -> list[list[Any]]:
    def number() -> str:
        digits, value = rng.randint(0, 10), rng.uniform(0, 10 ** rng.randint(0, 8))
        return f"{value:.{digits}f}"

    return [row(i, *(number() for _ in range(5))) for i in range(n)]


PAGES = {
    "empty": [],
    "clean": [row(i) for i in range(5)],
    "unsorted": [row(3), row(1), row(2), row(1)],
    "garbage": [row(0), row(1, "abc", "1", "1", "1", "1")],
    "nan and infinity": [row(0, "NaN", "Infinity", "-Infinity", "1", "1")],
    "a null value": [row(0, None, "1", "1", "1", "1")],
    "a null open time": [[None, *GOOD[1:]], row(1)],
    "numbers, not strings": [["1704067200000", 1, 2.5, "0.5", 1.5, "0"], row(1)],
    "microseconds": [[T * 1000, *GOOD[1:]]],
    "short row": [row(0), [T, "1", "2"]],
    "not a row": [row(0), "oops"],
    "underscores and spaces": [row(0, "1_000", " 2.5", "3 ", "+4", "5e-3")],
}


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


@pytest.fixture(scope="module")
def parsers() -> tuple[Any, Any]:
    import ccxt.async_support as ccxt_async

    exchange = ccxt_async.binance()
    exchange.parse_ohlcv = _fast_row_parser(exchange.parse_ohlcv)
    ccxt_pages = exchange.parse_ohlcvs
    return _unfiltered(ccxt_pages, fast_rows=True), _unfiltered(ccxt_pages)


@pytest.mark.parametrize("name", [*PAGES, "random"])
def test_a_page_at_once_equals_row_by_row(name: str, parsers: tuple[Any, Any]) -> None:
    page_at_once, row_by_row = parsers
    page = random_page(random.Random(7), 1000) if name == "random" else PAGES[name]
    market = {"inverse": False}
    try:
        expected = row_by_row([list(r) if isinstance(r, list) else r for r in page], market)
    except Exception as exc:  # the row path raises: the page path raises the same
        with pytest.raises(type(exc)):
            page_at_once(page, market)
        return
    got = page_at_once(page, market)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert len(g) == len(e) and all(map(same, g, e)), (g, e)


def test_the_usual_page_is_split_from_its_ends() -> None:
    page = [[T + i * 60_000, 1.0, 1.0, 1.0, 1.0, 1.0] for i in range(10)]
    end = T + 10 * 60_000
    assert _split_page(page, T, end, T - 600_000, end + 600_000) == (page, [], [])
    repeat = [[T - 60_000, 1.0, 1.0, 1.0, 1.0, 1.0], *page]  # one bar before the cursor
    assert _split_page(repeat, T, end, T - 600_000, end) == (page, repeat[:1], [])
    odd = [*page, [5, 1.0, 1.0, 1.0, 1.0, 1.0]]  # not sorted, not milliseconds
    assert _split_page(odd, T, end, T, end) == (page, [], odd[-1:])


@pytest.mark.parametrize("name", [*PAGES, "random"])
def test_packed_rows_come_back_equal_and_of_the_same_types(
    name: str, parsers: tuple[Any, Any]
) -> None:
    page_at_once, _ = parsers
    page = random_page(random.Random(7), 1000) if name == "random" else PAGES[name]
    try:
        rows = page_at_once(page, {"inverse": False})
    except Exception:
        return  # nothing parsed, nothing to pack
    packed = _pack_rows(rows)
    if packed is None:  # kept as lists: only rows that are not [int, float x5]
        assert not rows or any(
            len(r) != 6 or type(r[0]) is not int or {type(v) for v in r[1:]} != {float}
            for r in rows
        )
        return
    back = _unpack_rows(packed)
    assert len(back) == len(rows)
    for b, r in zip(back, rows, strict=True):
        assert len(b) == len(r) and all(map(same, b, r)), (b, r)


def test_rows_that_are_not_int_and_floats_are_not_packed() -> None:
    good = [T, 1.0, 2.0, 0.5, 1.5, 3.0]
    assert _pack_rows([good]) is not None
    assert _pack_rows([good, [T, 1, 2.0, 0.5, 1.5, 3.0]]) is None  # an int value
    assert _pack_rows([good, [float(T), 1.0, 2.0, 0.5, 1.5, 3.0]]) is None  # a float time
    assert _pack_rows([good, [True, 1.0, 2.0, 0.5, 1.5, 3.0]]) is None  # a bool time
    assert _pack_rows([good, [T, None, 2.0, 0.5, 1.5, 3.0]]) is None
    assert _pack_rows([good, [T, 1.0, 2.0]]) is None  # short
    assert _pack_rows([good, [2**70, 1.0, 2.0, 0.5, 1.5, 3.0]]) is None  # beyond int64
