"""Side by side with freqtrade and ArcticDB, against the bundled exchange (issue 11).

    uv run python bench/bench_peers.py [--rounds 3] [--markdown] [--only ROW ...]

Installs the peers in their own environments (bench/peers/setup_envs.sh: bench/.peers/),
starts the sandbox (`python -m sandbox`) in its own process and measures, interleaved
(seamless, peer, then peer, seamless in the next round ...), with fresh stores per run:

  job       whole job, 1 year of 1m, empty store: shipped rate settings and budgets lifted
            (process wall, download part, peak RSS)
  latency   91 days of 1m at 100 ms exchange latency, shipped settings: download time
  rerun     the same job again with everything covered: wall and requests sent
  reads     warm reads of a pinned snapshot (1 year / 30 days, a different window each
            read), first read in a fresh process, fingerprint vs hashlib
  ceilings  plain ccxt against the sandbox, and the sandbox's own ceiling

Prints JSON per measurement, then the table (`--markdown`: the RESULTS.md section).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peers import jobs, reads, report  # noqa: E402

ROWS = ("job", "latency", "rerun", "reads", "ceilings")
YEAR = ("2024-01-01", "2025-01-01", "20240101-20250101", 1_704_067_200, 1_735_689_600)
QUARTER = ("2024-01-01", "2024-04-01", "20240101-20240401")  # 91 days
BINANCE_WEIGHT = 6000


def log(what: str, data: Any) -> None:
    print(json.dumps({"row": what, **data}, default=str), flush=True)


def _run_pair(
    kind: str,
    tool: str,
    work: Path,
    url: str,
    admin: Any,
    *,
    lifted: bool,
    span: tuple[str, ...] = YEAR,
) -> jobs.JobRun:
    if tool == "seamless":
        jobs.seamless_workdir(work, url, lifted=lifted)
        return jobs.run_seamless(work, span[0], span[1], admin)
    jobs.freqtrade_workdir(work, url, lifted=lifted)
    return jobs.run_freqtrade(work, span[2], admin)


def _order(round_no: int) -> tuple[str, str]:
    return ("seamless", "freqtrade") if round_no % 2 == 0 else ("freqtrade", "seamless")


def job_rows(args: Any, admin: Any, url: str, work: Path, out: dict) -> dict[str, Path]:
    """Both settings, interleaved; returns the stores of the last budget-lifted runs."""
    last: dict[str, Path] = {}
    for setting, lifted, weight in (("shipped", False, BINANCE_WEIGHT), ("lifted", True, None)):
        admin.configure(weight_limit_per_minute=weight or 10**9, latency_ms=0)
        runs: dict[str, list[jobs.JobRun]] = {"seamless": [], "freqtrade": []}
        for r in range(args.rounds):
            for tool in _order(r):
                run = _run_pair(
                    "job", tool, work / f"job-{setting}-{tool}-{r}", url, admin, lifted=lifted
                )
                runs[tool].append(run)
                log(f"job_{setting}", {**vars(run), "round": r})
                last[tool] = run.workdir
        out[f"job_{setting}"] = runs
    return last


def latency_row(args: Any, admin: Any, url: str, work: Path, out: dict) -> None:
    admin.configure(weight_limit_per_minute=BINANCE_WEIGHT, latency_ms=100)
    runs: dict[str, list[jobs.JobRun]] = {"seamless": [], "freqtrade": []}
    try:
        for r in range(args.rounds):
            for tool in _order(r):
                run = _run_pair(
                    "latency",
                    tool,
                    work / f"latency-{tool}-{r}",
                    url,
                    admin,
                    lifted=False,
                    span=QUARTER,
                )
                runs[tool].append(run)
                log("latency", {**vars(run), "round": r})
    finally:
        admin.configure(latency_ms=0)
    out["latency"] = runs


def rerun_row(args: Any, admin: Any, stores: dict[str, Path], out: dict) -> None:
    admin.configure(weight_limit_per_minute=BINANCE_WEIGHT, latency_ms=0)
    runs: dict[str, list[jobs.JobRun]] = {"seamless": [], "freqtrade": []}
    for r in range(args.rounds):
        for tool in _order(r):
            if tool == "seamless":
                run = jobs.run_seamless(stores[tool], YEAR[0], YEAR[1], admin)
            else:
                run = jobs.run_freqtrade(stores[tool], YEAR[2], admin)
            runs[tool].append(run)
            log("rerun", {**vars(run), "round": r})
    out["rerun"] = runs


def read_rows(args: Any, stores: dict[str, Path], work: Path, out: dict) -> None:
    setup = reads.prepare(stores["seamless"], stores["freqtrade"], work / "reads", *YEAR[3:])
    log("reads_setup", vars(setup))
    rng = random.Random(11)
    per_round = max(17, math.ceil(args.reads / args.rounds))
    tools = ["seamless", "arcticdb", "pyarrow", "freqtrade"]
    for span in ("year", "30d"):
        ms: dict[str, list[float]] = {t: [] for t in tools}
        for r in range(args.rounds):
            spec = work / "reads" / f"windows-{span}-{r}.json"
            warmup, *chosen = reads.windows(rng, setup, span, per_round + 1)
            spec.write_text(json.dumps({"warmup": warmup, "reads": chosen}))
            for tool in tools[r % 4 :] + tools[: r % 4]:  # rotate who goes first
                res = reads.warm(tool, setup, spec)
                ms[tool].extend(res["ms"])
                log(
                    f"warm_{span}",
                    {
                        "tool": tool,
                        "round": r,
                        "median_ms": res["median_ms"],
                        "rows_min": min(res["rows"]),
                    },
                )
        out[f"warm_{span}"] = ms
    first: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(args.rounds):
        for tool in tools[r % 4 :] + tools[: r % 4]:
            res = reads.fresh(tool, setup)
            first[tool].append(res)
            log("fresh", {"tool": tool, "round": r, **res})
    out["fresh"] = first
    prints = [reads.fingerprint(setup, 10) for _ in range(args.rounds)]
    for p in prints:
        log("fingerprint", p)
    out["fingerprint"] = prints


def ceiling_row(args: Any, admin: Any, url: str, pid: int, out: dict) -> None:
    admin.configure(weight_limit_per_minute=10**9, latency_ms=0)
    results = []
    for r in range(args.rounds):
        admin.reset()
        res = reads.ceilings(url, *YEAR[3:], pid)
        results.append(res)
        log("ceilings", {"round": r, **res})
    out["ceilings"] = results


def ensure_envs() -> dict[str, str]:
    subprocess.run(["bash", str(ROOT / "bench" / "peers" / "setup_envs.sh")], check=True)
    return report.versions()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reads", type=int, default=50, help="warm reads per tool and span")
    parser.add_argument("--only", action="append", choices=ROWS, help="run only this row")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    rows = args.only or list(ROWS)
    versions = ensure_envs()
    log("versions", versions)
    from sandbox import SandboxAdmin, spawn_sandbox_process

    load_before, started = os.getloadavg(), time.time()
    process, url = spawn_sandbox_process({"weight_limit_per_minute": BINANCE_WEIGHT})
    admin = SandboxAdmin(url)
    admin.configure(weight_limit_per_minute=10**9)
    log("sandbox_warmup", reads.warm_sandbox(url, *YEAR[3:]))
    out: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        stores: dict[str, Path] = {}
        if "job" in rows:
            stores = job_rows(args, admin, url, work, out)
        if {"rerun", "reads"} & set(rows) and not stores:  # filled stores, not measured
            admin.configure(weight_limit_per_minute=10**9, latency_ms=0)
            for tool in ("seamless", "freqtrade"):
                stores[tool] = _run_pair(
                    "fill", tool, work / f"fill-{tool}", url, admin, lifted=True
                ).workdir
        if "latency" in rows:
            latency_row(args, admin, url, work, out)
        if "rerun" in rows:
            rerun_row(args, admin, stores, out)
        if "reads" in rows:
            read_rows(args, stores, work, out)
        if "ceilings" in rows:
            ceiling_row(args, admin, url, process.pid, out)
    finally:
        process.terminate()
        process.wait()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    load_after = os.getloadavg()
    summary = report.summarise(out)
    meta = {
        "load_before": load_before,
        "load_after": load_after,
        "versions": versions,
        "rounds": args.rounds,
        "started": started,
        "elapsed_s": time.time() - started,
        "argv": sys.argv[1:],
    }
    log("summary", {"meta": meta, "summary": summary})
    print(report.markdown(summary, meta) if args.markdown else report.table(summary, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
