"""The reader's values without services: the compute context, the cache, partition math."""

from __future__ import annotations

import ast
import graphlib
import re
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path

import pytest

import resources.reader as reader_module
from resources.read_storage import StorageExecutor
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
from seamless_assets.config import SeamlessConfig, load_config_dict
from seamless_assets.core.frame import Range, empty_frame
from seamless_assets.errors import ConfigError
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


SHIPPED_SLA = {
    "max_wait_storage_ms": 300,
    "max_wait_backfill_ms": 5000,
    "max_wait_live_ms": 800,
    "total_deadline_ms": 1500,
    "on_violation": "PARTIAL_FILL",
}


def _domains_config(domains: dict[str, object]) -> SeamlessConfig:
    return load_config_dict(
        {
            "seamless": {"sla": SHIPPED_SLA},
            "domains": domains,
            "exchanges": {"binance": {"symbols": ["BTC/USDT"]}},
        }
    )


def test_backtest_and_research_have_no_latency_budget_by_default() -> None:
    config = _domains_config({"backtest": {}, "live": {"max_lag_sec": 60}})
    for domain in ("backtest", "research"):
        sla = config.sla_for(domain)
        assert (sla.max_wait_storage_ms, sla.max_wait_backfill_ms, sla.max_wait_live_ms) == (
            None,
            None,
            None,
        )
        assert sla.total_deadline_ms == 300_000 and sla.on_violation == "FAIL_FAST"
    for domain in ("dryrun", "live"):
        sla = config.sla_for(domain)
        assert sla.max_wait_storage_ms == 300 and sla.total_deadline_ms == 1500
        assert sla.on_violation == "PARTIAL_FILL"


def test_a_domain_sla_overrides_only_the_keys_it_sets() -> None:
    config = _domains_config(
        {
            "backtest": {"sla": {"max_wait_storage_ms": 2000, "total_deadline_ms": None}},
            "live": {"sla": {"max_wait_live_ms": 400, "on_violation": "FAIL_FAST"}},
        }
    )
    backtest = config.sla_for("backtest")
    assert backtest.max_wait_storage_ms == 2000 and backtest.total_deadline_ms is None
    assert backtest.max_wait_backfill_ms is None and backtest.on_violation == "FAIL_FAST"
    live = config.sla_for("live")
    assert (live.max_wait_storage_ms, live.max_wait_live_ms, live.on_violation) == (
        300,
        400,
        "FAIL_FAST",
    )


@pytest.mark.parametrize(
    ("sla", "key"),
    [
        ({"max_wait_storage_ms": -1}, "domains.backtest.sla.max_wait_storage_ms"),
        ({"on_violation": "RETRY"}, "domains.backtest.sla.on_violation"),
        ({"max_wait_disk_ms": 5}, "domains.backtest.sla.max_wait_disk_ms"),
    ],
)
def test_domain_sla_keys_are_validated(sla: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        _domains_config({"backtest": {"sla": sla}})


def test_the_storage_executor_bounds_threads_and_abandoned_calls() -> None:
    executor = StorageExecutor(workers=3, max_abandoned=2)
    hang = threading.Event()
    try:
        quick = [executor.submit(lambda: 7) for _ in range(20)]
        assert [f.result(timeout=5) for f in quick] == [7] * 20
        assert executor.threads <= 3  # reused, not one per call
        hung = [executor.submit(hang.wait) for _ in range(2)]
        for future in hung:
            with pytest.raises(FutureTimeout):
                future.result(timeout=0.05)
            executor.abandon(future)
        assert executor.abandoned == 2
        assert not executor.admit(0.05)  # nothing new starts while two are abandoned
        queued = executor.submit(lambda: 1)
        executor.abandon(queued)  # a call that never started is simply cancelled
        assert queued.cancelled() and executor.abandoned == 2
        hang.set()
        assert executor.admit(5)  # true once one of the two returns: both will, shortly
        deadline = time.monotonic() + 5
        while executor.abandoned and time.monotonic() < deadline:
            time.sleep(0.01)
        assert executor.abandoned == 0
        assert executor.submit(lambda: 2).result(timeout=5) == 2
        assert executor.threads <= 3
    finally:
        hang.set()
        assert executor.shutdown(wait_s=5)


def test_the_read_path_modules_only_import_downward() -> None:
    """The read path's modules form layers: no import circle among them, no private name
    imported across them, each a screen or two."""
    root = Path(__file__).resolve().parents[2] / "resources"
    modules = {p.stem: p for p in [root / "reader.py", *sorted(root.glob("read_*.py"))]}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                target = node.module.rsplit(".", 1)[-1]
                if target in modules and (node.level or node.module.startswith("resources.")):
                    graph[name].add(target)
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    assert not private, f"{name} imports private {private} from {target}"
        assert len(path.read_text().splitlines()) <= 300, f"{name} is longer than 300 lines"
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle
    assert order[-1] == "reader" and set(order) == set(modules)
