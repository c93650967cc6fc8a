"""Benchmark: one year of 1m bars for one node through the Dagster job, then read it back.

    uv run python bench/bench_backfill.py [--days 365] [--repeat 3]

Each repetition runs in a fresh process (so peak RSS is that run's) against a replay
exchange in its own process with no budget, into a fresh data directory and a fresh Dagster
instance configured by the project's `dagster_home/dagster.yaml`. Prints one JSON
line per repetition and a summary with medians.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NODE = "ohlcv:binance:BTC/USDT:1m"
START = datetime(2023, 1, 1, tzinfo=UTC)


def bench_config(data_dir: Path, sandbox_url: str) -> dict:
    unlimited = 1_000_000_000
    return {
        "seamless": {
            "data_dir": str(data_dir),
            "rate_limit": {
                "tokens_per_interval": unlimited,
                "interval_ms": 1000,
                "min_interval_ms": 0,
                "local_semaphore": 8,
            },
            "partitions": {"intraday_start": "2022-01-01", "daily_start": "2022-01-01"},
        },
        "exchanges": {
            "binance": {
                "symbols": ["BTC/USDT"],
                "timeframes": ["1m"],
                "ccxt_config": {"urls": {"api": {"public": f"{sandbox_url}/api/v3"}}},
            }
        },
    }


def one_run(days: int, sandbox_url: str, work: Path) -> dict:
    """Inside a fresh process: backfill `days` daily partitions, read back, fingerprint."""
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    (work / "dagster_home").mkdir(parents=True)
    # The project's instance config (its storage class, pools), on a fresh instance.
    instance_yaml = (ROOT / "dagster_home" / "dagster.yaml").read_text()
    (work / "dagster_home" / "dagster.yaml").write_text(instance_yaml)
    config_path = work / "seamless.yaml"
    config_path.write_text(yaml.safe_dump(bench_config(work / "data", sandbox_url)))

    from sandbox import SandboxAdmin
    from seamless_assets.cli import run_backfill
    from seamless_assets.config import load_config
    from seamless_assets.core.fingerprint import FingerprintIdentity, dataset_fingerprint
    from seamless_assets.core.frame import Range
    from seamless_assets.runtime import resources_from_config

    config = load_config(config_path)
    node = config.node(NODE)
    admin = SandboxAdmin(sandbox_url)
    admin.reset()
    end = START + timedelta(days=days)

    started = time.perf_counter()
    result = run_backfill(config, [node], START, end)
    total_s = time.perf_counter() - started
    assert result.success, "backfill failed"
    # the run's totals: one observation per node (seamless_assets/materialization.py)
    event = result.get_asset_observation_events()[0]
    totals = {
        k: v.value for k, v in event.asset_observation_data.asset_observation.metadata.items()
    }
    timings = {k.removeprefix("stage_"): v for k, v in totals.items() if k.startswith("stage_")}
    stats = admin.stats()
    bars = int(totals["bars_stored"])
    klines = int(stats["by_endpoint"]["klines"]["requests"])

    artifacts = resources_from_config(config)["artifacts"].open()  # type: ignore[attr-defined]
    window = Range(int(START.timestamp()), int(end.timestamp()))
    read_ms, print_ms = [], []
    frame = None
    for _ in range(5):
        t = time.perf_counter()
        frame = artifacts.read_range(node, window)
        read_ms.append((time.perf_counter() - t) * 1000)
    assert frame is not None and len(frame) == bars
    identity = FingerprintIdentity(str(node), 60, window, "v2")
    for _ in range(5):
        t = time.perf_counter()
        dataset_fingerprint(frame, identity)
        print_ms.append((time.perf_counter() - t) * 1000)

    return {
        "days": days,
        "bars": bars,
        "total_s": round(total_s, 3),
        "fetch_s": round(timings["fetch_s"], 3),
        "pipeline_s": round(timings["total_s"], 3),
        "dagster_overhead_s": round(total_s - timings["fetch_s"], 3),  # the definition
        "dagster_only_s": round(total_s - timings["total_s"], 3),  # outside the asset body
        "bars_per_s": round(bars / total_s),
        "kline_requests": klines,
        "all_requests": int(stats["requests_total"]),
        "request_bound": math.ceil(bars / 1000) + 1,
        "requests_per_1000_bars": round(klines / bars * 1000, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "read_year_ms": round(statistics.median(read_ms), 1),
        "fingerprint_year_ms": round(statistics.median(print_ms), 1),
        "timings_s": timings,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-url", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.days, args.sandbox_url, Path(args.work))))
        return 0

    sys.path.insert(0, str(ROOT))
    from sandbox import spawn_sandbox_process

    # a published limit that never binds: this measures the pipeline, not the budget
    process, url = spawn_sandbox_process({"weight_limit_per_minute": 10**9}, port=0)
    runs = []
    try:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as work:
                out = subprocess.run(
                    [sys.executable, __file__, "--one", "--days", str(args.days),
                     "--sandbox-url", url, "--work", work],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )  # fmt: skip
                run = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps(run))
                runs.append(run)
    finally:
        process.terminate()
        process.wait()
    keys = ["total_s", "fetch_s", "dagster_overhead_s", "dagster_only_s", "bars_per_s",
            "peak_rss_mib", "read_year_ms", "fingerprint_year_ms", "kline_requests",
            "all_requests"]  # fmt: skip
    summary = {k: statistics.median(r[k] for r in runs) for k in keys}
    summary.update(bars=runs[0]["bars"], request_bound=runs[0]["request_bound"], runs=len(runs))
    print(json.dumps({"median": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
