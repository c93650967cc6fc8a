"""Rate-limit budgets and sandbox checks shared by the limiter and exchange tests."""

from __future__ import annotations

from typing import Any

from seamless_assets.config import RateLimitConfig


def unbounded_budget(**overrides: Any) -> RateLimitConfig:
    """A budget that never binds unless a test overrides a field (against an exchange, the
    limiter still lowers it to the limit the exchange publishes)."""
    base: dict[str, Any] = {
        "tokens_per_interval": 1e6,
        "interval_ms": 1000,
        "local_semaphore": 4,
        "min_interval_ms": 0,
    }
    return RateLimitConfig(**{**base, **overrides})


def default_budget(**overrides: Any) -> RateLimitConfig:
    """The shipped defaults: the exchange's published limit, 2% margin, 2% burst."""
    return RateLimitConfig(**overrides)


def minutes_over(stats: dict[str, Any], limit: float) -> list[dict[str, Any]]:
    """The sandbox minutes whose counted weight exceeded `limit`."""
    return [m for m in stats["weight_history"] if m["weight"] > limit]


def assert_no_ban(stats: dict[str, Any], max_429: int = 0) -> None:
    """No 418, no request inside a penalty, at most `max_429` penalties issued."""
    assert stats["sent_418"] == 0, stats["by_status"]
    assert stats["requests_in_penalty"] == 0
    assert stats["sent_429"] <= max_429, stats["by_status"]
