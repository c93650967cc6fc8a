"""Benchmark: the read resource over a one-year snapshot of 1m bars (embedded defaults).

    uv run python bench/bench_reader.py [--repeat 3] [--markdown] [--busy N]
        [--arcticdb /path/to/python-with-arcticdb] [--reads 50]

Setup (once): the replay exchange in this process, a year of `ohlcv:binance:BTC/USDT:1m`
(2023, 365 daily partitions = 525,600 bars) through the pipeline, one snapshot, and one
read of it that fills the segment cache (`cache.segments`). Then each repetition runs in
fresh processes, interleaved (seamless, pyarrow, ArcticDB), and measures:

* warm random windows (the backtest workload; seeded, a DIFFERENT window each read, so
  the result cache never hits, asserted): `--reads` year-span windows (the year less up
  to a day at each end, ~525k bars) and as many 30-day windows, median ms;
* the first read of the year in a fresh process, imports excluded: the process imports
  the read layers (timed apart, `import_ms`), opens the reader (`open_ms`), then times
  one fetch of the year, with the segment cache filled by an earlier process (`fresh_*`)
  and with it emptied first (`fresh_*_nocache`, which builds it);
* pyarrow reading the same Parquet segments in a fresh process (`ParquetFile.read` of
  the 365 files, concat, `to_pandas`; imports and one warm-up file excluded);
* with `--arcticdb PY`: ArcticDB (LMDB, in a temp dir, the same bars written once by
  PY, a python with arcticdb, e.g. `uv venv /tmp/adb && uv pip install --python
  /tmp/adb/bin/python arcticdb pandas pyarrow`): the same windows warm, and the first
  read of the year in a fresh process, imports excluded; and the ratios;
* the earlier figures: the same 30-day read 200 times with the result cache on (p50/p99;
  the result cache keeps reads the segment cache served only up to
  `RESULT_CACHE_MAX_MAPPED_ROWS` bars, so a 30-day read is sliced out of the mapped
  segments again, not copied out of the result cache), repeated same-window reads with
  the result cache off on a warm and a cold reader, and 20 concurrent readers'
  `storage_wait` p99.

`--busy N` keeps N CPU-bound processes spinning during the repetitions (a busy machine).
Prints one JSON line per repetition and the medians; `--markdown` prints RESULTS.md rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
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
sys.path.insert(0, str(ROOT / "bench"))

import bench_reader_peers  # noqa: E402 - the sibling module, next to this script

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
    from resources.reader import RESULT_CACHE_MAX_MAPPED_ROWS, ComputeContext, SeamlessReader

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
        kept = (month[1] - month[0]) // 60 <= RESULT_CACHE_MAX_MAPPED_ROWS  # see the docstring
        assert reader.cache_stats().hits == (200 if kept else 0)
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


def _child(argv: list[str]) -> dict[str, Any]:
    child = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if child.returncode:
        sys.exit(f"{' '.join(argv[:3])} failed:\n{child.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def _repetition(work: Path, as_of: int, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """One repetition: each measurement in its own fresh process, seamless and peers
    interleaved."""
    peers = [sys.executable, str(ROOT / "bench" / "bench_reader_peers.py")]
    spans = json.dumps(bench_reader_peers.windows(seed, args.reads))
    cached, uncached = str(work / "cached.yaml"), str(work / "uncached.yaml")
    run: dict[str, float] = {}
    warm = _child([*peers, "seamless_warm", cached, str(as_of), spans])
    run["warm_random_year_ms"], run["warm_random_30d_ms"] = warm["year_ms"], warm["d30_ms"]
    if args.arcticdb:
        adb = [args.arcticdb, str(ROOT / "bench" / "bench_reader_peers.py")]
        warm = _child([*adb, "arcticdb_warm", str(work / "adb"), spans])
        run["arcticdb_warm_random_year_ms"] = warm["year_ms"]
        run["arcticdb_warm_random_30d_ms"] = warm["d30_ms"]
    fresh = _child([*peers, "seamless_fresh", uncached, str(as_of)])
    run["fresh_import_ms"], run["fresh_open_ms"] = fresh["import_ms"], fresh["open_ms"]
    run["fresh_first_read_year_ms"] = fresh["read_ms"]
    run["pyarrow_fresh_read_year_ms"] = _child([*peers, "pyarrow_fresh", str(work / "data")])[
        "read_ms"
    ]
    if args.arcticdb:
        fresh = _child([*adb, "arcticdb_fresh", str(work / "adb"), "-"])
        run["arcticdb_fresh_import_ms"] = fresh["import_ms"]
        run["arcticdb_fresh_read_year_ms"] = fresh["read_ms"]
    shutil.rmtree(work / "data" / "cache" / "segments")  # the next read builds it again
    fresh = _child([*peers, "seamless_fresh", uncached, str(as_of)])
    run["fresh_first_read_year_nocache_ms"] = fresh["read_ms"]
    classic = _child([sys.executable, __file__, "--child", f"{work}:{as_of}"])
    run.update(classic)
    run = {k: round(v, 2) for k, v in run.items()}
    print(json.dumps(run), flush=True)
    return run


def _ratios(medians: dict[str, float]) -> dict[str, float]:
    pairs = {
        "year_vs_arcticdb": ("warm_random_year_ms", "arcticdb_warm_random_year_ms"),
        "30d_vs_arcticdb": ("warm_random_30d_ms", "arcticdb_warm_random_30d_ms"),
        "fresh_vs_pyarrow": ("fresh_first_read_year_ms", "pyarrow_fresh_read_year_ms"),
        "fresh_nocache_vs_pyarrow": (
            "fresh_first_read_year_nocache_ms",
            "pyarrow_fresh_read_year_ms",
        ),
        "fresh_vs_arcticdb": ("fresh_first_read_year_ms", "arcticdb_fresh_read_year_ms"),
    }
    return {k: round(medians[a] / medians[b], 2) for k, (a, b) in pairs.items() if b in medians}


def fill_cache(work: Path, as_of: int, export: bool) -> None:
    """One read of the year fills the segment cache; with `export`, its bars are written
    for ArcticDB."""
    from resources.reader import ComputeContext, SeamlessReader

    with SeamlessReader.from_config(work / "uncached.yaml") as reader:
        frame, _ = reader.fetch(
            NODE, T0, T0 + DAYS * DAY, ComputeContext("bench", "backtest", as_of=as_of)
        )
    if export:
        frame.to_parquet(work / "year.parquet", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reads", type=int, default=50, help="random windows of each span")
    parser.add_argument("--arcticdb", help="a python with arcticdb, pandas and pyarrow")
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
        fill_cache(work, as_of, export=bool(args.arcticdb))
        if args.arcticdb:
            adb = [args.arcticdb, str(ROOT / "bench" / "bench_reader_peers.py")]
            _child([*adb, "arcticdb_write", str(work / "adb"), str(work / "year.parquet")])
        print(f"setup: a year backfilled and snapshotted in {time.perf_counter() - started:.1f} s")
        print(f"load before: {os.getloadavg()}", flush=True)
        runs = []
        spinners = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)
        ]
        try:
            runs = [_repetition(work, as_of, args, seed) for seed in range(args.repeat)]
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
        print(f"load after: {os.getloadavg()}")
    medians = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    print(json.dumps({"median_of_runs": len(runs), **medians, "ratios": _ratios(medians)}))
    if args.markdown:
        for key, value in medians.items():
            spread = ", ".join(f"{r[key]:g}" for r in runs)
            print(f"| {key} | **{value:g} ms** ({spread}) |")
        for key, value in _ratios(medians).items():
            print(f"| {key} | **{value:g}×** |")


if __name__ == "__main__":
    main()
