"""One tool's whole-job runs against the bundled exchange, for profiling between full
side-by-side runs (`bench_peers.py` is the reference): wall, peak RSS, the run's own stage
timings. Optional A/B: `--ref DIR` runs a second checkout's `seamless` interleaved.

    uv run python bench/bench_job_probe.py --setting lifted --rounds 2
    uv run python bench/bench_job_probe.py --setting latency --rounds 3 --ref /tmp/base
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_peers import BINANCE_WEIGHT, QUARTER, YEAR
from bench.peers import jobs, reads

SETTINGS = {  # name: (lifted config, sandbox weight per minute, latency ms, span)
    "shipped": (False, BINANCE_WEIGHT, 0, YEAR),
    "lifted": (True, 10**9, 0, YEAR),
    "latency": (False, BINANCE_WEIGHT, 100, QUARTER),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=SETTINGS, default="lifted")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ref", type=Path, help="another checkout to interleave with")
    args = parser.parse_args()
    from sandbox import SandboxAdmin, spawn_sandbox_process

    lifted, weight, latency, span = SETTINGS[args.setting]
    process, url = spawn_sandbox_process({"weight_limit_per_minute": BINANCE_WEIGHT})
    work = Path(tempfile.mkdtemp(prefix="job-probe-"))
    try:
        admin = SandboxAdmin(url)
        reads.warm_sandbox(url, *YEAR[3:])
        admin.configure(weight_limit_per_minute=weight, latency_ms=latency)
        roots = {"this": jobs.ROOT, **({"ref": args.ref.resolve()} if args.ref else {})}
        for r in range(args.rounds):
            for name, root in roots.items() if r % 2 == 0 else reversed(roots.items()):
                jobs.ROOT = root
                run_dir = work / f"{name}-{r}"
                jobs.seamless_workdir(run_dir, url, lifted=lifted)
                run = jobs.run_seamless(run_dir, span[0], span[1], admin)
                totals = jobs._run_totals(run_dir)
                stages = {k: v for k, v in totals.items() if k.startswith("stage_")}
                print(
                    json.dumps(
                        {
                            "tree": name,
                            "round": r,
                            "wall_s": round(run.wall_s, 2),
                            "rss_mib": round(run.peak_rss_mib),
                            "download_s": run.download_s,
                            "requests": run.requests,
                            "bans": run.bans,
                            **run.extra,
                            **stages,
                        },
                        default=str,
                    ),
                    flush=True,
                )
    finally:
        process.terminate()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
