"""SLA budgets of one read: how long each phase may take and what is left of it.

A read spends time in phases (`storage_wait`, `backfill_wait`, `live_wait`) under an
aggregate ceiling (`total`). Before each piece of work the caller asks `timeout_s(phase)`
for the time it may wait, runs the work with that timeout (cancelling it when it runs
out) and records what it spent. Which phase ran dry decides the error or the downgrade.

Pure bookkeeping: the clock is injected, nothing here sleeps, cancels or does I/O.
"""

from __future__ import annotations

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
    """Budgets in milliseconds: each phase's cumulative ceiling, and the total deadline."""

    storage_wait_ms: float
    backfill_wait_ms: float
    live_wait_ms: float
    total_ms: float

    def __post_init__(self) -> None:
        for name in ("storage_wait_ms", "backfill_wait_ms", "live_wait_ms", "total_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"SLA budget {name} must be >= 0, got {getattr(self, name)}")

    def of(self, phase: str) -> float:
        """The budget (ms) of a phase, or of `total`."""
        if phase == TOTAL:
            return self.total_ms
        if phase not in PHASES:
            raise ValueError(f"unknown SLA phase {phase!r}; phases are {[*PHASES, TOTAL]}")
        return float(getattr(self, f"{phase}_ms"))


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
        """What the phase may still spend: its own budget left, capped by the total left."""
        total_left = self.budget.total_ms - self.elapsed_ms()
        if phase == TOTAL:
            return max(0.0, total_left)
        own_left = self.budget.of(phase) - self.spent_ms[phase]
        return max(0.0, min(own_left, total_left))

    def timeout_s(self, phase: str) -> float:
        return self.remaining_ms(phase) / 1000

    def binding(self, phase: str) -> str:
        """Which limit a wait in `phase` runs into first: the phase's own or `total`."""
        own_left = self.budget.of(phase) - self.spent_ms[phase]
        total_left = self.budget.total_ms - self.elapsed_ms()
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
    """What a budget overrun does: FAIL_FAST always raises, PARTIAL_FILL always returns
    what it has; AUTO_BACKFILL and SEAMLESS follow `seamless.sla.on_violation`."""
    if strategy == "FAIL_FAST":
        return "raise"
    if strategy == "PARTIAL_FILL":
        return "partial"
    return "raise" if on_violation == "FAIL_FAST" else "partial"
