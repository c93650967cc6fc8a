"""Which empty slots of a run's answers are candle outages worth rebuilding from trades
(`sources.candle_holes`): after the listing, answered, settled and stable; never what a
run did not ask for, a bad answer to ask again, or a slot that may still get its candle."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from resources.exchange import FetchedBars
from seamless_assets.core.frame import Range
from seamless_assets.nodes import NodeId
from seamless_assets.sources import candle_holes

NODE = NodeId.parse("ohlcv:binance:BTC/USDT:1m")
T0 = 1_704_067_200
NOW = T0 + 10 * 86_400  # every slot below is long stable


def _page(
    window: Range, minutes: list[int], *, now: int = NOW, garbage: bool = False
) -> FetchedBars:
    ts_ms = np.array([(T0 + 60 * m) * 1000 for m in minutes], np.int64)
    rows: list[list[object]] = [[int(t), 1.0, 1.0, 1.0, 1.0, 1.0] for t in ts_ms]
    if garbage:
        rows.append([0, 1.0, 1.0, 1.0, 1.0, 1.0])  # an impossible open time
    return FetchedBars(rows=rows, window=window, server_now_s=now, closed_end=now // 60 * 60)


def _m(a: int, b: int) -> Range:
    return Range(T0 + 60 * a, T0 + 60 * b)


def test_holes_between_bars_inside_what_was_asked() -> None:
    page = _page(_m(0, 100), [m for m in range(100) if not 10 <= m < 13 and m != 50])
    assert candle_holes(NODE, [page], 2) == [_m(10, 13), _m(50, 51)]
    # a hole across two pages of one run is one outage
    a, b = _page(_m(0, 50), list(range(45))), _page(_m(50, 100), list(range(55, 100)))
    assert candle_holes(NODE, [a, b], 2) == [_m(45, 55)]


def test_from_the_listing_to_what_is_stable_edges_included() -> None:
    page = _page(_m(0, 100), list(range(20, 80)))
    # listing unknown: nothing before the first bar can be told from before listing
    assert candle_holes(NODE, [page], 2) == [_m(80, 100)]
    # listed at minute 5: the hole at the run's edge is an outage too, not before it
    assert candle_holes(NODE, [page], 2, listed_s=T0 + 300) == [_m(5, 20), _m(80, 100)]
    # a chunk of a later run, with no bar at all in it: from the listing on
    empty = _page(_m(200, 260), [])
    assert candle_holes(NODE, [empty], 2, listed_s=T0) == [_m(200, 260)]
    assert candle_holes(NODE, [empty], 2) == []


def test_not_between_ranges_the_run_did_not_ask_for() -> None:
    pages = [_page(_m(0, 1), [0]), _page(_m(500, 501), [500])]  # a rerun of two slots
    assert candle_holes(NODE, pages, 2) == []


def test_not_in_an_answer_that_sent_a_row_it_could_not_place() -> None:
    bad = _page(_m(0, 50), [m for m in range(50) if m != 20], garbage=True)
    good = _page(_m(50, 100), [m for m in range(50, 100) if m != 70])
    assert candle_holes(NODE, [bad, good], 2) == [_m(70, 71)]


def test_not_while_the_slot_may_still_get_its_candle() -> None:
    now = T0 + 60 * 99 + 30  # bar 99 forming, stabilization 2: stable before bar 97
    page = _page(_m(0, 100), [m for m in range(99) if m not in (40, 97)], now=now)
    assert candle_holes(NODE, [page], 2) == [_m(40, 41)]


@settings(max_examples=80, deadline=None)
@given(st.sets(st.integers(0, 199), min_size=2), st.integers(1, 4))
def test_holes_are_exactly_the_missing_slots_from_the_first_bar(
    present: set[int], pages: int
) -> None:
    cut = sorted({0, 200, *range(0, 200, 200 // pages)})
    chunks = [
        _page(_m(a, b), sorted(m for m in present if a <= m < b))
        for a, b in itertools.pairwise(cut)
    ]
    holes = candle_holes(NODE, chunks, 2)
    missing = {m for h in holes for m in range((h.start - T0) // 60, (h.end - T0) // 60)}
    assert missing == set(range(min(present), 200)) - present


def test_not_in_an_answer_with_a_row_off_the_grid() -> None:
    page = _page(_m(0, 50), [m for m in range(50) if m != 20])
    page.rows.append([(T0 + 60 * 20 + 30) * 1000, 1.0, 1.0, 1.0, 1.0, 1.0])  # misaligned
    assert candle_holes(NODE, [page], 2) == []
