"""The reader's /metrics endpoint: the shared Redis bucket's tokens (real Redis), one
endpoint per port for the readers of a process, and a configured port served on open."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from resources.exchange import ExchangeSettings
from resources.metrics_export import serve_metrics, stop_serving
from sandbox import SandboxExchange
from tests.resources.test_reader_support import frozen_sandbox, project, reader_for
from tests.services import REDIS_ADDR, REDIS_DSN, require_service

from .test_prometheus import free_port


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with frozen_sandbox() as exchange:
        yield exchange


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_tokens_of_the_shared_redis_bucket_are_served(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    require_service("redis", REDIS_ADDR)
    # a key of this test only (the Redis is shared); 60 a minute, burst 10: 50/60 per second
    template = f"seamlesstest{uuid.uuid4().hex[:8]}:{{exchange}}"
    rate = {
        "redis_dsn": REDIS_DSN, "key_template": template, "tokens_per_interval": 60,
        "interval_ms": 60_000, "burst_tokens": 10, "min_interval_ms": 0,
    }  # fmt: skip
    config = project(tmp_path, sandbox, rate_limit=rate)
    with reader_for(config) as reader:
        port = serve_metrics(reader, 0)
        try:
            key = ExchangeSettings.from_config(config, "binance").rate_key
            assert not [k for k in scrape(port) if k[0].startswith("seamless_rl_tokens")]
            limiter = reader._runtime().rate_limiter.limiter(config.rate_limit_for("binance"))
            budget = limiter.budget(key)
            asyncio.run(limiter.acquire(key, 1.0))  # a new bucket starts empty: ~1.2 s
            samples = scrape(port)
        finally:
            stop_serving(port)
    labels = (("limiter_key", key),)
    assert samples[("seamless_rl_tokens_capacity", labels)] == budget.capacity == 10
    # just taken from an empty bucket: what refilled since, far below the capacity
    assert 0 <= samples[("seamless_rl_tokens_available", labels)] < 2


def test_a_configured_port_is_served_on_open_and_shared_by_the_readers_of_a_process(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    port = free_port()
    config = project(tmp_path, sandbox, observability={"metrics": {"port": port}})
    try:
        with reader_for(config):
            assert scrape(port)[("seamless_cache_resident", ())] == 0  # served on open
            with reader_for(config) as second:  # the same port: joins the endpoint
                assert serve_metrics(second, port) == port
            assert ("seamless_cache_hit_total", ()) in scrape(port)
    finally:
        stop_serving(port)
