"""Rate-limit budgets shared by the limiter and exchange tests."""

from __future__ import annotations

from typing import Any

from seamless_assets.config import RateLimitConfig


def unbounded_budget(**overrides: Any) -> RateLimitConfig:
    """A budget that never binds unless a test overrides a field."""
    base: dict[str, Any] = {
        "tokens_per_interval": 1e6,
        "interval_ms": 1000,
        "burst_tokens": 1e6,
        "local_semaphore": 4,
        "min_interval_ms": 0,
    }
    return RateLimitConfig(**{**base, **overrides})
