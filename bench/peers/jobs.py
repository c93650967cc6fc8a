"""Whole-job runs of seamless and freqtrade against one sandbox, each in its own process.

A run is one fork/exec to exit, timed by the parent (`wall_s`); `peak_rss_mib` is the
`ru_maxrss` that `os.wait4` reports for that child (the largest RSS of the process and of
any descendant it waited for). Each run gets fresh directories unless a rerun reuses them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / ".peers"
FREQTRADE = PEERS / "freqtrade" / "bin" / "freqtrade"
NODE = "ohlcv:binance:BTC/USDT:1m"
ASSET_KEY = ["ohlcv", "binance_BTC_USDT_1m"]
UNLIMITED = 1_000_000_000


@dataclass
class JobRun:
    tool: str
    wall_s: float
    peak_rss_mib: float
    download_s: float | None
    requests: int
    bans: int  # 429 + 418 answers the sandbox sent during the run
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Run `cmd` to exit; returns (wall s, peak RSS MiB from wait4, exit code)."""
    with open(cwd / "stdout.txt", "wb") as out, open(cwd / "stderr.txt", "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def _check(code: int, cwd: Path, what: str) -> None:
    if code != 0:
        tail = (cwd / "stderr.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what} exited with {code} in {cwd}; stderr tail:\n{tail}")


# ------------------------------------------------------------------------------ seamless
def seamless_config(data_dir: Path, url: str, *, lifted: bool) -> dict[str, Any]:
    """Embedded defaults, the exchange pointed at the sandbox; `lifted` raises the budget."""
    seamless: dict[str, Any] = {"data_dir": str(data_dir)}
    if lifted:
        seamless["rate_limit"] = {"tokens_per_interval": UNLIMITED, "min_interval_ms": 0}
    return {
        "seamless": seamless,
        "exchanges": {
            "binance": {
                "symbols": ["BTC/USDT"],
                "timeframes": ["1m"],
                "ccxt_config": {"urls": {"api": {"public": f"{url}/api/v3"}}},
            }
        },
    }


def seamless_workdir(work: Path, url: str, *, lifted: bool) -> Path:
    work.mkdir(parents=True)
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    config = seamless_config(work / "data", url, lifted=lifted)
    (work / "seamless.yaml").write_text(yaml.safe_dump(config))
    # The instance exists before the timed run, as after installing (its databases are
    # created once per DAGSTER_HOME, ~0.5 s); the data store stays empty.
    init = "import dagster; dagster.DagsterInstance.get().get_runs(limit=1)"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", init], env=env, check=True)
    return work


def seamless_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(work / "dagster_home")
    env.pop("SEAMLESS_CONFIG", None)
    return env


def seamless_cli(work: Path, *args: str) -> list[str]:
    return [
        str(ROOT / ".venv" / "bin" / "seamless"),
        "--config",
        str(work / "seamless.yaml"),
        *args,
    ]


def run_seamless(work: Path, start: str, end: str, admin: Any) -> JobRun:
    """`seamless backfill NODE --start --end` in a fresh process; fetch time from the run's
    totals observation (`stage_fetch_s`), requests and bans from the sandbox's counters."""
    admin.reset()
    cmd = seamless_cli(work, "backfill", NODE, "--start", start, "--end", end)
    wall, rss, code = _timed(cmd, work, seamless_env(work))
    _check(code, work, "seamless backfill")
    stats = admin.stats()
    totals = _run_totals(work)
    complete = _json_line(work / "stderr.txt", "backfill_complete")
    return JobRun(
        "seamless",
        wall,
        rss,
        totals.get("stage_fetch_s"),
        int(stats["requests_total"]),
        int(stats["sent_429"]) + int(stats["sent_418"]),
        work,
        {"bars": complete.get("bars_stored"), "run_duration_s": complete.get("duration_s")},
    )


def _json_line(path: Path, event: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"event": "{event}"' in line:
            found = json.loads(line)
    return found


def _run_totals(work: Path) -> dict[str, Any]:
    """Metadata of the newest run-totals observation in the run's Dagster instance."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    with dg.DagsterInstance.get() as instance:
        result = instance.fetch_observations(dg.AssetKey(ASSET_KEY), limit=1)
        if not result.records:
            return {}
        obs = result.records[0].asset_observation
        return {k: v.value for k, v in (obs.metadata if obs else {}).items()}


# ----------------------------------------------------------------------------- freqtrade
def freqtrade_workdir(work: Path, url: str, *, lifted: bool) -> Path:
    """Config from bench/peers/freqtrade_config.json; `lifted` turns ccxt's limiter off.

    `only_from_ccxt` keeps freqtrade on the REST API: its default for binance 1m spot is
    the zip archives of data.binance.vision, a fixed internet URL no sandbox can stand in for.
    `fetchMarkets.types: [spot]` keeps ccxt from loading the futures markets (fapi/dapi
    exchangeInfo), which a spot download does not use and the sandbox does not serve.
    """
    work.mkdir(parents=True)
    config = json.loads((ROOT / "bench" / "peers" / "freqtrade_config.json").read_text())
    ccxt: dict[str, Any] = {
        "urls": {"api": {"public": f"{url}/api/v3"}},
        "options": {"fetchMarkets": {"types": ["spot"]}},
    }
    if lifted:
        ccxt["enableRateLimit"] = False
    config["exchange"]["ccxt_config"] = ccxt
    config["exchange"]["ccxt_async_config"] = ccxt
    (work / "config.json").write_text(json.dumps(config, indent=2))
    (work / "user_data").mkdir()
    return work


def run_freqtrade(work: Path, timerange: str, admin: Any) -> JobRun:
    admin.reset()
    cmd = [
        str(FREQTRADE),
        "download-data",
        "-c",
        "config.json",
        "--userdir",
        "user_data",
        "--datadir",
        "data",
        "--timeframes",
        "1m",
        "--timerange",
        timerange,
        "--pairs",
        "BTC/USDT",
        "--data-format-ohlcv",
        "feather",
    ]
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    wall, rss, code = _timed(cmd, work, env)
    _check(code, work, "freqtrade download-data")
    stats = admin.stats()
    log = (work / "stdout.txt").read_text(errors="replace") + (work / "stderr.txt").read_text(
        errors="replace"
    )
    length = re.findall(r"Downloaded data for BTC/USDT, 1m, spot with length (\d+)", log)
    return JobRun(
        "freqtrade",
        wall,
        rss,
        _freqtrade_download_s(log),
        int(stats["requests_total"]),
        int(stats["sent_429"]) + int(stats["sent_418"]),
        work,
        {"bars": int(length[-1]) if length else None},
    )


_STAMP = (
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - freqtrade\.data\.history\.history_utils - INFO - "
)


def _freqtrade_download_s(log: str) -> float | None:
    """From its log: 'Download history data for' to 'Downloaded data for' (fetch + parse,
    before storing), millisecond timestamps."""
    began = re.findall(_STAMP + r"Download history data for", log)
    ended = re.findall(_STAMP + r"Downloaded data for", log)
    if not began or not ended:
        return None
    fmt = "%Y-%m-%d %H:%M:%S,%f"
    return (datetime.strptime(ended[-1], fmt) - datetime.strptime(began[-1], fmt)).total_seconds()
