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

from sandbox.admin import SandboxAdmin

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / ".peers"
FREQTRADE = PEERS / "freqtrade" / "bin" / "freqtrade"
FREQTRADE_PYTHON = PEERS / "freqtrade" / "bin" / "python"
#: run by FREQTRADE_PYTHON: freqtrade with its archive URL prefix replaced (see the file)
FREQTRADE_ARCHIVE = ROOT / "bench" / "peers" / "freqtrade_archive.py"
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
def seamless_config(
    data_dir: Path, url: str, *, lifted: bool, archives: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Embedded defaults, the exchange pointed at the sandbox; `lifted` raises the budget;
    `archives` (see `seamless_archives`) becomes the exchange's `archives:` section."""
    seamless: dict[str, Any] = {"data_dir": str(data_dir)}
    if lifted:
        seamless["rate_limit"] = {"tokens_per_interval": UNLIMITED, "min_interval_ms": 0}
    binance: dict[str, Any] = {
        "symbols": ["BTC/USDT"],
        "timeframes": ["1m"],
        "ccxt_config": {"urls": {"api": {"public": f"{url}/api/v3"}}},
    }
    if archives is not None:
        binance["archives"] = archives
    return {"seamless": seamless, "exchanges": {"binance": binance}}


def seamless_archives(url: str, *, max_concurrent_downloads: int = 4) -> dict[str, Any]:
    """The `archives:` section that reads the sandbox's data.binance.vision-style tree."""
    return {
        "enabled": True,
        "base_url": url,
        "max_concurrent_downloads": max_concurrent_downloads,
    }


def seamless_workdir(
    work: Path, url: str, *, lifted: bool, archives: dict[str, Any] | None = None
) -> Path:
    work.mkdir(parents=True)
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    config = seamless_config(work / "data", url, lifted=lifted, archives=archives)
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


def freqtrade_download_args(timerange: str) -> list[str]:
    """`freqtrade download-data` arguments of the job (1m BTC/USDT spot, feather)."""
    return [
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


def run_freqtrade(work: Path, timerange: str, admin: Any) -> JobRun:
    return _run_freqtrade_cmd(work, [str(FREQTRADE), *freqtrade_download_args(timerange)], admin)


def _run_freqtrade_cmd(work: Path, cmd: list[str], admin: Any) -> JobRun:
    admin.reset()
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


# ------------------------------------------------------------------------------ archives
def archive_counts(stats: dict[str, Any]) -> dict[str, Any]:
    """The archive counters of a run: requests per kind (zips and `.CHECKSUM` files, GET
    and HEAD, any status), bytes sent, answers by status."""
    buckets = stats["by_bucket"]
    return {
        "zips": int(buckets["archive/zip"]["requests"]),
        "checksums": int(buckets["archive/checksum"]["requests"]),
        "other": int(buckets["archive/other"]["requests"]),
        "head": sum(int(b["head"]) for b in buckets.values()),
        "mib": round(sum(int(b["bytes"]) for b in buckets.values()) / 2**20, 1),
        "by_status": dict(stats["by_status"]),
    }


def run_seamless_archives(work: Path, start: str, end: str, admin: SandboxAdmin) -> JobRun:
    """`run_seamless` on a workdir made with `archives=seamless_archives(url)`; the archive
    counters of the run go to `extra["archive"]` (`requests` stays the REST count)."""
    admin.archive_reset()
    run = run_seamless(work, start, end, admin)
    run.extra["archive"] = archive_counts(admin.archive_stats())
    return run


def freqtrade_archive_workdir(work: Path, url: str, *, lifted: bool) -> Path:
    """`freqtrade_workdir` without `only_from_ccxt`: binance 1m spot then downloads the
    daily archive zips first (`run_freqtrade_archives` points them at the sandbox) and
    fetches over REST (the sandbox's, as before) what the archive did not cover."""
    freqtrade_workdir(work, url, lifted=lifted)
    path = work / "config.json"
    config = json.loads(path.read_text())
    config["exchange"]["only_from_ccxt"] = False
    path.write_text(json.dumps(config, indent=2))
    return work


def run_freqtrade_archives(
    work: Path, timerange: str, admin: SandboxAdmin, archive_url: str
) -> JobRun:
    """freqtrade's `download-data` through `bench/peers/freqtrade_archive.py` (its archive
    URLs rewritten from https://data.binance.vision to `archive_url`), same arguments as
    `run_freqtrade`. `extra`: `archive` (the sandbox's archive counters), `archive_urls`
    (zips freqtrade asked for), `archive_rows` (rows its archive path returned)."""
    admin.archive_reset()
    report = work / "archive_report.json"
    cmd = [
        str(FREQTRADE_PYTHON),
        str(FREQTRADE_ARCHIVE),
        archive_url,
        str(report),
        *freqtrade_download_args(timerange),
    ]
    run = _run_freqtrade_cmd(work, cmd, admin)
    run.extra["archive"] = archive_counts(admin.archive_stats())
    sent = json.loads(report.read_text())
    run.extra["archive_urls"] = len(sent["urls"])
    run.extra["archive_rows"] = sum(int(c["rows"]) for c in sent["archive_calls"])
    return run
