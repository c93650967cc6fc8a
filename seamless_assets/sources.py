"""Bars of a run from sources besides the exchange's REST candles, as pages like REST's.

* `ArchiveRun`: whole days from Binance's public archives (`resources.archives`), before
  REST: a chunk's ranges are served by the archive files inside them and REST fills the
  rest (parts of days, files not published yet, quarantined files) and is asked for the
  slots a file lacks: a file proves the bars it has, never that a slot is empty. Each
  file is downloaded once per run, even when it spans two chunks.
* `trades_pages`: where the candles a chunk fetched leave slots missing between bars
  (a candle outage), the bars the exchange's trades make (`core.trades`).

Each page names its source (`FetchedBars.source`), which settling records as provenance
(`core.provenance`): archive pages by the file's checksum verdict, trades pages as
`trades`. A trades page answers for its whole window, like a REST response does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from resources.archives import (
    ARCHIVE_INTERVALS,
    MARKET_PATHS,
    ArchiveFile,
    ArchiveSource,
    ArchiveVerdict,
    archive_files,
    fetch_archive,
)
from resources.ccxt_lean import ccxt_errors
from resources.exchange import ExchangeClient, FetchedBars
from resources.trades import fetch_trades

from .config import SeamlessConfig
from .core.coverage import (
    merge_ranges,
    missing_ranges,
    ranges_from_timestamps,
    sorted_unique,
    subtract_ranges,
)
from .core.frame import TS, VALUE_COLUMNS, Range
from .core.provenance import ARCHIVE, TRADES
from .core.stabilization import closed_end, stable_end
from .core.trades import bars_from_trades
from .errors import SeamlessError
from .nodes import NodeId, market_kind
from .run_outcome import PipelineSettings

if TYPE_CHECKING:
    import aiohttp
    import pandas as pd

Log = Callable[[str], Any]
_SOURCE_OF_STATUS = {
    "verified": ARCHIVE,
    "checksum_mismatch": "archive_checksum_mismatch",
    "checksum_absent": "archive_checksum_absent",
}


def archives_apply(node: NodeId) -> bool:
    """True when the public archives publish this node's candles."""
    return (
        node.kind == "ohlcv"
        and market_kind(node.symbol) in MARKET_PATHS
        and node.timeframe.code in ARCHIVE_INTERVALS
    )


def pipeline_settings_for(config: SeamlessConfig, node: NodeId) -> PipelineSettings:
    """How a backfill of `node` runs: the configured sources besides REST included."""
    section, exchange = config.seamless, config.exchanges.get(node.exchange)
    archives = None
    if exchange is not None and exchange.archives.enabled and archives_apply(node):
        archives = ArchiveSource(
            base_url=exchange.archives.base_url,
            max_concurrent_downloads=exchange.archives.max_concurrent_downloads,
            quarantine_dir=config.data_dir / "quarantine",
        )
    return PipelineSettings(
        stabilization_bars=section.artifact.stabilization_bars,
        conformance_version=section.conformance.version,
        archives=archives,
        trades_repair=trades_repair_applies(node) and (exchange is None or exchange.trades_repair),
    )


#: where trades page by id and reach back in time (`resources.trades`: Binance spot's
#: aggTrades); other venues serve recent trades only, so nothing there is repaired
TRADES_REPAIR_MARKETS = frozenset({("binance", "spot")})


def trades_repair_applies(node: NodeId) -> bool:
    return (
        node.kind == "ohlcv" and (node.exchange, market_kind(node.symbol)) in TRADES_REPAIR_MARKETS
    )


def page_of(
    frame: pd.DataFrame, window: Range, now_s: int, closed: int, source: str
) -> FetchedBars:
    """A packed page of canonical bars that answers for `window`."""
    ts_ms = frame[TS].to_numpy(dtype=np.int64) * 1000
    values = frame[list(VALUE_COLUMNS)].to_numpy(dtype=np.float64)
    return FetchedBars(
        rows=[],
        window=window,
        server_now_s=now_s,
        closed_end=closed,
        row_windows=np.tile(np.array([window.start, window.end], np.int64), (len(ts_ms), 1)),
        answers=(window,),
        packed=(ts_ms, values),
        source=source,
    )


class ArchiveRun:
    """The archive files of one run of one node; `async with`, then `take` per chunk."""

    def __init__(
        self,
        node: NodeId,
        source: ArchiveSource,
        symbol_id: str,
        ranges: Sequence[Range],
        exchange_now: Callable[[], float],
        log: Log,
    ) -> None:
        self.node, self.source, self.log = node, source, log
        self.exchange_now = exchange_now  # the pages' clock: the exchange's, like REST's
        kind, interval = market_kind(node.symbol), node.timeframe.code
        self.files = [f for r in ranges for f in archive_files(kind, symbol_id, interval, r)]
        self._tasks: dict[ArchiveFile, asyncio.Task[ArchiveVerdict]] = {}
        self._downloads = asyncio.Semaphore(source.max_concurrent_downloads)
        self._session: aiohttp.ClientSession | None = None
        # two threads judge the files (they release the GIL): memory of two files at a time
        self._judging = ThreadPoolExecutor(2, thread_name_prefix="archive-judge")
        self.counts: dict[str, int] = {}  # files per verdict status, for the run's log

    async def __aenter__(self) -> ArchiveRun:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.counts:  # what the archives gave this run, e.g. files not published yet
            files = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
            self.log(f"{self.node}: archive files: {files} (absent and quarantined: REST)")
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._judging.shutdown(wait=True)

    def _verdict(self, file: ArchiveFile) -> asyncio.Task[ArchiveVerdict]:
        if file not in self._tasks:
            assert self._session is not None, "use ArchiveRun as `async with`"
            self._tasks[file] = asyncio.ensure_future(
                fetch_archive(
                    self._session,
                    file,
                    self.node.interval_s,
                    base_url=self.source.base_url,
                    downloads=self._downloads,
                    quarantine_dir=self.source.quarantine_dir,
                    judging=self._judging,
                )
            )
        return self._tasks[file]

    async def take(self, ranges: Sequence[Range]) -> tuple[list[FetchedBars], list[Range]]:
        """(pages of the archive files inside `ranges`, the parts of `ranges` left to REST)."""
        if not ranges:
            return [], []
        window = Range(ranges[0].start, ranges[-1].end)
        files = [f for f in self.files if f.range.intersect(window)]
        verdicts = await asyncio.gather(*(self._verdict(f) for f in files))
        now = int(self.exchange_now())
        closed = closed_end(now, self.node.interval_s, origin_s=self.node.timeframe.origin_s)
        pages, served, holes = [], [], []
        interval, origin = self.node.interval_s, self.node.timeframe.origin_s
        for file, verdict in zip(files, verdicts, strict=True):
            if file.range.end <= window.end:  # no later chunk reads it
                self._tasks.pop(file, None)
                self.counts[verdict.status] = self.counts.get(verdict.status, 0) + 1
            if verdict.status not in _SOURCE_OF_STATUS or verdict.bars is None:
                if verdict.status == "quarantined":
                    self.log(
                        f"{self.node}: archive {file.name} quarantined ({verdict.reason}); "
                        "its days are fetched over REST"
                    )
                continue
            if verdict.status != "verified":
                self.log(f"{self.node}: archive {file.name} accepted, {verdict.reason}")
            ts = verdict.bars[TS].to_numpy()
            for r in ranges:
                if (part := file.range.intersect(r)) is None:
                    continue
                lo, hi = np.searchsorted(ts, [part.start, part.end])
                bars = verdict.bars.iloc[lo:hi]
                pages.append(page_of(bars, part, now, closed, _SOURCE_OF_STATUS[verdict.status]))
                served.append(part)
                # slots the file lacks: REST says whether they are empty (or has them)
                got = ranges_from_timestamps(ts[lo:hi], interval)
                holes += missing_ranges(got, part, interval, origin_s=origin)
        return pages, merge_ranges([*subtract_ranges(ranges, served), *holes])


def _page_ts(page: FetchedBars, interval_s: int, origin_s: int) -> tuple[np.ndarray, bool]:
    """(open times (s) of the page's rows placed in its window, whether every row is):
    a page with a row it could not place (garbage, an open time outside the window or off
    the grid) settles none of its empty slots, since that row may have been meant for any
    of them."""
    if page.packed is not None:
        ms = page.packed[0]
    else:
        ms = np.array([r[0] for r in page.rows if r and type(r[0]) is int], np.int64)
    ts = ms // 1000
    placed = (
        (ms % 1000 == 0)
        & (ts >= page.window.start)
        & (ts < page.window.end)
        & ((ts - origin_s) % interval_s == 0)
    )
    rows = len(page.packed[0]) if page.packed is not None else len(page.rows)
    return ts[placed], int(placed.sum()) == rows


def candle_holes(
    node: NodeId,
    pages: Sequence[FetchedBars],
    stabilization_bars: int,
    listed_s: int | None = None,
) -> list[Range]:
    """Slots the pages answered without a bar, where the market was trading: from its
    listing (`listed_s`, the recorded first bar; else the pages' first bar) to the end of
    what is stable by the exchange's clock (a fresher empty slot may still get its candle
    late). Only inside the windows the pages answered (not what lies between the ranges a
    run asked for) and in answers that placed every row they sent: a candle outage, not
    a bad answer to ask again. A hole at a chunk's or a run's edge counts like one inside."""
    if not pages:
        return []
    interval, origin = node.interval_s, node.timeframe.origin_s
    read = [_page_ts(p, interval, origin) for p in pages]
    ts = sorted_unique(np.concatenate([t for t, _ in read]))
    first = listed_s if listed_s is not None else (int(ts[0]) if len(ts) else None)
    if first is None:
        return []
    stable = min(
        stable_end(p.server_now_s, interval, stabilization_bars, origin_s=origin) for p in pages
    )
    span = Range(first, max(first, stable))
    unsettled = [p.window for p, (_, placed) in zip(pages, read, strict=True) if not placed]
    asked = subtract_ranges(merge_ranges(p.window for p in pages), unsettled)
    holes = subtract_ranges([span], ranges_from_timestamps(ts, interval))
    return [part for h in holes for a in asked if (part := h.intersect(a)) is not None]


async def trades_pages(
    client: ExchangeClient,
    node: NodeId,
    pages: Sequence[FetchedBars],
    stabilization_bars: int,
    log: Log,
    listed_s: int | None = None,
) -> list[FetchedBars]:
    """Pages of bars rebuilt from trades for the candle holes of `pages` that have trades."""
    holes = merge_ranges(candle_holes(node, pages, stabilization_bars, listed_s))
    if not holes or node.kind != "ohlcv" or not client.exchange.has.get("fetchTrades"):
        return []
    now = max(p.server_now_s for p in pages)
    closed = min(p.closed_end for p in pages)
    out = []
    for hole in holes:
        try:
            trades = await fetch_trades(client, node.symbol, hole)
        except (SeamlessError, ccxt_errors.BaseError) as exc:  # the candles stand without it
            log(f"{node}: candles missing in {hole}; its trades could not be read ({exc})")
            continue
        try:
            bars = bars_from_trades(
                trades.ts_ms,
                trades.price,
                trades.amount,
                node.interval_s,
                origin_s=node.timeframe.origin_s,
            )
        except ValueError as exc:
            log(f"{node}: candles missing in {hole}; its trades make no exact bars ({exc})")
            continue
        if not len(bars):
            log(
                f"{node}: candles missing in {hole}, and no trades there either "
                f"({trades.requests} request(s)): an exchange gap"
            )
            continue
        log(
            f"{node}: candles missing in {hole}: {len(bars)} bar(s) rebuilt from "
            f"{len(trades)} trade(s) ({trades.requests} request(s)), provenance `trades`"
        )
        out.append(page_of(bars, hole, now, closed, TRADES))
    return out
