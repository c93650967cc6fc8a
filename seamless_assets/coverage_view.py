"""A node's coverage as a markdown picture for the Dagster UI: one cell per partition.

Rows are months of daily partitions (years of monthly ones), one glyph per partition:
complete, exchange gap (all stored but a window the exchange confirmed empty, e.g. a
maintenance), from trades (all stored, some bars rebuilt from trades where the candles
stayed missing), partial, confirmed empty (the exchange has no bars there), missing. The newest
`DETAIL_ROWS` rows are drawn cell by cell; older history is summarised one line per year,
and the partitions that are not complete are listed as ranges (at most `MAX_RANGES`), so a
`1m` node back to 2017 renders a few dozen lines, not thousands; fewer rows and ranges
when that keeps the picture short enough for Dagster's UI to draw it in place. The legend
names the states drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Protocol

COMPLETE, PARTIAL, CONFIRMED_EMPTY, MISSING = "complete", "partial", "confirmed_empty", "missing"
EXCHANGE_GAP = "exchange_gap"  # every bar there is stored, but the exchange has a hole in it
FROM_TRADES = "from_trades"  # every bar stored, some rebuilt from trades (provenance `trades`)
STATES = (COMPLETE, EXCHANGE_GAP, FROM_TRADES, PARTIAL, CONFIRMED_EMPTY, MISSING)
GLYPHS = {
    COMPLETE: "█",
    EXCHANGE_GAP: "◐",
    FROM_TRADES: "▣",
    PARTIAL: "▒",
    CONFIRMED_EMPTY: "○",
    MISSING: "·",
}
DETAIL_ROWS = 12
MAX_RANGES = 20
_MONTHLY_S = 28 * 86_400  # a partition this long or longer is a month: rows become years


class Coverage(Protocol):
    """What the picture reads of a partition (`sensors.coverage_scan.PartitionCoverage`)."""

    @property
    def key(self) -> str: ...
    @property
    def expected_bars(self) -> int: ...
    @property
    def stored_bars(self) -> int: ...
    @property
    def empty_bars(self) -> int: ...
    @property
    def trades_bars(self) -> int: ...
    @property
    def window(self) -> _Window: ...


class _Window(Protocol):
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


def state_of(partition: Coverage) -> str:
    """complete | exchange_gap | from_trades | partial | confirmed_empty | missing, from
    stored vs expected bars (`expected_bars` excludes the bars the exchange confirmed
    empty) and the bars rebuilt from trades."""
    if partition.expected_bars <= 0:
        return CONFIRMED_EMPTY if partition.empty_bars > 0 else COMPLETE
    if partition.stored_bars >= partition.expected_bars:
        if partition.trades_bars > 0:
            return FROM_TRADES
        return EXCHANGE_GAP if partition.empty_bars > 0 else COMPLETE
    return PARTIAL if partition.stored_bars > 0 else MISSING


@dataclass(frozen=True)
class _Cell:
    key: str
    state: str
    start: datetime
    row: str  # `YYYY-MM` (daily partitions) or `YYYY` (monthly)
    column: int  # day of month or month, 1-based


def _cells(coverage: Sequence[Coverage]) -> list[_Cell]:
    cells = []
    for p in coverage:
        start = datetime.fromtimestamp(p.window.start, tz=UTC)
        monthly = p.window.end - p.window.start >= _MONTHLY_S
        row = f"{start:%Y}" if monthly else f"{start:%Y-%m}"
        cells.append(_Cell(p.key, state_of(p), start, row, start.month if monthly else start.day))
    return cells


def _counts(cells: Sequence[_Cell]) -> str:
    counts = {s: sum(c.state == s for c in cells) for s in STATES}
    return ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in STATES if counts[s])


def _ranges(cells: Sequence[_Cell]) -> list[str]:
    """Consecutive partitions in the same state other than complete: `first … last: n state`."""
    out = []
    for state, run in groupby(cells, key=lambda c: c.state):
        group = list(run)
        if state != COMPLETE:
            span = group[0].key if len(group) == 1 else f"{group[0].key} … {group[-1].key}"
            out.append(f"- {span}: {len(group)} {state.replace('_', ' ')}")
    return out


#: Dagster's UI draws a markdown value in place only under this many characters (else
#: behind a "[Show Markdown]" link): the picture takes the most detail that fits
UI_INLINE_MAX = 999
#: (calendar rows drawn cell by cell, not-complete ranges listed), most detail first
_DETAIL_LEVELS = ((DETAIL_ROWS, MAX_RANGES), (DETAIL_ROWS, 10), (6, 10), (6, 5), (3, 5), (2, 3))


def coverage_markdown(node_label: str, coverage: Sequence[Coverage], scanned_at: str) -> str:
    """The picture of one node's `coverage` (partitions in time order): with the most
    detail that Dagster's UI still shows in place (`UI_INLINE_MAX`), else the full one."""
    cells = _cells(coverage)
    if not cells:
        return f"**Coverage of {node_label}**: no closed partition yet (scanned {scanned_at})."
    pictures = (_picture(node_label, cells, scanned_at, *level) for level in _DETAIL_LEVELS)
    full = next(pictures)
    if len(full) <= UI_INLINE_MAX:
        return full
    return next((p for p in pictures if len(p) <= UI_INLINE_MAX), full)


def _picture(
    node_label: str, cells: Sequence[_Cell], scanned_at: str, detail_rows: int, max_ranges: int
) -> str:
    drawn = {c.state for c in cells}
    lines = [
        f"**Coverage of {node_label}**: {cells[0].key} … {cells[-1].key}: {_counts(cells)} "
        f"(scanned {scanned_at})",
        "",
        "  ".join(f"{GLYPHS[s]} {s.replace('_', ' ')}" for s in STATES if s in drawn),
        "",
    ]
    rows = [(row, list(group)) for row, group in groupby(cells, key=lambda c: c.row)]
    older, recent = rows[:-detail_rows], rows[-detail_rows:]
    if older:
        lines += ["| Year (summary) | Partitions |", "|---|---|"]
        by_year = groupby((c for _, group in older for c in group), key=lambda c: c.start.year)
        lines += [f"| {year} | {_counts(list(group))} |" for year, group in by_year]
        lines.append("")
    width = 12 if len(recent[0][0]) == 4 else 31
    lines.append("```")
    lines.append(" " * 8 + "".join(str(i % 10) for i in range(1, width + 1)))
    for row, group in recent:
        line = [" "] * width
        for cell in group:
            line[cell.column - 1] = GLYPHS[cell.state]
        lines.append(f"{row:<8}" + "".join(line).rstrip())
    lines.append("```")
    problems = _ranges(cells)
    if problems:
        lines += ["", f"**Not complete** ({len(problems)} range(s), newest last):"]
        if len(problems) > max_ranges:
            lines.append(f"- … {len(problems) - max_ranges} older range(s) not listed")
        lines += problems[-max_ranges:]
    return "\n".join(lines)
