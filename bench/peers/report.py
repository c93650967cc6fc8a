"""Versions, medians and the table of bench/bench_peers.py (plain text or RESULTS.md)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from .jobs import PEERS, ROOT

_DISTS = {
    ROOT / ".venv" / "bin" / "python": ("dagster", "ccxt", "pyarrow", "pandas", "duckdb"),
    PEERS / "freqtrade" / "bin" / "python": ("freqtrade", "ccxt", "pandas", "pyarrow"),
    PEERS / "arcticdb" / "bin" / "python": ("arcticdb", "pyarrow", "pandas"),
}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def versions() -> dict[str, str]:
    dirty = (
        " + uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else ""
    )
    out = {"seamless": _git("rev-parse", "--short", "HEAD") + dirty}
    for python, dists in _DISTS.items():
        env = "project" if python.parts[-3] == ".venv" else python.parts[-3]
        code = (
            "import importlib.metadata as m, platform; print(platform.python_version(), "
            + ", ".join(f"m.version({d!r})" for d in dists)
            + ")"
        )
        found = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        values = found.stdout.split()
        out[env] = " ".join(
            [f"python {values[0]}"] + [f"{d} {v}" for d, v in zip(dists, values[1:], strict=False)]
        )
    return out


def _med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _job(runs: dict[str, list[Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool, items in runs.items():
        out[tool] = {
            "wall_s": _med([r.wall_s for r in items]),
            "download_s": _med([r.download_s for r in items]),
            "rss_mib": _med([r.peak_rss_mib for r in items]),
            "requests": _med([r.requests for r in items]),
            "bans": sum(r.bans for r in items),
            "walls": [round(r.wall_s, 2) for r in items],
        }
    return out


def summarise(out: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for key in ("job_shipped", "job_lifted", "latency", "rerun"):
        if key in out:
            s[key] = _job(out[key])
    for key in ("warm_year", "warm_30d"):
        if key in out:
            s[key] = {t: {"ms": _med(v), "reads": len(v)} for t, v in out[key].items()}
    if "fresh" in out:
        s["fresh"] = {
            t: {
                "read_ms": _med([r["read_ms"] for r in v]),
                "import_ms": _med([r["import_ms"] + r.get("open_ms", 0.0) for r in v]),
                "reads": [round(r["read_ms"]) for r in v],
            }
            for t, v in out["fresh"].items()
        }
    if "fingerprint" in out:
        fp = out["fingerprint"]
        s["fingerprint"] = {
            "ms": _med([p["fingerprint_ms"] for p in fp]),
            "hashlib_ms": _med([p["hashlib_ms"] for p in fp]),
            "mb": fp[0]["bytes"] / 1e6,
            "same_digest": all(p["same_digest"] for p in fp),
        }
    if "ceilings" in out:
        c = out["ceilings"]
        s["ceilings"] = {k: _med([r[k]["bars_per_s"] for r in c]) for k in c[0]}
        raw = [r["sandbox_raw_32"] for r in c]
        s["ceilings"]["sandbox_responses_per_s"] = _med([r["responses_per_s"] for r in raw])
        s["ceilings"]["sandbox_cpu_ms"] = _med([r["server_cpu_ms_per_response"] for r in raw])
    return s


def _f(x: float | None, unit: str = "", nd: int = 2) -> str:
    return "—" if x is None else f"{x:,.{nd}f}{unit}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _met(ratio: float | None, limit: float, at_least: bool = False) -> str:
    if ratio is None:
        return "—"
    return "yes" if (ratio >= limit if at_least else ratio <= limit) else "**no**"


def rows(s: dict[str, Any]) -> list[list[str]]:
    out: list[list[str]] = []
    for key, label in (
        (
            "job_shipped",
            "whole job, 1 year of 1m, each tool's shipped rate settings (process wall)",
        ),
        ("job_lifted", "same, every budget lifted"),
    ):
        if key in s:
            a, b = s[key]["seamless"], s[key]["freqtrade"]
            r = _ratio(a["wall_s"], b["wall_s"])
            out.append(
                [
                    label,
                    f"{_f(a['wall_s'], ' s')} (download {_f(a['download_s'], ' s')})",
                    f"freqtrade {_f(b['wall_s'], ' s')} (download {_f(b['download_s'], ' s')})",
                    _f(r, "×"),
                    "≤ 1.0",
                    _met(r, 1.0),
                ]
            )
    for key in ("job_shipped", "job_lifted"):
        if key in s:
            a, b = s[key]["seamless"], s[key]["freqtrade"]
            r = _ratio(a["rss_mib"], b["rss_mib"])
            out.append(
                [
                    f"peak RSS of that job ({key.removeprefix('job_')})",
                    _f(a["rss_mib"], " MiB", 0),
                    f"freqtrade {_f(b['rss_mib'], ' MiB', 0)}",
                    _f(r, "×"),
                    "seamless ≤ 400 MiB",
                    "—" if a["rss_mib"] is None else _met(a["rss_mib"], 400),
                ]
            )
    if "latency" in s:
        a, b = s["latency"]["seamless"], s["latency"]["freqtrade"]
        r = _ratio(b["download_s"], a["download_s"])
        out.append(
            [
                "latency-bound: 91 days of 1m at 100 ms latency, budget not binding "
                "(download time)",
                _f(a["download_s"], " s"),
                f"freqtrade {_f(b['download_s'], ' s')}",
                f"{_f(r, '×')} the rate",
                "≥ 2.0",
                _met(r, 2.0, at_least=True),
            ]
        )
    if "rerun" in s:
        a, b = s["rerun"]["seamless"], s["rerun"]["freqtrade"]
        r = _ratio(a["wall_s"], b["wall_s"])
        out.append(
            [
                "rerun, everything covered (wall, requests)",
                f"{_f(a['wall_s'], ' s')}, {_f(a['requests'], '', 0)} requests",
                f"freqtrade {_f(b['wall_s'], ' s')}, {_f(b['requests'], '', 0)} requests",
                _f(r, "×"),
                "",
                "",
            ]
        )
    for key, label in (
        ("warm_year", "backtest read of 1 year, warm, a different window each read"),
        ("warm_30d", "same, 30 days"),
    ):
        if key in s:
            w = s[key]
            r = _ratio(w["seamless"]["ms"], w["arcticdb"]["ms"])
            out.append(
                [
                    f"{label} (median of {w['seamless']['reads']})",
                    _f(w["seamless"]["ms"], " ms", 1),
                    f"ArcticDB (LMDB) {_f(w['arcticdb']['ms'], ' ms', 1)}; pyarrow over the "
                    f"same segments {_f(w['pyarrow']['ms'], ' ms', 1)}; freqtrade "
                    f"`load_pair_history` {_f(w['freqtrade']['ms'], ' ms', 1)}",
                    f"{_f(r, '×')} ArcticDB",
                    "≤ 2.0",
                    _met(r, 2.0),
                ]
            )
    if "fresh" in s:
        f = s["fresh"]
        r = _ratio(f["seamless"]["read_ms"], f["pyarrow"]["read_ms"])
        peer = "; ".join(
            f"{n} {_f(f[t]['read_ms'], ' ms', 0)} (+{_f(f[t]['import_ms'], ' ms', 0)} imports)"
            for t, n in (
                ("pyarrow", "pyarrow"),
                ("arcticdb", "ArcticDB"),
                ("freqtrade", "freqtrade"),
            )
        )
        out.append(
            [
                "first read of 1 year in a fresh process",
                f"{_f(f['seamless']['read_ms'], ' ms', 0)} "
                f"(+{_f(f['seamless']['import_ms'], ' ms', 0)} imports and reader open)",
                peer,
                f"{_f(r, '×')} pyarrow",
                "≤ 1.0",
                _met(r, 1.0),
            ]
        )
    if "fingerprint" in s:
        fp = s["fingerprint"]
        r = _ratio(fp["ms"], fp["hashlib_ms"])
        out.append(
            [
                f"fingerprint of the year ({fp['mb']:.1f} MB canonical)",
                _f(fp["ms"], " ms", 1),
                f"hashlib SHA-256 of the same bytes {_f(fp['hashlib_ms'], ' ms', 1)}",
                _f(r, "×"),
                "≤ 1.3",
                _met(r, 1.3),
            ]
        )
    if "ceilings" in s:
        c = s["ceilings"]
        out.append(
            [
                "plain ccxt on the sandbox (fetch only, 1 year of 1m)",
                "—",
                f"1 connection {_f(c['ccxt_1'], ' bars/s', 0)}; 4 in flight "
                f"{_f(c['ccxt_4'], ' bars/s', 0)}",
                "",
                "",
                "",
            ]
        )
        out.append(
            [
                "the sandbox's own ceiling (raw aiohttp, 32 in flight, 1000-bar pages)",
                "—",
                f"{_f(c['sandbox_responses_per_s'], ' responses/s', 0)} = "
                f"{_f(c['sandbox_raw_32'], ' bars/s', 0)} with the client on the same cores; "
                f"server CPU {_f(c['sandbox_cpu_ms'], ' ms', 3)} per response = "
                f"{_f(_ratio(1000.0, c['sandbox_cpu_ms']), ' responses/s', 0)} per core",
                f"{_f(_ratio(c['sandbox_raw_32'], c['ccxt_4']), '×')} ccxt's 4 in flight",
                "",
                "",
            ]
        )
    return out


def _machine() -> str:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem_kb = next(
        int(ln.split()[1])
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    return f"{os.cpu_count()} cores ({model}), {mem_kb / 2**20:.1f} GiB RAM"


def _load(x: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in x)


def table(s: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"load (1/5/15 min) before {_load(meta['load_before'])}, after "
        f"{_load(meta['load_after'])}; {meta['rounds']} rounds; {meta['elapsed_s']:.0f} s"
    ]
    lines += [" | ".join(r) for r in rows(s)]
    return "\n".join(lines)


def section_head(title: str, script: str, meta: dict[str, Any]) -> list[str]:
    """A RESULTS.md section's title and its date, machine, load, rounds and command."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(meta["started"]))
    cmd = f"uv run python {script} " + " ".join(meta["argv"])
    return [
        f"## {title} (`{script}`)",
        "",
        f"Date: {when}. Machine: {_machine()}. Load average (1/5/15 min) before "
        f"{_load(meta['load_before'])}, after {_load(meta['load_after'])}. "
        f"{meta['rounds']} rounds, {meta['elapsed_s'] / 60:.1f} min in all. "
        f"Command: `{cmd.strip()}`.",
    ]


def markdown(s: dict[str, Any], meta: dict[str, Any]) -> str:
    out = [
        *section_head("Side by side with freqtrade and ArcticDB", "bench/bench_peers.py", meta),
        "",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "| work | seamless | peer | ratio | target | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows(s)]
    return "\n".join(out) + "\n\n" + HOW


HOW = """How it is measured (`bench/bench_peers.py`, helpers in `bench/peers/`):
- Peers run from their own environments (`bench/peers/setup_envs.sh`: `bench/.peers/freqtrade`,
  `bench/.peers/arcticdb`, bytecode compiled at install), the sandbox (`python -m sandbox`)
  in its own process on a loopback port. Before any measurement the year's 1000-bar pages
  are fetched once, untimed, so the sandbox's page cache serves every tool alike.
- Interleaved: each round runs seamless then freqtrade, the next round the other way round;
  read rows start each round with the next tool (seamless, ArcticDB, pyarrow, freqtrade).
  Every whole-job run has a fresh store / data directory (and a fresh `DAGSTER_HOME` with
  the project's `dagster_home/dagster.yaml`, its databases created untimed before the run,
  as after installing). Figures are medians over the rounds.
- Process wall: fork/exec to exit, measured by the parent. Peak RSS: `ru_maxrss` that
  `os.wait4` returns for that child (the largest of it and the descendants it waited for).
- Download part: seamless's run-totals observation `stage_fetch_s` (read from the run's
  Dagster instance); freqtrade's log, from `Download history data for` to `Downloaded data
  for` (fetch and parse, before it stores).
- Shipped settings: the sandbox publishes and enforces 6000 weight/min; seamless's config
  has no `rate_limit` keys; freqtrade keeps its defaults (ccxt `enableRateLimit`). Lifted:
  the sandbox publishes and enforces 10^9/min, seamless sets `rate_limit.tokens_per_interval:
  1e9, min_interval_ms: 0`, freqtrade `enableRateLimit: false` (ccxt and async ccxt).
- freqtrade's config (`bench/peers/freqtrade_config.json`): spot, `only_from_ccxt: true`
  (its default for binance 1m spot downloads zip archives from data.binance.vision, a
  fixed internet URL), ccxt `urls.api.public` pointed at the sandbox and
  `options.fetchMarkets.types: [spot]` (no futures exchangeInfo; the sandbox serves spot).
- Latency-bound: every request answered after 100 ms, shipped settings (~270 weight in
  all: the budget never binds); ratio = freqtrade download time / seamless download time.
- Rerun: the same command again on the stores of the last budget-lifted runs; requests
  are the sandbox's own count.
- Reads: `seamless snapshot` commits the store; `SeamlessReader` reads it in the backtest
  domain pinned to that `as_of`. ArcticDB gets the same bars (exported once through the
  reader), written once to an LMDB library, read with `lib.read(sym, date_range=...)`;
  pyarrow reads the store's Parquet segments (`pyarrow.dataset`, `ts` filter,
  `to_pandas()`); freqtrade `load_pair_history` (feather) with a `TimeRange`. Every read
  is a different seeded window (year: start in the first day, end in the last; 30 days:
  random start), after one untimed read in the same process. Fresh process: imports timed
  apart (for seamless with the reader's open: config, its read layers' imports, stores;
  ArcticDB's read includes opening its library); the segment cache was filled by the warm
  reads' earlier process (a process with an empty cache builds it: 2-4x pyarrow).
- Fingerprint: `dataset_fingerprint` of the year vs `hashlib.sha256` of the same bytes
  (checked to give the same digest), 10 alternated calls per round.
- Ceilings: the project's ccxt (async) fetching the year page by page; raw aiohttp GETs
  with 32 in flight (bodies read, not parsed); the sandbox's CPU per response from /proc.
"""
