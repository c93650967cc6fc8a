"""The reader's values without services: the compute context, the cache, partition math."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import resources.reader as reader_module
from resources.reader import (
    ComputeContext,
    ExecutionDomain,
    FetchCache,
    SeamlessFetchMetadata,
    Strategy,
    blend_fingerprint,
    partition_keys,
    partition_windows,
)
from seamless_assets.config import load_config_dict
from seamless_assets.core.frame import Range, empty_frame
from seamless_assets.nodes import NodeId

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def test_as_of_accepts_iso_datetime_and_epoch_seconds() -> None:
    forms = ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00", datetime(2024, 1, 1), T0]
    for form in forms:
        context = ComputeContext("w", "backtest", as_of=form)
        assert context.as_of_s == T0
    assert ComputeContext("w", "live").as_of_s is None
    assert ComputeContext("w", "dryrun", strategy="FAIL_FAST").strategy is Strategy.FAIL_FAST
    assert ComputeContext("w", ExecutionDomain.LIVE).domain is ExecutionDomain.LIVE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"execution_domain": "paper"}, "execution_domain 'paper' is not one of"),
        ({"strategy": "YOLO"}, "strategy 'YOLO' is not one of"),
        ({"as_of": "yesterday"}, "not ISO-8601"),
        ({"min_coverage": 1.5}, "min_coverage must be in"),
        ({"max_lag": -1}, "max_lag must be >= 0"),
        ({"world_id": ""}, "world_id must not be empty"),
    ],
)
def test_a_bad_context_names_the_field(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"world_id": "w", "execution_domain": "backtest", **kwargs}
    with pytest.raises(ValueError, match=message):
        ComputeContext(**args)  # type: ignore[arg-type]


def _meta() -> SeamlessFetchMetadata:
    return SeamlessFetchMetadata(
        node_id="n", interval_s=60, requested=Range(0, 60), world_id="w",
        execution_domain="backtest", strategy="SEAMLESS", dataset_fingerprint=None,
        as_of=None, as_of_s=None, coverage_bounds=None, coverage_ratio=1.0,
        conformance_flags={}, sla={}, sla_exceeded=(), source="snapshot",
    )  # fmt: skip


def test_cache_is_lru_with_ttl_and_purges_per_world(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(reader_module.time, "monotonic", lambda: now[0])
    cache = FetchCache(enabled=True, ttl_ms=1000, max_entries=2)
    key = ("n", 60, 0, 60, "v2", "w1", 5)
    other = ("n", 60, 0, 60, "v2", "w2", 5)
    third = ("n", 60, 0, 120, "v2", "w1", 5)
    cache.put(key, empty_frame(), _meta())
    cache.put(other, empty_frame(), _meta())
    assert cache.get(key) is not None  # key is now the most recent
    cache.put(third, empty_frame(), _meta())  # evicts `other`, the least recently used
    assert cache.get(other) is None
    assert cache.stats().evictions == 1 and cache.stats().resident == 2
    now[0] += 1.001
    assert cache.get(key) is None and cache.stats().expirations == 1
    cache.put(key, empty_frame(), _meta())
    assert cache.purge("w2") == 0 and cache.purge("w1") == 2
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.resident, stats.purges) == (1, 2, 0, 2)

    disabled = FetchCache(enabled=False, ttl_ms=1000, max_entries=2)
    disabled.put(key, empty_frame(), _meta())
    assert disabled.get(key) is None and disabled.stats().misses == 0


def test_partition_windows_follow_the_timeframe_class() -> None:
    config = load_config_dict({"exchanges": {"binance": {"symbols": ["BTC/USDT"]}}})
    minute = NodeId.parse("ohlcv:binance:BTC/USDT:1m")
    daily = NodeId.parse("ohlcv:binance:BTC/USDT:1d")
    assert partition_windows(config, minute, Range(T0 + 60, T0 + 86_400 + 60)) == [
        Range(T0, T0 + 86_400),
        Range(T0 + 86_400, T0 + 2 * 86_400),
    ]
    dec = int(datetime(2023, 12, 15, tzinfo=UTC).timestamp())
    feb = int(datetime(2024, 2, 1, tzinfo=UTC).timestamp())
    assert partition_windows(config, daily, Range(dec, T0 + 3600)) == [
        Range(int(datetime(2023, 12, 1, tzinfo=UTC).timestamp()), T0),
        Range(T0, feb),
    ]
    assert partition_keys(config, minute, [Range(T0, T0 + 2 * 86_400)]) == [
        "2024-01-01",
        "2024-01-02",
    ]
    assert partition_keys(config, daily, [Range(dec, T0 + 3600)]) == ["2023-12-01", "2024-01-01"]


def test_blend_fingerprint_names_window_and_segments() -> None:
    base = blend_fingerprint("n", 60, Range(0, 60), "v2", ["sha256:a", "sha256:b"])
    assert base.startswith("sha256:")
    assert base == blend_fingerprint("n", 60, Range(0, 60), "v2", ["sha256:a", "sha256:b"])
    assert base != blend_fingerprint("n", 60, Range(0, 120), "v2", ["sha256:a", "sha256:b"])
    assert base != blend_fingerprint("n", 60, Range(0, 60), "v2", ["sha256:b", "sha256:a"])
    assert base != blend_fingerprint("m", 60, Range(0, 60), "v2", ["sha256:a", "sha256:b"])
