"""Benchmark: the read resource over a one-year snapshot of 1m bars (embedded defaults).

    uv run python bench/bench_reader.py [--repeat 3] [--markdown] [--busy N]

Setup (once): the replay exchange in this process, a year of `ohlcv:binance:BTC/USDT:1m`
(2023, 365 daily partitions = 525,600 bars) through the pipeline, one snapshot. Then each
repetition runs in a fresh process and measures backtest reads through `SeamlessReader`:

* cached read: the same 30-day read, served by the TTL LRU (p50 / p99 of 200 reads);
* uncached 30-day and one-year reads, cache disabled, on a warm reader (its immutable
  memos of snapshot resolutions and manifest flags filled by one earlier read), and on a
  cold reader (a new reader per read: snapshot resolved, manifests read every time);
* 20 concurrent readers (threads, one reader each, cache disabled) reading different
  single days, 5 rounds: p99 of the `storage_wait` each read reports.

`--busy N` keeps N CPU-bound processes spinning during the repetitions (a busy machine).
Prints one JSON line per repetition and the medians; `--markdown` prints RESULTS.md rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NODE = "ohlcv:binance:BTC/USDT:1m"
DAY = 86_400
T0 = 1_672_531_200  # 2023-01-01T00:00:00Z
DAYS = 365
CONCURRENT = 20


def bench_config(data_dir: Path, sandbox_url: str, *, cache: bool) -> dict[str, Any]:
    unlimited = 1_000_000_000
    return {
        "seamless": {
            "data_dir": str(data_dir),
            # No SLA override: backtest reads have no per-phase budget by default (only a
            # 300 s total), so the figures are the latency, never the SLA's cut-off.
            "rate_limit": {
                "tokens_per_interval": unlimited,
                "interval_ms": 1000,
                "min_interval_ms": 0,
            },
            "partitions": {"intraday_start": "2022-01-01", "daily_start": "2022-01-01"},
        },
        "cache": {"enable": cache, "ttl_ms": 600_000, "max_shards": 512},
        "domains": {"backtest": {"require_as_of": True, "source": "artifact_only"}},
        "exchanges": {
            "binance": {
                "symbols": ["BTC/USDT"],
                "timeframes": ["1m"],
                "ccxt_config": {"urls": {"api": {"public": f"{sandbox_url}/api/v3"}}},
            }
        },
    }


def write_configs(work: Path, sandbox_url: str) -> None:
    for name, cache in (("cached.yaml", True), ("uncached.yaml", False)):
        config = bench_config(work / "data", sandbox_url, cache=cache)
        (work / name).write_text(yaml.safe_dump(config))


def build_year(work: Path) -> int:
    """Backfill the year through the pipeline and snapshot it; returns the as_of."""
    from resources.exchange import ExchangeClient, ExchangeSettings
    from sandbox import SandboxConfig, SandboxExchange
    from seamless_assets.config import load_config
    from seamless_assets.core.frame import Range
    from seamless_assets.pipeline import PipelineSettings, backfill
    from seamless_assets.runtime import resources_from_config

    end = T0 + DAYS * DAY
    with SandboxExchange(
        SandboxConfig(frozen_now_s=end + DAY, weight_limit_per_minute=10**9)
    ) as sandbox:
        write_configs(work, sandbox.url)
        config = load_config(work / "uncached.yaml")
        node = config.node(NODE)
        resources: dict[str, Any] = resources_from_config(config)
        hot, artifacts = resources["hot_store"].open(), resources["artifacts"].open()
        settings = ExchangeSettings.from_config(config, "binance")
        limiter = resources["rate_limiter"].limiter(config.rate_limit_for("binance"))
        partitions = [Range(T0 + i * DAY, T0 + (i + 1) * DAY) for i in range(DAYS)]
        outcome = asyncio.run(
            backfill(
                node,
                partitions,
                hot=hot,
                artifacts=artifacts,
                client_factory=lambda: ExchangeClient(settings, limiter),
                settings=PipelineSettings(stabilization_bars=2),
            )
        )
        hot.close()
        assert len(outcome.published) == DAYS, "every day should be published"
        snapshot = artifacts.advance_snapshot(node, "v2", end, time.time())
        assert snapshot is not None and snapshot.watermark_s == end
        return snapshot.as_of_s


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(work: Path, as_of: int) -> dict[str, float]:
    """One repetition (in a fresh process): every metric, in milliseconds."""
    from resources.reader import ComputeContext, SeamlessReader

    ctx = ComputeContext("bench", "backtest", as_of=as_of)
    month = (T0 + 180 * DAY, T0 + 210 * DAY)
    year = (T0, T0 + DAYS * DAY)
    out: dict[str, float] = {}

    def timed(reader: SeamlessReader, window: tuple[int, int]) -> float:
        started = time.perf_counter()
        frame, meta = reader.fetch(NODE, *window, ctx)
        elapsed = (time.perf_counter() - started) * 1000
        assert not meta.partial and len(frame) == (window[1] - window[0]) // 60, meta
        return elapsed

    with SeamlessReader.from_config(work / "cached.yaml") as reader:
        out["cached_first_read_30d_ms"] = timed(reader, month)
        hits = [timed(reader, month) for _ in range(200)]
        assert reader.cache_stats().hits == 200
        out["cached_30d_p50_ms"] = statistics.median(hits)
        out["cached_30d_p99_ms"] = _pct(hits, 0.99)

    with SeamlessReader.from_config(work / "uncached.yaml") as reader:
        timed(reader, month)  # fills the immutable memos (snapshot resolution, manifest flags)
        out["uncached_30d_warm_ms"] = statistics.median([timed(reader, month) for _ in range(15)])
        timed(reader, year)
        out["uncached_year_warm_ms"] = statistics.median([timed(reader, year) for _ in range(7)])

    def cold(window: tuple[int, int]) -> float:
        with SeamlessReader.from_config(work / "uncached.yaml") as reader:
            return timed(reader, window)

    cold(month)  # imports and page cache, not measured
    out["uncached_30d_cold_ms"] = statistics.median([cold(month) for _ in range(7)])
    out["uncached_year_cold_ms"] = statistics.median([cold(year) for _ in range(5)])

    readers = [SeamlessReader.from_config(work / "uncached.yaml") for _ in range(CONCURRENT)]
    storage_waits: list[float] = []
    totals: list[float] = []
    try:
        for round_ in range(5):
            barrier = threading.Barrier(CONCURRENT)
            results: list[tuple[float, float]] = [(0.0, 0.0)] * CONCURRENT

            def read(
                i: int,
                round_: int = round_,
                barrier: threading.Barrier = barrier,
                results: list[tuple[float, float]] = results,
            ) -> None:
                start = T0 + ((round_ * CONCURRENT + i) % DAYS) * DAY
                barrier.wait()
                _, meta = readers[i].fetch(NODE, start, start + DAY, ctx)
                results[i] = (meta.sla["storage_wait_ms"], meta.sla["total_ms"])

            threads = [threading.Thread(target=read, args=(i,)) for i in range(CONCURRENT)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if round_ == 0:
                continue  # warm-up round: first reads of each reader
            storage_waits += [r[0] for r in results]
            totals += [r[1] for r in results]
    finally:
        for reader in readers:
            reader.close()
    out["concurrent20_storage_wait_p50_ms"] = statistics.median(storage_waits)
    out["concurrent20_storage_wait_p99_ms"] = _pct(storage_waits, 0.99)
    out["concurrent20_total_p99_ms"] = _pct(totals, 0.99)
    return {k: round(v, 2) for k, v in out.items()}


def _repetition(work: Path, as_of: int) -> dict[str, float]:
    child = subprocess.run(
        [sys.executable, __file__, "--child", f"{work}:{as_of}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if child.returncode:
        sys.exit(f"a repetition failed:\n{child.stderr[-3000:]}")
    run: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps(run), flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--busy", type=int, default=0, help="CPU-bound processes to run during the reads"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "<work dir>:<as_of>"
    args = parser.parse_args()
    if args.child:
        work, as_of = args.child.rsplit(":", 1)
        print(json.dumps(measure(Path(work), int(as_of))))
        return

    with tempfile.TemporaryDirectory(prefix="bench-reader-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        as_of = build_year(work)
        print(f"setup: a year backfilled and snapshotted in {time.perf_counter() - started:.1f} s")
        runs = []
        spinners = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)
        ]
        try:
            runs = [_repetition(work, as_of) for _ in range(args.repeat)]
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    medians = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    print(json.dumps({"median_of_runs": len(runs), **medians}))
    if args.markdown:
        for key, value in medians.items():
            spread = ", ".join(f"{r[key]:g}" for r in runs)
            print(f"| {key} | **{value:g} ms** ({spread}) |")


if __name__ == "__main__":
    main()
