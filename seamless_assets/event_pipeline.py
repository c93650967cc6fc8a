"""One event node, a run of day partitions: fetch, conform, store hot, publish, snapshot.

The event counterpart of `pipeline` (bars), plain Python so the asset and tests share it.
The parts of the run's days that are settled by the exchange's clock (ended at least
`settle_s` ago) and not answered yet are fetched whole (`resources.funding` /
`resources.trades`; contiguous days joined into one fetch up to `DAYS_PER_FETCH`), so
the exchange's answer is the record of that span: it is conformed (every dropped row one
flag, counted on the day of its row), upserted into the hot store and recorded as
*answered* (the event kinds' coverage: events lie on no grid, so there are no slots to
count). A partition whose whole day is
answered is published as one write-once segment, read back from the hot store (the
stored version of each row: a trade's first, a funding's last), and the node's snapshot
is committed once the published set changed. Crash safety as for bars: rows reach the
hot store before any segment, a segment's manifest is written last, and every step is
idempotent, so a rerun completes what a crash left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.coverage import intersect_ranges, subtract_ranges
from .core.event_rows import ConformedEvents
from .core.frame import Range, iso_utc
from .core.funding import funding_coverage, inferred_intervals, interval_anomalies
from .event_nodes import EventNodeId

if TYPE_CHECKING:
    from resources.artifacts.event_segments import EventSegmentStore
    from resources.exchange import ExchangeClient
    from resources.hot_store.event_tables import EventStore

    from .core.snapshot import Snapshot

#: an event span is settled (the exchange's answer for it final) this long after it ends
EVENT_SETTLE_S = 120
#: spans fetched at once (the rate limiter paces the requests themselves)
CONCURRENT_FETCHES = 4
#: days one fetch may span: a year of 8h fundings is two 1000-row pages; a day of a busy
#: market's trades is tens of thousands of rows, held in memory until conformed
DAYS_PER_FETCH = {"funding": 366, "trades": 1}


@dataclass(frozen=True)
class EventPartitionOutcome:
    """What happened to one day of an event node."""

    window: Range
    rows: int  # rows of the day stored (hot store) after the run
    fetched: int  # rows the exchange answered for the settled part of the day
    answered: tuple[Range, ...]  # parts of the day known complete
    coverage_ratio: float
    flags: dict[str, int]
    anomalies: tuple[Range, ...] = ()  # funding: spans where a funding should have been
    fingerprint: str | None = None  # the published segment, when the day is complete
    uri: str | None = None
    written: bool = False  # this run stored the segment's bytes

    @property
    def published(self) -> bool:
        return self.fingerprint is not None


@dataclass
class EventRunOutcome:
    node: EventNodeId
    partitions: list[EventPartitionOutcome]
    requests: int = 0
    snapshot: Snapshot | None = None  # committed by this run (None: set unchanged)
    intervals: list[tuple[Range, int]] = field(default_factory=list)  # funding regimes

    @property
    def published(self) -> list[EventPartitionOutcome]:
        return [p for p in self.partitions if p.published]

    @property
    def coverage_ratio(self) -> float:
        total = sum(p.window.duration_s for p in self.partitions)
        covered = sum(p.coverage_ratio * p.window.duration_s for p in self.partitions)
        return covered / total if total else 1.0

    @property
    def flags(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.partitions:
            for flag, count in p.flags.items():
                out[flag] = out.get(flag, 0) + count
        return out


async def _fetch(
    client: ExchangeClient, node: EventNodeId, span: Range
) -> tuple[Sequence[dict[str, Any]], int]:
    """ccxt's rows of `span` and the requests they took."""
    if node.kind == "funding":
        from resources.funding import fetch_funding

        funding = await fetch_funding(client, node.symbol, span)
        return funding.raw, funding.requests
    from resources.trades import fetch_trades

    trades = await fetch_trades(client, node.symbol, span)
    return trades.raw, trades.requests


def fetch_spans(partitions: Sequence[Range], todo: Sequence[Range], max_days: int) -> list[Range]:
    """The spans to ask the exchange for: the parts of `todo` (unanswered, settled time)
    inside the run's partitions, contiguous ones joined up to `max_days` partitions."""
    spans: list[Range] = []
    for window in partitions:
        for part in intersect_ranges(todo, window):
            last = spans[-1] if spans else None
            if (
                last is not None
                and last.end == part.start
                and part.end - last.start <= max_days * window.duration_s
            ):
                spans[-1] = Range(last.start, part.end)
            else:
                spans.append(part)
    return spans


def partition_flags(
    conformed: ConformedEvents, windows: Sequence[Range], names: Sequence[str]
) -> dict[Range, dict[str, int]]:
    """Conformance flags of one fetch split by partition (by each row's listed ts)."""
    out = {w: dict.fromkeys(names, 0) for w in windows}
    for table in (conformed.dropped, conformed.corrected):
        for ts_ms, flag in zip(table["ts"].tolist(), table["flag"].tolist(), strict=True):
            for window in windows:
                if window.start * 1000 <= ts_ms < window.end * 1000:
                    out[window][flag] = out[window].get(flag, 0) + 1
                    break
    return out


async def backfill_events(
    node: EventNodeId,
    partitions: Sequence[Range],
    *,
    hot: EventStore,
    artifacts: EventSegmentStore,
    client: ExchangeClient,
    conformance_version: str,
    settle_s: int = EVENT_SETTLE_S,
    refetch: bool = False,
    log: Callable[[str], None] = lambda _: None,
    wall_clock: Callable[[], float] = time.time,
) -> EventRunOutcome:
    """Fetch, store and publish `partitions` (day windows, in time order) of `node`.
    A span already answered is not asked again unless `refetch` (exchange restatements)."""
    with hot.session():
        async with client:
            now_s = await client.server_now_s()
            settled_end = int(now_s) - settle_s
            whole = Range(partitions[0].start, partitions[-1].end)
            settled = [Range(whole.start, min(whole.end, settled_end))]
            known = [] if refetch else hot.answered(node.kind, str(node), whole)
            todo = subtract_ranges(settled, known)
            spans = fetch_spans(partitions, todo, DAYS_PER_FETCH[node.kind])
            flags, fetched, requests = await _fetch_spans(node, spans, partitions, hot, client, log)
        outcomes = [
            _settle(node, w, hot, artifacts, conformance_version, flags[w], fetched[w], log)
            for w in partitions
        ]
    snapshot = artifacts.commit_snapshot(
        node, conformance_version, stable_end_s=settled_end, now_s=wall_clock()
    )
    if snapshot is not None:
        log(
            f"{node}: snapshot as_of {snapshot.as_of_iso} lists {len(snapshot.segments)} "
            f"segment(s), {snapshot.row_count} {node.spec.row_noun}(s)"
        )
    intervals: list[tuple[Range, int]] = []
    if node.kind == "funding":
        ts = hot.read_events(node.kind, str(node), whole)["ts"].to_numpy()
        intervals = inferred_intervals(np.asarray(ts))
        for run, interval_s in intervals:
            log(f"{node}: funding every {interval_s // 3600}h from {iso_utc(run.start)}")
    return EventRunOutcome(node, outcomes, requests, snapshot, intervals)


async def _fetch_spans(
    node: EventNodeId,
    spans: Sequence[Range],
    partitions: Sequence[Range],
    hot: EventStore,
    client: ExchangeClient,
    log: Callable[[str], None],
) -> tuple[dict[Range, dict[str, int]], dict[Range, int], int]:
    """Ask for every span (a few at once), conform, store and record them answered; the
    flags and rows fetched per partition, and the requests made."""
    names = _flag_names(node)
    flags = {w: dict.fromkeys(names, 0) for w in partitions}
    fetched = dict.fromkeys(partitions, 0)
    gate = asyncio.Semaphore(CONCURRENT_FETCHES)
    requests = 0

    async def one(span: Range) -> None:
        nonlocal requests
        async with gate:
            rows, used = await _fetch(client, node, span)
        requests += used
        conformed = node.spec.conform(rows, span)
        dropped = sum(v for k, v in conformed.flags.items() if k != "dtype_cast")
        if dropped:
            log(f"{node} {span}: conformance dropped {dropped} row(s): {_nonzero(conformed.flags)}")
        # the rows first, then the record that they are the whole answer
        hot.upsert_events(node.kind, str(node), conformed.frame)
        hot.record_answered(node.kind, str(node), [span])
        inside = [w for w in partitions if w.intersect(span) is not None]
        for window, counts in partition_flags(conformed, inside, names).items():
            for flag, count in counts.items():
                flags[window][flag] = flags[window].get(flag, 0) + count
        ts = conformed.frame["ts"].to_numpy()
        for window in inside:
            fetched[window] += int(((ts >= window.start * 1000) & (ts < window.end * 1000)).sum())

    await asyncio.gather(*(one(span) for span in spans))
    return flags, fetched, requests


def _settle(
    node: EventNodeId,
    window: Range,
    hot: EventStore,
    artifacts: EventSegmentStore,
    conformance_version: str,
    flags: dict[str, int],
    fetched: int,
    log: Callable[[str], None],
) -> EventPartitionOutcome:
    """One day's coverage and, once wholly answered, its segment."""
    from .core.event_manifest import build_event_manifest

    answered = hot.answered(node.kind, str(node), window)
    stored = hot.read_events(node.kind, str(node), window)
    coverage = funding_coverage(answered, window)  # answered seconds of the day
    anomalies: tuple[Range, ...] = ()
    if node.kind == "funding":
        anomalies = tuple(interval_anomalies(stored["ts"].to_numpy(), answered))
        for spot in anomalies:
            log(f"{node}: no funding in {spot} although one was due")
    outcome = EventPartitionOutcome(
        window, len(stored), fetched, tuple(answered), coverage.ratio, flags, anomalies
    )
    if coverage.missing:
        return outcome
    manifest = build_event_manifest(
        node,
        window,
        stored,
        conformance_version=conformance_version,
        flags=flags,
        answered=answered,
        sources={"rest": len(stored)},
    )
    result = artifacts.publish(node, stored, manifest)
    return replace(outcome, fingerprint=result.fingerprint, uri=result.uri, written=result.written)


def _flag_names(node: EventNodeId) -> tuple[str, ...]:
    if node.kind == "funding":
        from .core.funding import FUNDING_FLAGS

        return FUNDING_FLAGS
    from .core.trade_rows import TRADES_FLAGS

    return TRADES_FLAGS


def _nonzero(flags: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(flags.items()) if v) or "none"
