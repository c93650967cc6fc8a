"""How long loading the definitions takes, in fresh processes (what a code server, a run
worker and every multiprocess step process pay before doing anything).

    uv run python bench/bench_load.py [--runs 9] [--config seamless.yaml] [--cli]

Each run starts a new `python -c` that imports `seamless_assets.definitions`, builds the
definitions of the config (`load_definitions`, what the lazy `defs` calls) and resolves
them as the code server does (`get_repository_def`: jobs, asset graph, sensors); it
reports the in-process time of those steps and the whole process's wall time (interpreter
start to exit). Variants are interleaved run by run so drift of the shared machine hits all
of them alike; medians are printed. `--cli` adds `dagster definitions validate` (its own
CLI start-up included) as one more variant; `--compare DIR` interleaves the same probe over
another checkout (e.g. `git worktree add /tmp/before <commit>`), with its own seamless.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, time
t0 = time.perf_counter()
import dagster
t1 = time.perf_counter()
import seamless_assets.definitions as module
t2 = time.perf_counter()
defs = module.load_definitions()
t3 = time.perf_counter()
repo = defs.get_repository_def()
repo.get_all_jobs(); repo.sensor_defs; repo.schedule_defs
t4 = time.perf_counter()
import sys
heavy = sorted(m for m in ("ccxt", "pandas", "pyarrow", "pandera", "duckdb", "psycopg",
               "redis", "boto3", "questdb", "numpy") if m in sys.modules)
print(json.dumps({"dagster_import": t1 - t0, "our_import": t2 - t1, "build": t3 - t2,
                  "resolve": t4 - t3, "load": t4 - t0, "heavy": heavy}))
"""


def _probe(env: dict[str, str], root: Path = ROOT) -> dict[str, object]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"probe failed:\n{out.stderr}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def _cli(env: dict[str, str]) -> float:
    dagster = Path(sys.executable).with_name("dagster")
    start = time.perf_counter()
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "seamless_assets.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"dagster definitions validate failed:\n{out.stderr[-2000:]}")
    return wall


def _report(probes: list[dict[str, object]]) -> None:
    for key in ["dagster_import", "our_import", "build", "resolve", "load", "wall"]:
        values = [float(p[key]) for p in probes]  # type: ignore[arg-type]
        print(
            f"  {key:<15} median {statistics.median(values):6.3f} s"
            f"  (min {min(values):.3f}, max {max(values):.3f})"
        )
    print(f"  heavy modules loaded: {probes[-1]['heavy'] or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--config", default=str(ROOT / "seamless.yaml"))
    parser.add_argument(
        "--cli", action="store_true", help="also time `dagster definitions validate`"
    )
    parser.add_argument("--compare", help="another checkout to interleave with this one")
    args = parser.parse_args()
    env = {**os.environ, "SEAMLESS_CONFIG": str(Path(args.config).resolve())}
    env.setdefault("DAGSTER_HOME", str(ROOT / "dagster_home"))
    other = Path(args.compare).resolve() if args.compare else None
    other_env = {
        **env,
        "PYTHONPATH": str(other),
        "SEAMLESS_CONFIG": str(other / "seamless.yaml") if other else "",
    }
    _probe(env)  # warm the OS page cache once; not counted
    if other:
        _probe(other_env, other)
    probes, cli, compared = [], [], []
    for _ in range(args.runs):
        probes.append(_probe(env))
        if other:
            compared.append(_probe(other_env, other))
        if args.cli:
            cli.append(_cli(env))
    print(f"{args.runs} fresh processes, config {args.config}")
    _report(probes)
    if other:
        print(f"compared checkout {other}:")
        _report(compared)
    if cli:
        print(
            f"  {'dagster definitions validate':<15} median {statistics.median(cli):6.3f} s"
            f"  (min {min(cli):.3f}, max {max(cli):.3f})"
        )


if __name__ == "__main__":
    main()
