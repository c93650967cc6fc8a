"""The live domain: hot store + backfill + the live edge (bars after the newest stored one,
in the newest partition), on the exchange's clock (one /time request per read). `as_of`
(the close of the newest delivered bar) never moves back within a reader session per
(world_id, node); when `now - data_end > max_lag` for a window reaching the live edge the
read is downgraded to HOLD (PARTIAL_FILL when the strategy is PARTIAL_FILL and
`domains.live.allow_partial`), and every fetch re-evaluates, so it recovers by itself.
"""

from __future__ import annotations

from collections import Counter

from seamless_assets.core.conformance import FLAGS
from seamless_assets.core.frame import TS, Range, iso_utc
from seamless_assets.core.read_context import BACKFILLING, Strategy
from seamless_assets.errors import AsOfRegression, ExchangeUnavailable, SeamlessSLAExceeded

from .read_domains import DomainRead
from .read_echo import first_line
from .read_missing import missing_partitions
from .read_windows import clip, closed_end_at, partition_windows

DEFAULT_MAX_LAG_S = 120.0


class LiveRead(DomainRead):
    """One live fetch."""

    def path(self) -> None:
        self._refuse_regression()
        got, plan, window, node = self.got, self.plan, self.window, self.node
        got.source = "hot_store"
        got.flags = Counter(dict.fromkeys(FLAGS, 0))
        self.now_s = plan.exchange_now_estimate()
        # Storage first: a hung store costs no more than its own budget.
        got.frame = plan.hot_frame()
        covered, gaps = plan.hot_coverage()
        self._catch_up(covered)
        self.now_s = self._exchange_now()
        closed = closed_end_at(node, self.now_s)
        target = window.intersect(Range(window.start, max(window.start, closed)))
        missing = plan.missing_in(target, covered, gaps)
        if missing and self.strategy in BACKFILLING and self._fill_edge(missing, closed, covered):
            got.source = "hot_store+backfill"
            got.frame = plan.hot_frame()
            covered, gaps = plan.hot_coverage()
            self._catch_up(covered)
            missing = plan.missing_in(target, covered, gaps)
        if missing and self.strategy is Strategy.FAIL_FAST:
            raise missing_partitions(plan, self.request, missing, None)
        got.missing = missing
        if missing:
            got.partial = True
            got.reasons.append("missing closed bars: " + ", ".join(str(r) for r in missing[:5]))
        self._gate_lag(self.now_s)

    def _catch_up(self, covered: list[Range]) -> None:
        """Bars are read before their coverage (what was read survives a store that hangs
        on the second call), so a fill another read leads can store bars in between: when
        the coverage holds more of the window than the frame, read the bars again (stored
        bars only ever grow within a read, so the second frame holds what coverage says)."""
        node, window = self.node, self.window
        stored = sum(
            part.bars(node.interval_s, origin_s=node.timeframe.origin_s)
            for r in covered
            if (part := r.intersect(window)) is not None
        )
        if stored > len(self.got.frame):
            self.got.frame = self.plan.hot_frame()

    def _overrun(self, exc: SeamlessSLAExceeded) -> None:
        super()._overrun(exc)
        if self.now_s is not None:
            self._gate_lag(self.now_s)

    def _refuse_regression(self) -> None:
        ctx, rt = self.context, self.rt
        with rt.state_lock:
            seen = rt.session_as_of.get((ctx.world_id, str(self.node)))
        if ctx.as_of_s is not None and seen is not None and ctx.as_of_s < seen:
            raise AsOfRegression(
                f"{self.node}: as_of {iso_utc(ctx.as_of_s)} is before {iso_utc(seen)}, which "
                f"this live session already saw (world {ctx.world_id}); live as_of only "
                "moves forward"
            )

    def _exchange_now(self) -> float:
        """The exchange's clock, else (unreachable, or out of `live_wait` under a partial
        outcome) the last known offset from it, with the reason."""
        try:
            return self.plan.exchange_now()
        except (ExchangeUnavailable, SeamlessSLAExceeded) as exc:
            if isinstance(exc, SeamlessSLAExceeded) and self.violation == "raise":
                raise
            self.got.reasons.append(
                f"exchange clock unavailable ({first_line(exc)}); lag measured on the last "
                "known clock offset"
            )
            return self.plan.exchange_now_estimate()

    def _fill_edge(self, missing: list[Range], closed: int, covered: list[Range]) -> bool:
        """Fill history (`backfill_wait`) and the live edge (`live_wait` for SEAMLESS):
        bars after the newest stored one in the newest partition; with nothing stored
        there yet, everything is history. True if any fill completed."""
        newest = partition_windows(self.rt.config, self.node, Range(closed - 1, closed))[0]
        stored_end = covered[-1].end if covered else None
        edge_start = stored_end if stored_end is not None and stored_end >= newest.start else closed
        edge_phase = "live_wait" if self.strategy is Strategy.SEAMLESS else "backfill_wait"
        filled = False
        for ranges, phase in (
            (clip(missing, missing[0].start, edge_start), "backfill_wait"),
            (clip(missing, edge_start, missing[-1].end), edge_phase),
        ):
            if not ranges:
                continue
            try:
                self.got.flags.update(self.plan.fill(ranges, phase).flags)
                filled = True
            except ExchangeUnavailable as exc:
                self.got.reasons.append(f"exchange unavailable: {first_line(exc)}")
            except SeamlessSLAExceeded as exc:
                if self.violation == "raise":
                    raise
                self.got.reasons.append(
                    f"{exc.phase} budget of {exc.budget_ms:.0f} ms ran out; the fill was cancelled"
                )
        return filled

    def _gate_lag(self, now_s: float) -> None:
        """`now - data_end <= max_lag` for reads that reach the live edge, else HOLD."""
        rt, node, got, ctx = self.rt, self.node, self.got, self.context
        live_cfg = rt.config.domains.get("live")
        max_lag = ctx.max_lag
        if max_lag is None:
            configured = live_cfg.max_lag_sec if live_cfg else None
            max_lag = float(configured) if configured else DEFAULT_MAX_LAG_S
        ts = got.frame[TS].to_numpy()
        data_end = int(ts[-1]) + node.interval_s if len(ts) else None
        session = (ctx.world_id, str(node))
        with rt.state_lock:
            previous = rt.session_as_of.get(session)
            watermark = max(x for x in (previous, data_end, ctx.as_of_s, -1) if x is not None)
            if watermark >= 0:
                rt.session_as_of[session] = watermark
            if previous is not None and watermark > previous:
                rt.metrics["as_of_advancement_events"] += 1
        got.as_of_s = watermark if watermark >= 0 else None
        if self.window.end <= now_s - max_lag:
            return  # a historical window: freshness is not in question
        lag = now_s - data_end if data_end is not None else float("inf")
        got.staleness_s = round(lag, 3) if data_end is not None else None
        if lag <= max_lag:
            return
        allow_partial = bool(live_cfg.allow_partial) if live_cfg else False
        got.downgrade = (
            "PARTIAL_FILL" if allow_partial and self.strategy is Strategy.PARTIAL_FILL else "HOLD"
        )
        ends = iso_utc(data_end) if data_end is not None else "nowhere (no bars)"
        got.reasons.insert(
            0,
            f"live data ends at {ends}, {lag:.0f} s behind the exchange clock > max_lag "
            f"{max_lag:.0f} s",
        )
