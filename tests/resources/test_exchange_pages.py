"""A Binance klines page parsed at once, into rows or straight into arrays, gives exactly what
the row-by-row path gives (values, types, order), garbage included; the page split
recognises the usual page from its ends; packed rows come back equal, of the same types."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from resources.kline_pages import (
    PackedPage,
    fast_row_parser,
    pack_page,
    pack_rows,
    packing_pages,
    split_page,
    unfiltered,
    unpack_rows,
)

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
    "non-ascii digits": [row(0, "١٢", "1", "1", "1", "1")],
    "signs, exponents, bare points": [row(0, "+4", "5e-3", ".5", "5.", "-0"), row(1)],
    "overflow and underflow": [row(0, "1e400", "1", "1", "1", "1")],
    "subnormal and negative zero": [row(0, "4.9e-324", "-0.0", "1e-400", "1", "1")],
    "one infinity": [row(0, "inf", "1", "1", "1", "1"), row(1)],
    "an open time beyond int64": [[2**70, *GOOD[1:]], row(1)],
    "a bool open time": [[True, *GOOD[1:]], row(1)],
    "a float open time": [[float(T), *GOOD[1:]], row(1)],
    "long rows of one bar": [row(0) + ["x"] * 20],
}


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


@pytest.fixture(scope="module")
def parsers() -> tuple[Any, Any]:
    import ccxt.async_support as ccxt_async

    exchange = ccxt_async.binance()
    exchange.parse_ohlcv = fast_row_parser(exchange.parse_ohlcv)
    ccxt_pages = exchange.parse_ohlcvs
    return unfiltered(ccxt_pages, fast_rows=True), unfiltered(ccxt_pages)


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
    assert split_page(page, T, end, T - 600_000, end + 600_000) == (page, [], [])
    repeat = [[T - 60_000, 1.0, 1.0, 1.0, 1.0, 1.0], *page]  # one bar before the cursor
    assert split_page(repeat, T, end, T - 600_000, end) == (page, repeat[:1], [])
    odd = [*page, [5, 1.0, 1.0, 1.0, 1.0, 1.0]]  # not sorted, not milliseconds
    assert split_page(odd, T, end, T, end) == (page, [], odd[-1:])


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
    packed = pack_rows(rows)
    if packed is None:  # kept as lists: only rows that are not [int, float x5]
        assert not rows or any(
            len(r) != 6
            or type(r[0]) is not int
            or not -(2**63) <= r[0] < 2**63
            or {type(v) for v in r[1:]} != {float}
            for r in rows
        )
        return
    back = unpack_rows(packed)
    assert len(back) == len(rows)
    for b, r in zip(back, rows, strict=True):
        assert len(b) == len(r) and all(map(same, b, r)), (b, r)


def test_rows_that_are_not_int_and_floats_are_not_packed() -> None:
    good = [T, 1.0, 2.0, 0.5, 1.5, 3.0]
    assert pack_rows([good]) is not None
    assert pack_rows([good, [T, 1, 2.0, 0.5, 1.5, 3.0]]) is None  # an int value
    assert pack_rows([good, [float(T), 1.0, 2.0, 0.5, 1.5, 3.0]]) is None  # a float time
    assert pack_rows([good, [True, 1.0, 2.0, 0.5, 1.5, 3.0]]) is None  # a bool time
    assert pack_rows([good, [T, None, 2.0, 0.5, 1.5, 3.0]]) is None
    assert pack_rows([good, [T, 1.0, 2.0]]) is None  # short
    assert pack_rows([good, [2**70, 1.0, 2.0, 0.5, 1.5, 3.0]]) is None  # beyond int64


def bits(values: np.ndarray) -> np.ndarray:
    """The float64 values as their bits: -0.0 and 0.0 differ, NaNs compare equal."""
    return np.ascontiguousarray(values, dtype=np.float64).view(np.int64)


@pytest.mark.parametrize("name", [*PAGES, "random"])
def test_a_page_packed_at_once_equals_the_row_path_packed(
    name: str, parsers: tuple[Any, Any]
) -> None:
    """Straight into arrays (`pack_page`): the very bits of the row path's rows packed, or
    None (the row path decides) -- never other values."""
    _, row_by_row = parsers
    page = random_page(random.Random(7), 1000) if name == "random" else PAGES[name]
    rows_of_page = [r for r in page if isinstance(r, list) and len(r) >= 6]
    packed_page = pack_page(rows_of_page) if len(rows_of_page) == len(page) else None
    if packed_page is None:
        return
    expected = pack_rows(row_by_row([list(r) for r in page], {"inverse": False}))
    assert expected is not None, "packed at once what the row path cannot pack"
    assert packed_page.opens.dtype == np.int64 and packed_page.values.shape == (len(page), 5)
    assert np.array_equal(packed_page.opens, expected[0])
    assert np.array_equal(bits(packed_page.values), bits(expected[1]))
    assert packed_page.rows() == unpack_rows(expected)


@pytest.mark.parametrize(
    "name", ["clean", "unsorted", "random", "signs, exponents, bare points", "long rows of one bar"]
)
def test_clean_pages_are_packed_at_once_while_packing(name: str, parsers: tuple[Any, Any]) -> None:
    """Pages of plain decimal strings become `PackedPage`s inside `packing_pages` only; the
    same call outside it gives rows, as before."""
    page_at_once, _ = parsers
    page = random_page(random.Random(7), 1000) if name == "random" else PAGES[name]
    rows = page_at_once([list(r) for r in page], {"inverse": False})
    with packing_pages():
        packed = page_at_once([list(r) for r in page], {"inverse": False})
    assert isinstance(rows, list) and isinstance(packed, PackedPage)
    assert packed.rows() == rows
    assert not isinstance(page_at_once(page, {"inverse": False}), PackedPage)


@pytest.mark.parametrize(
    "name",
    [
        "garbage",
        "nan and infinity",
        "one infinity",
        "a null value",
        "a null open time",
        "numbers, not strings",
        "underscores and spaces",
        "non-ascii digits",
        "overflow and underflow",
        "an open time beyond int64",
        "a bool open time",
        "a float open time",
    ],
)
def test_pages_arrow_would_read_otherwise_go_the_row_path(name: str) -> None:
    """A value Arrow does not parse as `float()` does, a null, NaN or an infinity, an open
    time that is not an int64: not packed at once (the row path decides)."""
    page = [r for r in PAGES[name] if isinstance(r, list) and len(r) >= 6]
    assert pack_page(page) is None


def test_a_page_under_an_inverse_market_is_never_packed_at_once(
    parsers: tuple[Any, Any],
) -> None:
    page_at_once, _ = parsers
    with packing_pages():
        got = page_at_once([list(r) for r in PAGES["clean"]], {"inverse": True})
    assert not isinstance(got, PackedPage)
