"""The coverage picture: the four states, month boundaries, bounded size for long histories."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from seamless_assets.core.frame import Range
from seamless_assets.coverage_view import (
    COMPLETE,
    CONFIRMED_EMPTY,
    DETAIL_ROWS,
    EXCHANGE_GAP,
    FROM_TRADES,
    GLYPHS,
    MAX_RANGES,
    MISSING,
    PARTIAL,
    UI_INLINE_MAX,
    coverage_markdown,
    state_of,
)

DAY = 86_400
BARS = 1440  # a day of 1m bars


@dataclass(frozen=True)
class Part:
    key: str
    window: Range
    expected_bars: int
    stored_bars: int
    empty_bars: int
    trades_bars: int = 0


def day(d: date, state: str) -> Part:
    start = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())
    stored, expected, empty = {
        COMPLETE: (BARS, BARS, 0),
        PARTIAL: (700, BARS, 0),
        CONFIRMED_EMPTY: (0, 0, BARS),
        MISSING: (0, BARS, 0),
    }[state]
    return Part(d.isoformat(), Range(start, start + DAY), expected, stored, empty)


def days(first: date, last: date, state: str = COMPLETE) -> list[Part]:
    return [day(first + timedelta(n), state) for n in range((last - first).days + 1)]


def grid_rows(markdown: str) -> dict[str, str]:
    """The calendar's rows (inside the code fence) by their label."""
    inside = markdown.split("```")[1].strip("\n").splitlines()[1:]
    return {line[:8].strip(): line[8:] for line in inside}


def test_each_state_from_bars() -> None:
    d = date(2024, 3, 1)
    assert [state_of(day(d, s)) for s in (COMPLETE, PARTIAL, CONFIRMED_EMPTY, MISSING)] == [
        COMPLETE,
        PARTIAL,
        CONFIRMED_EMPTY,
        MISSING,
    ]
    # a day partly confirmed empty (a maintenance) and the rest stored: its own state
    assert state_of(Part("x", Range(0, DAY), 1000, 1000, 440)) == EXCHANGE_GAP
    # partly confirmed empty and partly not stored yet: partial
    assert state_of(Part("x", Range(0, DAY), 1000, 900, 440)) == PARTIAL
    # every bar stored, some rebuilt from trades (with or without a window left empty)
    assert state_of(Part("x", Range(0, DAY), BARS, BARS, 0, 7)) == FROM_TRADES
    assert state_of(Part("x", Range(0, DAY), 1000, 1000, 440, 7)) == FROM_TRADES
    assert state_of(Part("x", Range(0, DAY), BARS, 900, 0, 7)) == PARTIAL


def test_days_repaired_from_trades_are_drawn_and_listed() -> None:
    parts = days(date(2024, 1, 1), date(2024, 1, 4))
    parts[1] = Part("2024-01-02", parts[1].window, BARS, BARS, 0, 30)
    md = coverage_markdown("binance_BTC_USDT_1m", parts, "now")
    assert grid_rows(md)["2024-01"] == GLYPHS[COMPLETE] + GLYPHS[FROM_TRADES] + GLYPHS[COMPLETE] * 2
    assert "- 2024-01-02: 1 from trades" in md
    assert f"{GLYPHS[FROM_TRADES]} from trades" in md


def test_a_maintenance_gap_inside_a_stored_day_is_drawn_and_listed() -> None:
    parts = days(date(2024, 1, 1), date(2024, 1, 5))
    parts[2] = Part("2024-01-03", parts[2].window, BARS - 120, BARS - 120, 120)
    md = coverage_markdown("binance_BTC_USDT_1m", parts, "now")
    assert (
        grid_rows(md)["2024-01"]
        == GLYPHS[COMPLETE] * 2 + GLYPHS[EXCHANGE_GAP] + GLYPHS[COMPLETE] * 2
    )
    assert "- 2024-01-03: 1 exchange gap" in md
    assert f"{GLYPHS[EXCHANGE_GAP]} exchange gap" in md  # in the legend


def test_all_four_states_are_drawn_on_their_days_across_a_month_boundary() -> None:
    parts = days(date(2024, 2, 27), date(2024, 3, 3))
    parts[1] = day(date(2024, 2, 28), PARTIAL)
    parts[2] = day(date(2024, 2, 29), MISSING)  # a leap day, last of February
    parts[3] = day(date(2024, 3, 1), CONFIRMED_EMPTY)
    md = coverage_markdown("binance_BTC_USDT_1m", parts, "2024-03-04 00:00 UTC")
    rows = grid_rows(md)
    assert rows["2024-02"] == " " * 26 + GLYPHS[COMPLETE] + GLYPHS[PARTIAL] + GLYPHS[MISSING]
    assert rows["2024-03"] == GLYPHS[CONFIRMED_EMPTY] + GLYPHS[COMPLETE] * 2
    assert "2024-02-27 … 2024-03-03: 3 complete, 1 partial, 1 confirmed empty, 1 missing" in md
    assert "- 2024-02-28: 1 partial" in md and "- 2024-02-29: 1 missing" in md
    assert "- 2024-03-01: 1 confirmed empty" in md
    for state in (COMPLETE, PARTIAL, CONFIRMED_EMPTY, MISSING):  # the legend names each
        assert f"{GLYPHS[state]} {state.replace('_', ' ')}" in md


def test_consecutive_problem_days_are_one_range() -> None:
    parts = days(date(2024, 1, 1), date(2024, 1, 20))
    for n in range(4, 9):
        parts[n] = day(date(2024, 1, n + 1), MISSING)
    md = coverage_markdown("n", parts, "now")
    assert "- 2024-01-05 … 2024-01-09: 5 missing" in md
    assert "1 range(s)" in md


def test_a_1m_node_back_to_2017_stays_small() -> None:
    parts = days(date(2017, 8, 17), date(2026, 12, 3))  # ~3400 daily partitions
    for n in range(0, len(parts), 50):  # a missing day every 50 days: ~68 ranges
        parts[n] = day(date(2017, 8, 17) + timedelta(n), MISSING)
    md = coverage_markdown("binance_BTC_USDT_1m", parts, "now")
    lines = md.splitlines()
    # short enough for Dagster's UI to draw it in place: fewer calendar rows and ranges
    assert len(md) <= UI_INLINE_MAX, len(md)
    assert 3 <= len(grid_rows(md)) < DETAIL_ROWS
    assert "| 2017 |" in md and "| 2025 |" in md  # older years summarised
    listed = [line for line in lines if line.startswith("- 20")]
    assert 3 <= len(listed) < MAX_RANGES
    assert listed[-1].startswith("- 2026-")  # the newest ranges are the ones listed
    assert "older range(s) not listed" in md


def test_a_short_history_keeps_every_detail_and_the_legend_names_what_is_drawn() -> None:
    parts = days(date(2024, 1, 1), date(2024, 12, 31))
    parts[40] = day(date(2024, 2, 10), MISSING)
    md = coverage_markdown("binance_BTC_USDT_1m", parts, "now")
    assert len(md) <= UI_INLINE_MAX and len(grid_rows(md)) == DETAIL_ROWS
    assert f"{GLYPHS[MISSING]} missing" in md and f"{GLYPHS[PARTIAL]} partial" not in md


def test_monthly_partitions_draw_years() -> None:
    parts = []
    for month in range(1, 13):
        start = int(datetime(2023, month, 1, tzinfo=UTC).timestamp())
        end_month = datetime(2023 + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        stored = 0 if month == 6 else 30
        parts.append(
            Part(f"2023-{month:02d}-01", Range(start, int(end_month.timestamp())), 30, stored, 0)
        )
    rows = grid_rows(coverage_markdown("binance_BTC_USDT_1d", parts, "now"))
    assert rows == {"2023": GLYPHS[COMPLETE] * 5 + GLYPHS[MISSING] + GLYPHS[COMPLETE] * 6}


def test_no_partitions_yet() -> None:
    assert "no closed partition yet" in coverage_markdown("n", [], "now")
