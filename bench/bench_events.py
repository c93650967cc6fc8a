"""Event nodes, whole process: `seamless backfill` of a year of a perpetual's funding and
of days of trades against the bundled exchange (spawned as its own process), the shipped
rate budget (Binance's published 6000 weight/min): wall, peak RSS, requests, rows.

    uv run python bench/bench_events.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers import jobs

FUNDING, TRADES = "funding:binance:BTC/USDT:USDT", "trades:binance:BTC/USDT"
CASES = {  # name: (node, start, end)
    "funding_year": (FUNDING, "2023-01-01", "2024-01-01"),
    "trades_3_days": (TRADES, "2024-01-01", "2024-01-04"),
}


def _workdir(work: Path, url: str) -> Path:
    jobs.seamless_workdir(work, url, lifted=False)
    config: dict[str, Any] = yaml.safe_load((work / "seamless.yaml").read_text())
    config["exchanges"]["binance"]["ccxt_config"]["urls"]["api"]["fapiPublic"] = f"{url}/fapi/v1"
    config["series"] = [FUNDING, TRADES]
    (work / "seamless.yaml").write_text(yaml.safe_dump(config))
    return work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from sandbox import SandboxAdmin, spawn_sandbox_process

    process, url = spawn_sandbox_process({"weight_limit_per_minute": 6000})
    admin = SandboxAdmin(url)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}
    try:
        root = Path(tempfile.mkdtemp(prefix="bench-events-"))
        for r in range(args.rounds):
            for name, (node, start, end) in CASES.items():
                work = _workdir(root / f"{name}-{r}", url)
                admin.reset()
                cmd = jobs.seamless_cli(work, "backfill", node, "--start", start, "--end", end)
                wall, rss, code = jobs._timed(cmd, work, jobs.seamless_env(work))
                if code != 0:
                    raise RuntimeError((work / "stderr.txt").read_text()[-3000:])
                out = (work / "stdout.txt").read_text()
                run = {
                    "wall_s": round(wall, 2),
                    "rss_mib": round(rss),
                    "requests": int(admin.stats()["requests_total"]),
                    "summary": [line for line in out.splitlines() if "check" in line],
                }
                results[name].append(run)
                print(json.dumps({"case": name, "round": r, **run}), flush=True)
    finally:
        process.terminate()
        process.wait()
    for name, runs in results.items():
        print(
            f"{name}: median wall {statistics.median(r['wall_s'] for r in runs):.2f} s, "
            f"peak RSS {statistics.median(r['rss_mib'] for r in runs):.0f} MiB, "
            f"{statistics.median(r['requests'] for r in runs):.0f} requests "
            f"({len(runs)} rounds)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
