"""The rate budget's units, defaults and bucket maths (pure: no exchange, no clock)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from resources.rate_budget import (
    EXCHANGE_LIMITS,
    ExchangeLimits,
    PublishedLimit,
    WindowLedger,
    exceeding_windows,
    exchange_limits,
    plan_budget,
    published_limit,
)
from resources.rate_limit import LocalRateLimiter
from seamless_assets.config import LOCAL_SEMAPHORE_MAX, RateLimitConfig, load_config_dict
from seamless_assets.errors import ConfigError

BINANCE = EXCHANGE_LIMITS["binance"]


def plan(limits: ExchangeLimits = BINANCE, **cfg: Any) -> Any:
    config = RateLimitConfig(**cfg)
    return plan_budget(
        limits=limits,
        tokens_per_interval=config.tokens_per_interval,
        interval_ms=config.interval_ms,
        burst_tokens=config.burst_tokens,
        safety_margin=config.safety_margin,
        share=config.workers or 1,
    )


# --------------------------------------------------------------------------- units + table
def test_binance_counts_request_weight_at_five_per_ccxt_unit() -> None:
    assert (BINANCE.unit, BINANCE.units_per_cost, BINANCE.limit) == ("request weight", 5, 6000)
    assert BINANCE.used_header == "X-MBX-USED-WEIGHT-1M" and BINANCE.max_request_cost == 20
    usdm = exchange_limits("binanceusdm")
    assert (usdm.units_per_cost, usdm.limit, usdm.interval_ms) == (1, 2400, 60_000)


def test_other_exchanges_count_ccxt_units_at_ccxt_pace() -> None:
    bybit = exchange_limits("bybit", ccxt_rate_limit_ms=20)
    assert (bybit.unit, bybit.units_per_cost, bybit.limit) == ("ccxt cost", 1, 3000)
    assert bybit.used_header is None


def test_default_budget_is_the_published_limit_less_the_margin() -> None:
    budget = plan()
    assert budget.limit == pytest.approx(6000 * 0.98)
    assert budget.capacity == pytest.approx(0.02 * 5880)  # 117.6 > c_max 20
    assert budget.rate_per_s == pytest.approx((5880 - 117.6) / 60)
    assert budget.window_limit == pytest.approx(5880)
    small = plan(BINANCE.with_published(PublishedLimit(300, 60_000)))
    assert small.capacity == 20  # 2% of 294 is below exchangeInfo's 20 weight
    assert small.window_limit == pytest.approx(294)


def test_configured_rate_is_in_exchange_units_rescaled_to_the_exchange_window() -> None:
    budget = plan(tokens_per_interval=20, interval_ms=1000, safety_margin=0)
    assert budget.limit == pytest.approx(1200) and budget.interval_s == 60
    assert budget.clamped_from is None


def test_a_configured_rate_above_the_published_limit_is_lowered_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = plan(tokens_per_interval=12_000)
    assert budget.clamped_from == 12_000 and budget.limit == pytest.approx(5880)
    # an "unbounded" budget with a burst to match: the burst shrinks in proportion
    unbounded = plan(tokens_per_interval=1e6, interval_ms=1000, burst_tokens=1e5)
    assert unbounded.limit == pytest.approx(5880) and unbounded.capacity == 20
    limiter = LocalRateLimiter(RateLimitConfig(tokens_per_interval=12_000))
    limiter.register("ccxt:binance", BINANCE)
    with caplog.at_level(logging.WARNING):
        limiter.budget("ccxt:binance")
        limiter.budget("ccxt:binance")
    warnings = [r for r in caplog.records if "above the 6000" in r.getMessage()]
    assert len(warnings) == 1  # once per key and published limit


def test_exchange_info_rate_limits_are_read() -> None:
    info = {
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 300,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 1},
        ]
    }
    assert published_limit(info) == PublishedLimit(300, 60_000)
    assert published_limit({"rateLimits": "garbage"}) is None
    assert published_limit([]) is None


def test_workers_share_the_budget_during_an_outage() -> None:
    budget = plan(BINANCE.with_published(PublishedLimit(600, 60_000)), workers=3)
    assert budget.limit == pytest.approx(588 / 3)
    assert budget.capacity == 20  # max(2% of the share, the largest request)
    assert budget.window_limit == pytest.approx(196)


@pytest.mark.parametrize(
    ("cfg", "key", "match"),
    [
        ({"safety_margin": -0.1}, "safety_margin", "greater than or equal"),
        ({"safety_margin": 0.9}, "safety_margin", "less than or equal"),
        ({"workers": 0}, "workers", "greater than or equal"),
        ({"local_semaphore": LOCAL_SEMAPHORE_MAX + 1}, "local_semaphore", "less than or equal"),
        ({"tokens_per_interval": 100, "burst_tokens": 100}, "burst_tokens", "not added on top"),
        ({"tokens_per_interval": 0}, "tokens_per_interval", "greater than"),
        ({"safety_margin": "a lot"}, "safety_margin", "valid number"),
    ],
)
def test_invalid_rate_limit_values_name_the_key(cfg: dict[str, Any], key: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_config_dict({"seamless": {"rate_limit": cfg}})
    assert key in info.value.key or key in str(info.value)


def test_a_burst_that_leaves_no_refill_is_refused_at_planning() -> None:
    with pytest.raises(ConfigError, match="leaves no refill"):
        plan(BINANCE.with_published(PublishedLimit(20, 60_000)))
    with pytest.raises(ValidationError):
        RateLimitConfig(tokens_per_interval=10, burst_tokens=10)


def test_workers_default_to_the_exchange_pool_limit() -> None:
    config = load_config_dict({"exchanges": {"binance": {"pool_limit": 3}, "bybit": {}}})
    assert config.rate_limit_for("binance").workers == 3
    assert config.rate_limit_for("bybit").workers == 1
    pinned = load_config_dict(
        {"seamless": {"rate_limit": {"workers": 5}}, "exchanges": {"binance": {"pool_limit": 3}}}
    )
    assert pinned.rate_limit_for("binance").workers == 5


# --------------------------------------------------------------------------- bucket maths
def simulate(
    capacity: float, rate: float, costs: list[float], gaps: list[float]
) -> list[tuple[float, float]]:
    """Grant instants of a bucket starting empty, each request arriving `gap` after the
    previous grant and waiting exactly its deficit (the limiter's own arithmetic)."""
    t, tokens, out = 0.0, 0.0, []
    for cost, gap in zip(costs, gaps, strict=True):
        t += gap
        tokens = min(capacity, tokens + gap * rate)
        if tokens < cost:
            wait = (cost - tokens) / rate
            t += wait
            tokens = cost
        tokens -= cost
        out.append((t, cost))
    return out


@settings(max_examples=200, deadline=None)
@given(
    limit=st.sampled_from([300.0, 1200.0, 6000.0]),
    burst=st.one_of(st.none(), st.floats(0, 100)),
    costs=st.lists(st.sampled_from([1.0, 2.0, 20.0]), min_size=1, max_size=300),
    gaps=st.data(),
    offset=st.floats(0, 60),
)
def test_no_window_of_any_alignment_exceeds_the_effective_limit(
    limit: float, burst: float | None, costs: list[float], gaps: Any, offset: float
) -> None:
    budget = plan_budget(
        limits=BINANCE.with_published(PublishedLimit(limit, 60_000)),
        tokens_per_interval=None,
        interval_ms=60_000,
        burst_tokens=burst,
        safety_margin=0.02,
    )
    delays = gaps.draw(st.lists(st.floats(0, 30), min_size=len(costs), max_size=len(costs)))
    grants = simulate(budget.capacity, budget.rate_per_s, costs, delays)
    for total in exceeding_windows(grants, 60.0, offset).values():
        assert total <= budget.limit + 1e-6
    # the sliding form: every window starting at a grant
    times = [t for t, _ in grants]
    for i, start in enumerate(times):
        spent = sum(c for t, c in grants[i:] if t < start + 60.0)
        assert spent <= budget.limit + 1e-6


def test_the_ledger_holds_when_the_exchange_count_leaves_no_room() -> None:
    ledger = WindowLedger()
    assert not ledger.must_hold(7, 20, 294)  # alone in a window: the bucket bounds it
    mark = ledger.grant(7, 20)
    ledger.report(7, used=270, own_at_grant=mark)  # someone else spent 250
    assert ledger.excess == 250
    assert not ledger.must_hold(7, 2, 294)
    ledger.grant(7, 2)
    ledger.grant(7, 2)
    assert ledger.must_hold(7, 2, 294) is False  # 250 + 24 + 2 = 276
    for _ in range(9):
        ledger.grant(7, 2)
    assert not ledger.must_hold(7, 2, 294)  # 250 + 42 + 2 = 294: exactly the limit
    ledger.grant(7, 2)
    assert ledger.must_hold(7, 2, 294)  # 250 + 44 + 2 > 294
    assert not ledger.must_hold(8, 2, 294)  # the next window starts clean
    ledger.report(7, used=999, own_at_grant=0)  # a late report of a past window is ignored
    assert ledger.excess == 0
