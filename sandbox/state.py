"""Mutable sandbox state: config, weight budget, penalty window, fault injection, counters.

Why one object behind one lock: the aiohttp loop (in a background thread or a subprocess)
and the test thread both touch it, and every critical section is a few dict updates.

Rate-limit semantics (Binance's, on the sandbox's wall clock):

* Over the per-minute weight budget, or on a forced 429: answer 429 with `Retry-After`
  and open a penalty window (until the minute ends, or `Retry-After` seconds). Counted in
  `sent_429` (one per penalty issued).
* In-flight grace: a client with several requests in flight cannot recall the ones
  already sent when the 429 reaches it. Requests arriving (before injected latency)
  earlier than `penalty_grace_ms` after a 429 was issued, or before it, are answered 429
  (remaining `Retry-After`) and counted in `in_flight_after_429`; they are not
  violations and extend nothing. `penalty_grace_ms: 0` tolerates only the requests that
  had arrived before the 429 was issued.
* Any other request inside the penalty window is a client that ignored `Retry-After`:
  418, the ban extends by `ban_seconds` from now, counted in `sent_418` and
  `requests_in_penalty` (so a well-behaved client keeps both at 0).

Bybit requests (`admit_bybit`) have their own IP limit (`bybit_limit.py`) and share the
counters, `down`, `force_429` and the 5xx fault stream; stats report them under `bybit`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .bybit_limit import BybitIpLimit
from .clock import SandboxClock
from .config import SandboxConfig
from .pages import PageCache

_HISTORY_MINUTES = 1440
_5XX_STATUSES = (500, 502, 503)


@dataclass(frozen=True)
class Admission:
    """What to do with an /api request: `status == 0` means serve it normally."""

    status: int = 0
    retry_after: int | None = None
    used_weight: int = 0
    reason: str = ""
    at: float = 0.0  # the wall-clock instant of the decision (penalty windows use it)


@dataclass
class _Counters:
    since: float = field(default_factory=time.time)
    requests_total: int = 0
    by_endpoint: dict[str, dict[str, int]] = field(default_factory=dict)
    by_status: Counter[str] = field(default_factory=Counter)
    sent_429: int = 0
    sent_418: int = 0
    requests_in_penalty: int = 0
    in_flight_after_429: int = 0
    in_flight: int = 0  # /api requests being served right now (latency included)
    max_in_flight: int = 0
    injected_5xx: int = 0
    kline_rows_served: int = 0
    corrupted_rows_served: int = 0
    weight_by_minute: OrderedDict[int, int] = field(default_factory=OrderedDict)


class SandboxState:
    """All state of one sandbox exchange; every public method is thread-safe."""

    def __init__(
        self, config: SandboxConfig | None = None, *, wallclock: Callable[[], float] = time.time
    ) -> None:
        self._lock = threading.Lock()
        self._wall = wallclock
        self._config = config or SandboxConfig()
        self._config.validate()
        self.clock = SandboxClock(
            frozen_now_s=self._config.frozen_now_s,
            offset_s=self._config.clock_offset_s,
        )  # the exchange clock always runs on real time; `wallclock` is for rate limits
        self._force_429_left = int(self._config.force_429)
        self._corruption_serves: dict[int, int] = {}  # entry index -> responses it was in
        self._rng = random.Random(self._config.error_seed)
        self._penalty_until = 0.0  # real wall-clock seconds
        self._last_429_at = float("-inf")  # when the last penalty-opening 429 was issued
        self._window_minute = -1
        self._window_used = 0
        self._c = _Counters(since=wallclock())
        self._bybit = BybitIpLimit()
        self._kline_log: deque[dict[str, Any]] = deque(maxlen=self._config.kline_log_size)
        self.pages = PageCache()  # encoded closed pages of the current config

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> SandboxConfig:
        """The current config (treat as read-only; change it with `configure`)."""
        with self._lock:
            return self._config

    def configure(self, knobs: dict[str, Any]) -> SandboxConfig:
        """Replace the given knobs. `force_429` re-arms the one-shot 429 counter."""
        with self._lock:
            new = self._config.updated(knobs)
            if "force_429" in knobs:
                self._force_429_left = int(new.force_429)
            if "corruptions" in knobs:  # re-arms every entry's `times` budget
                self._corruption_serves = {}
            if "error_seed" in knobs or "error_rate_5xx" in knobs:
                self._rng = random.Random(new.error_seed)
            if "kline_log_size" in knobs:
                self._kline_log = deque(self._kline_log, maxlen=new.kline_log_size)
            self._config = new
            return new

    def take_corruption(self, entry: int) -> bool:
        """Whether `corruptions[entry]` applies to the response being built; counts it.

        Without `times` an entry always applies; with `times: N`, to N responses only.
        """
        with self._lock:
            times = self._config.corruptions[entry].get("times")
            served = self._corruption_serves.get(entry, 0)
            if times is not None and served >= int(times):
                return False
            self._corruption_serves[entry] = served + 1
            return True

    def config_dict(self) -> dict[str, Any]:
        with self._lock:
            out = self._config.to_dict()
            out["force_429_remaining"] = self._force_429_left
            return out

    # ------------------------------------------------------------------ admission
    def admit(
        self, endpoint: str, weight: int, *, klines: bool, arrived_at: float | None = None
    ) -> Admission:
        """Count one /api request and decide how it is answered (Binance order of checks:
        unavailable, then banned/penalised, then over budget; 5xx after weight is taken).

        `arrived_at` (this clock, from `enter`) is when the request reached the exchange,
        before any injected latency: the in-flight grace is measured from it, so a request
        the client sent before the 429 existed is never a violation because the server
        was slow to admit it."""
        now = self._wall()
        arrived = now if arrived_at is None else arrived_at
        with self._lock:
            cfg = self._config
            c = self._c
            ep = self._count_locked(endpoint)
            minute = int(now // 60)
            if minute != self._window_minute:
                self._window_minute, self._window_used = minute, 0
            if cfg.down:
                return Admission(503, None, self._window_used, "down", at=now)
            if now < self._penalty_until:
                if arrived - self._last_429_at <= cfg.penalty_grace_ms / 1000.0:
                    c.in_flight_after_429 += 1  # sent before its client saw the 429
                    retry = max(1, math.ceil(self._penalty_until - now))
                    return Admission(429, retry, self._window_used, "in_flight", at=now)
                c.requests_in_penalty += 1
                c.sent_418 += 1
                self._penalty_until = max(self._penalty_until, now + cfg.ban_seconds)
                # honest Retry-After: the ban, or longer if a 429 penalty outlasts it
                retry = max(int(cfg.ban_seconds), math.ceil(self._penalty_until - now))
                return Admission(418, retry, self._window_used, "banned", at=now)
            if klines and self._force_429_left > 0:
                self._force_429_left -= 1
                retry = int(cfg.force_429_retry_after)
                c.sent_429 += 1
                if retry == 0:  # no Retry-After: the client picks its own backoff
                    return Admission(429, None, self._window_used, "forced", at=now)
                self._penalty_until = now + retry
                self._last_429_at = now
                return Admission(429, retry, self._window_used, "forced", at=now)
            limit = cfg.weight_limit_per_minute
            if limit is not None and self._window_used + weight > limit:
                window_end = (minute + 1) * 60.0
                self._penalty_until = window_end
                self._last_429_at = now
                c.sent_429 += 1
                retry = max(1, math.ceil(window_end - now))
                return Admission(429, retry, self._window_used, "weight", at=now)
            self._window_used += weight
            ep["weight"] += weight
            start = minute * 60
            c.weight_by_minute[start] = c.weight_by_minute.get(start, 0) + weight
            while len(c.weight_by_minute) > _HISTORY_MINUTES:
                c.weight_by_minute.popitem(last=False)
            status = self._injected_5xx_locked()
            return Admission(status, None, self._window_used, "injected" if status else "", at=now)

    def admit_bybit(
        self, endpoint: str, *, kline: bool, arrived_at: float | None = None
    ) -> Admission:
        """Count one Bybit request and decide how it is answered: unavailable (503), then
        the IP ban or limit (403), then a forced `force_429` (429, Bybit's 10006: kline
        requests only; no penalty follows), then an injected 5xx. `used_weight` of the
        answer is the requests counted in the current 5 s window. Bybit requests weigh
        nothing in the Binance budget (`by_endpoint` weight 0)."""
        now = self._wall()
        with self._lock:
            cfg = self._config
            self._count_locked(endpoint)
            limit = self._bybit
            if cfg.down:
                return Admission(503, None, limit.used, "down", at=now)
            refused = limit.admit(now, cfg.bybit_requests_per_5s, int(cfg.ban_seconds))
            if refused:
                return Admission(403, None, limit.used, refused, at=now)
            if kline and self._force_429_left > 0:
                self._force_429_left -= 1
                limit.sent_429 += 1
                retry = int(cfg.force_429_retry_after)
                return Admission(429, retry, limit.used, "forced", at=now)
            status = self._injected_5xx_locked()
            return Admission(status, None, limit.used, "injected" if status else "", at=now)

    def _count_locked(self, endpoint: str) -> dict[str, int]:
        """Count a request to `endpoint`; its `by_endpoint` entry (the lock is held)."""
        self._c.requests_total += 1
        ep = self._c.by_endpoint.setdefault(endpoint, {"requests": 0, "weight": 0})
        ep["requests"] += 1
        return ep

    def _injected_5xx_locked(self) -> int:
        """An injected 5xx status by `error_rate_5xx` (counted), else 0 (the lock is held)."""
        rate = self._config.error_rate_5xx
        if rate > 0 and self._rng.random() < rate:
            self._c.injected_5xx += 1
            return _5XX_STATUSES[self._rng.randrange(len(_5XX_STATUSES))]
        return 0

    def wall_now(self) -> float:
        """The rate-limit clock (real time unless a test shifted it)."""
        return self._wall()

    def used_weight(self) -> int:
        """Weight used in the current real-time minute (for the header on other replies)."""
        now = self._wall()
        with self._lock:
            return self._window_used if int(now // 60) == self._window_minute else 0

    def enter(self) -> float:
        """An /api request started (before any injected latency); returns its arrival
        instant on the rate-limit clock."""
        now = self._wall()
        with self._lock:
            c = self._c
            c.in_flight += 1
            c.max_in_flight = max(c.max_in_flight, c.in_flight)
        return now

    def leave(self) -> None:
        """An /api request was answered."""
        with self._lock:
            self._c.in_flight = max(0, self._c.in_flight - 1)

    def finish(self, status: int, kline_entry: dict[str, Any] | None = None) -> None:
        """Record the status sent (and a kline log entry with its row count)."""
        with self._lock:
            self._c.by_status[str(status)] += 1
            if kline_entry is not None:
                self._c.kline_rows_served += int(kline_entry.get("rows", 0))
                self._c.corrupted_rows_served += int(kline_entry.get("corrupted", 0))
                self._kline_log.append(kline_entry)

    # ------------------------------------------------------------------ counters
    def reset(self) -> None:
        """Zero the counters and forget the weight window and any penalty/ban."""
        with self._lock:
            self._c = _Counters(since=self._wall(), in_flight=self._c.in_flight)
            self._kline_log.clear()
            self._penalty_until = 0.0
            self._last_429_at = float("-inf")
            self._window_minute, self._window_used = -1, 0
            self._bybit = BybitIpLimit()
            self._rng = random.Random(self._config.error_seed)

    def stats(self) -> dict[str, Any]:
        now = self._wall()
        with self._lock:
            c = self._c
            history = [{"minute_start": m, "weight": w} for m, w in c.weight_by_minute.items()]
            return {
                "since": c.since,
                "requests_total": c.requests_total,
                "by_endpoint": {k: dict(v) for k, v in c.by_endpoint.items()},
                "by_status": dict(c.by_status),
                "sent_429": c.sent_429,
                "sent_418": c.sent_418,
                "requests_in_penalty": c.requests_in_penalty,
                "in_flight_after_429": c.in_flight_after_429,
                "in_flight": c.in_flight,
                "max_in_flight": c.max_in_flight,
                "injected_5xx": c.injected_5xx,
                "kline_rows_served": c.kline_rows_served,
                "corrupted_rows_served": c.corrupted_rows_served,
                "weight_history": history,
                "max_weight_per_minute": max((h["weight"] for h in history), default=0),
                "current_weight": self._window_used if int(now // 60) == self._window_minute else 0,
                "penalty_remaining_s": max(0.0, self._penalty_until - now),
                "force_429_remaining": self._force_429_left,
                "kline_log": list(self._kline_log),
                "bybit": self._bybit.stats(now),
            }
