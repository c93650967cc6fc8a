"""SLA budget bookkeeping: what each phase may still wait, which limit binds, outcomes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamless_assets.core.sla import (
    PHASES,
    TOTAL,
    SLABudget,
    SLATracker,
    violation_outcome,
)


class FakeClock:
    def __init__(self) -> None:
        self.ms = 1_000.0

    def __call__(self) -> float:
        return self.ms


BUDGET = SLABudget(storage_wait_ms=300, backfill_wait_ms=5000, live_wait_ms=800, total_ms=1500)


def test_a_phase_may_wait_its_own_budget_left_capped_by_the_total_left() -> None:
    clock = FakeClock()
    sla = SLATracker(BUDGET, clock)
    assert sla.remaining_ms("storage_wait") == 300
    assert sla.remaining_ms("backfill_wait") == 1500  # the total binds first
    assert sla.binding("backfill_wait") == TOTAL and sla.binding("storage_wait") == "storage_wait"

    clock.ms += 120
    sla.record("storage_wait", 120)
    assert sla.remaining_ms("storage_wait") == 180
    assert sla.remaining_ms(TOTAL) == 1380
    assert sla.timeout_s("live_wait") == pytest.approx(0.8)

    clock.ms += 1300  # 1420 ms gone: only 80 ms left in total
    sla.record("backfill_wait", 1300)
    assert sla.remaining_ms("storage_wait") == 80
    assert sla.binding("storage_wait") == TOTAL
    clock.ms += 500
    assert sla.remaining_ms("live_wait") == 0 and sla.remaining_ms(TOTAL) == 0

    sla.mark_exceeded(TOTAL)
    sla.mark_exceeded(TOTAL)
    timings = sla.timings()
    assert timings.exceeded == (TOTAL,)
    assert timings.as_dict() == {
        "storage_wait_ms": 120.0,
        "backfill_wait_ms": 1300.0,
        "live_wait_ms": 0.0,
        "total_ms": 1920.0,
    }


def test_spending_is_cumulative_per_phase() -> None:
    clock = FakeClock()
    sla = SLATracker(BUDGET, clock)
    for _ in range(3):
        sla.record("storage_wait", 100)
    assert sla.remaining_ms("storage_wait") == 0
    sla.record("storage_wait", -5)  # a clock hiccup never refunds budget
    assert sla.spent_ms["storage_wait"] == 300


def test_unknown_phases_and_negative_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown SLA phase 'queue_wait'"):
        BUDGET.of("queue_wait")
    with pytest.raises(ValueError, match="unknown SLA phase"):
        SLATracker(BUDGET, FakeClock()).record("queue_wait", 1)
    with pytest.raises(ValueError, match="live_wait_ms must be >= 0"):
        SLABudget(1, 1, -1, 1)


@pytest.mark.parametrize(
    ("strategy", "on_violation", "outcome"),
    [
        ("FAIL_FAST", "PARTIAL_FILL", "raise"),
        ("FAIL_FAST", "FAIL_FAST", "raise"),
        ("PARTIAL_FILL", "FAIL_FAST", "raise"),  # the breach follows on_violation
        ("PARTIAL_FILL", "PARTIAL_FILL", "partial"),
        ("AUTO_BACKFILL", "FAIL_FAST", "raise"),
        ("AUTO_BACKFILL", "PARTIAL_FILL", "partial"),
        ("SEAMLESS", "PARTIAL_FILL", "partial"),
        ("SEAMLESS", "FAIL_FAST", "raise"),
    ],
)
def test_violation_outcome(strategy: str, on_violation: str, outcome: str) -> None:
    assert violation_outcome(strategy, on_violation) == outcome


@pytest.mark.parametrize("phase", PHASES)
def test_an_unbounded_phase_waits_as_long_as_the_total_allows(phase: str) -> None:
    clock = FakeClock()
    budget = SLABudget(None, None, None, total_ms=300_000)
    sla = SLATracker(budget, clock)
    clock.ms += 10_000
    sla.record(phase, 10_000)
    assert sla.remaining_ms(phase) == 290_000
    assert sla.timeout_s(phase) == pytest.approx(290.0)
    assert sla.binding(phase) == TOTAL  # only the total can bind


def test_with_no_limit_at_all_a_wait_has_no_timeout() -> None:
    sla = SLATracker(SLABudget(None, 50, None, None), FakeClock())
    assert sla.timeout_s("storage_wait") is None
    assert sla.timeout_s(TOTAL) is None
    assert sla.timeout_s("backfill_wait") == pytest.approx(0.05)
    assert SLABudget(None, None, None, None).of("storage_wait") == float("inf")


budgets = st.floats(min_value=0, max_value=10_000, allow_nan=False)


@given(
    st.tuples(budgets, budgets, budgets, budgets),
    st.lists(st.tuples(st.sampled_from(PHASES), budgets), max_size=8),
)
def test_remaining_never_exceeds_either_limit_nor_goes_negative(
    limits: tuple[float, float, float, float], spends: list[tuple[str, float]]
) -> None:
    clock = FakeClock()
    budget = SLABudget(*limits)
    sla = SLATracker(budget, clock)
    for phase, spent in spends:
        clock.ms += spent
        sla.record(phase, spent)
        for each in PHASES:
            left = sla.remaining_ms(each)
            assert 0 <= left <= budget.of(each) - sla.spent_ms[each] or left == 0
            assert left <= max(0.0, budget.total_ms - sla.elapsed_ms()) + 1e-9
