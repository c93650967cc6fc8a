"""Read rows of bench/bench_peers.py: prepare one pinned snapshot and the peers' copies of
its bars, then run each tool's reads in its own process, round after round."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jobs import NODE, PEERS, ROOT, seamless_cli, seamless_env

HERE = Path(__file__).resolve().parent
PY = {
    "seamless": sys.executable,
    "arcticdb": str(PEERS / "arcticdb" / "bin" / "python"),
    "pyarrow": str(PEERS / "arcticdb" / "bin" / "python"),
    "freqtrade": str(PEERS / "freqtrade" / "bin" / "python"),
}
DAY = 86_400


@dataclass
class ReadSetup:
    config: str
    as_of: str
    sources: dict[str, str]  # tool -> what peer_read.py reads (LMDB dir, segment list, data dir)
    start: int
    end: int
    export: dict[str, Any]


def _json_out(cmd: list[str], cwd: Path = ROOT) -> dict[str, Any]:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def prepare(
    seamless_work: Path, freqtrade_work: Path, work: Path, start: int, end: int
) -> ReadSetup:
    """Commit a snapshot of the seamless store (the CLI), export its year once, write the
    same bars into an ArcticDB LMDB library and list the store's Parquet segments."""
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        seamless_cli(seamless_work, "snapshot", NODE),
        cwd=seamless_work,
        env=seamless_env(seamless_work),
        capture_output=True,
        text=True,
    )
    found = re.search(r"as_of (\S+)", out.stdout)
    if out.returncode != 0 or not found:
        raise RuntimeError(f"seamless snapshot failed: {out.stdout}\n{out.stderr[-2000:]}")
    as_of, config = found.group(1), str(seamless_work / "seamless.yaml")
    year = work / "year.parquet"
    exported = _json_out(
        [
            PY["seamless"],
            str(HERE / "seamless_read.py"),
            "export",
            config,
            as_of,
            str(year),
            str(start),
            str(end),
        ]
    )
    lmdb = work / "lmdb"
    _json_out([PY["arcticdb"], str(HERE / "peer_read.py"), "arcticdb-write", str(lmdb), str(year)])
    segments = sorted(str(p) for p in (seamless_work / "data").rglob("segments/*/data.parquet"))
    listing = work / "segments.json"
    listing.write_text(json.dumps(segments))
    sources = {
        "arcticdb": str(lmdb),
        "pyarrow": str(listing),
        "freqtrade": str(freqtrade_work / "data"),
    }
    exported["segments"] = len(segments)
    return ReadSetup(config, as_of, sources, start, end, exported)


def windows(rng: random.Random, setup: ReadSetup, span: str, count: int) -> list[list[int]]:
    """`year`: start within the first day, end within the last (~1 year, never the same
    twice); `30d`: 30 days starting at a random minute. Minute-aligned."""
    out = []
    for _ in range(count):
        if span == "year":
            a = setup.start + 60 * rng.randrange(DAY // 60)
            b = setup.end - 60 * rng.randrange(DAY // 60)
        else:
            a = setup.start + 60 * rng.randrange((setup.end - setup.start - 30 * DAY) // 60)
            b = a + 30 * DAY
        out.append([a, b])
    return out


def warm(tool: str, setup: ReadSetup, spec: Path) -> dict[str, Any]:
    if tool == "seamless":
        cmd = [
            PY[tool],
            str(HERE / "seamless_read.py"),
            "warm",
            setup.config,
            setup.as_of,
            str(spec),
        ]
    else:
        cmd = [PY[tool], str(HERE / "peer_read.py"), "warm", tool, setup.sources[tool], str(spec)]
    return _json_out(cmd)


def fresh(tool: str, setup: ReadSetup) -> dict[str, Any]:
    span = [str(setup.start), str(setup.end)]
    if tool == "seamless":
        cmd = [PY[tool], str(HERE / "seamless_read.py"), "fresh", setup.config, setup.as_of, *span]
    else:
        cmd = [PY[tool], str(HERE / "peer_read.py"), "fresh", tool, setup.sources[tool], *span]
    return _json_out(cmd)


def fingerprint(setup: ReadSetup, repeat: int) -> dict[str, Any]:
    return _json_out(
        [
            PY["seamless"],
            str(HERE / "seamless_read.py"),
            "fingerprint",
            setup.config,
            setup.as_of,
            str(setup.start),
            str(setup.end),
            str(repeat),
        ]
    )


def ceilings(url: str, start: int, end: int, pid: int) -> dict[str, Any]:
    return _json_out(
        [PY["seamless"], str(HERE / "ceilings.py"), url, str(start), str(end), str(pid)]
    )


def warm_sandbox(url: str, start: int, end: int) -> dict[str, Any]:
    """Fetch the year's 1000-bar pages once (untimed), so the sandbox's page cache holds
    them before any tool is measured, and no tool pays for encoding them first."""
    return _json_out([PY["seamless"], str(HERE / "ceilings.py"), url, str(start), str(end), "warm"])
