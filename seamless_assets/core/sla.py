"""SLA budgets of one read: how long each phase may take and what is left of it.

A read spends time in phases (`storage_wait`, `backfill_wait`, `live_wait`) under an
aggregate ceiling (`total`). Before each piece of work the caller asks `timeout_s(phase)`
for the time it may wait, runs the work with that timeout (cancelling it when it runs
out) and records what it spent. Which phase ran dry decides the error or the downgrade.

A budget of `None` is no limit: backtest and research reads have no per-phase budget by
default (they are judged by correctness, not latency; `config.DOMAIN_SLA_DEFAULTS`), only
a generous total deadline that fails loudly.

Pure bookkeeping: the clock is injected, nothing here sleeps, cancels or does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Phase = Literal["storage_wait", "backfill_wait", "live_wait"]
PHASES: tuple[Phase, ...] = ("storage_wait", "backfill_wait", "live_wait")
TOTAL = "total"
#: `seamless.sla` key of each phase's budget (blueprint names).
BUDGET_KEYS: dict[str, str] = {
    "storage_wait": "max_wait_storage_ms",
    "backfill_wait": "max_wait_backfill_ms",
    "live_wait": "max_wait_live_ms",
    TOTAL: "total_deadline_ms",
}


@dataclass(frozen=True)
class SLABudget:
    """Budgets in milliseconds: each phase's cumulative ceiling, and the total deadline;
    `None` means unbounded."""

    storage_wait_ms: float | None
    backfill_wait_ms: float | None
    live_wait_ms: float | None
    total_ms: float | None

    def __post_init__(self) -> None:
        for name in ("storage_wait_ms", "backfill_wait_ms", "live_wait_ms", "total_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"SLA budget {name} must be >= 0, got {value}")

    def of(self, phase: str) -> float:
        """The budget (ms) of a phase, or of `total`; `math.inf` when unbounded."""
        if phase == TOTAL:
            value = self.total_ms
        elif phase in PHASES:
            value = getattr(self, f"{phase}_ms")
        else:
            raise ValueError(f"unknown SLA phase {phase!r}; phases are {[*PHASES, TOTAL]}")
        return math.inf if value is None else float(value)


@dataclass(frozen=True)
class PhaseTimings:
    """Milliseconds spent per phase and in total, and the phases that ran out."""

    storage_wait_ms: float = 0.0
    backfill_wait_ms: float = 0.0
    live_wait_ms: float = 0.0
    total_ms: float = 0.0
    exceeded: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, float]:
        return {
            "storage_wait_ms": round(self.storage_wait_ms, 3),
            "backfill_wait_ms": round(self.backfill_wait_ms, 3),
            "live_wait_ms": round(self.live_wait_ms, 3),
            "total_ms": round(self.total_ms, 3),
        }


@dataclass
class SLATracker:
    """The running account of one read against its budget (one per fetch, one thread)."""

    budget: SLABudget
    clock_ms: Callable[[], float]
    started_ms: float = field(init=False)
    spent_ms: dict[str, float] = field(init=False)
    exceeded: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.started_ms = self.clock_ms()
        self.spent_ms = dict.fromkeys(PHASES, 0.0)
        self.exceeded = []

    def elapsed_ms(self) -> float:
        return self.clock_ms() - self.started_ms

    def remaining_ms(self, phase: str) -> float:
        """What the phase may still spend: its own budget left, capped by the total left
        (`math.inf` when neither binds)."""
        total_left = self.budget.of(TOTAL) - self.elapsed_ms()
        if phase == TOTAL:
            return max(0.0, total_left)
        own_left = self.budget.of(phase) - self.spent_ms[phase]
        return max(0.0, min(own_left, total_left))

    def timeout_s(self, phase: str) -> float | None:
        """Seconds a wait in `phase` may take; None when unbounded (wait for the work)."""
        left = self.remaining_ms(phase)
        return None if math.isinf(left) else left / 1000

    def binding(self, phase: str) -> str:
        """Which limit a wait in `phase` runs into first: the phase's own or `total`."""
        own_left = self.budget.of(phase) - self.spent_ms[phase]
        total_left = self.budget.of(TOTAL) - self.elapsed_ms()
        return phase if own_left <= total_left else TOTAL

    def record(self, phase: str, spent_ms: float) -> None:
        if phase not in self.spent_ms:
            raise ValueError(f"unknown SLA phase {phase!r}; phases are {list(PHASES)}")
        self.spent_ms[phase] += max(0.0, spent_ms)

    def mark_exceeded(self, phase: str) -> None:
        if phase not in self.exceeded:
            self.exceeded.append(phase)

    def timings(self) -> PhaseTimings:
        return PhaseTimings(
            storage_wait_ms=self.spent_ms["storage_wait"],
            backfill_wait_ms=self.spent_ms["backfill_wait"],
            live_wait_ms=self.spent_ms["live_wait"],
            total_ms=self.elapsed_ms(),
            exceeded=tuple(self.exceeded),
        )


Violation = Literal["raise", "partial"]


def violation_outcome(strategy: str, on_violation: str) -> Violation:
    """What a budget overrun does: FAIL_FAST (the strategy) always raises; every other
    strategy follows the domain's `on_violation` (`domains.<domain>.sla.on_violation`,
    else `seamless.sla.on_violation`)."""
    if strategy == "FAIL_FAST":
        return "raise"
    return "raise" if on_violation == "FAIL_FAST" else "partial"
