"""A year of 1m backfilled through the archives, side by side with freqtrade (issue 12).

    uv run python bench/bench_archives.py [--rounds 3] [--markdown] [--only TOOL ...]

One spot pair (BTC/USDT), 1m, 2024-07-01 to 2025-07-01 (so the spot files of 2025, whose
timestamps are in microseconds, are part of it), against the sandbox's
data.binance.vision-compatible archive tree and its REST API, the sandbox in its own
process (`python -m sandbox`, 6000 weight/min as Binance publishes), each tool with its
shipped settings:

  seamless   `seamless backfill NODE --start --end` in a fresh process, fresh DAGSTER_HOME
             and data directory, `archives: {enabled: true, base_url: <sandbox>,
             max_concurrent_downloads: 4}` (`jobs.seamless_archives`)
  freqtrade  `freqtrade download-data` (its own venv, bench/peers/setup_envs.sh) WITHOUT
             `only_from_ccxt`, so it takes its Binance archive path; its fixed
             https://data.binance.vision prefix is rewritten to the sandbox by
             `bench/peers/freqtrade_archive.py` (nothing installed is modified)

interleaved (seamless, freqtrade, then freqtrade, seamless in the next round ...). Before
the runs the archive's `wrong_checksum` knob names files inside the span (by default the
monthly file of 2024-09, which a monthly reader gets, and the daily file of 2024-09-15,
which freqtrade's daily reader gets): their `.CHECKSUM` names a wrong sha256, their
content is correct. After the runs the outputs of each tool's last run are read back:
bars, the 2025 bars on the minute grid, the bars of the wrong-checksum files, seamless's
segment manifests (`provenance`), and whether both tools hold the same bars.

Per run: process wall, peak RSS, bars (the tool's own count), the sandbox's counters
(REST requests; archive zips, `.CHECKSUM` files, bytes). Prints JSON per measurement, then
the table (`--markdown`: a RESULTS.md section).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_peers import BINANCE_WEIGHT, _order, ensure_envs, log  # noqa: E402
from peers import jobs, reads, report  # noqa: E402

from sandbox import SandboxAdmin  # noqa: E402
from sandbox.archives import archive_url  # noqa: E402

TOOLS = ("seamless", "freqtrade")
START, END = date(2024, 7, 1), date(2025, 7, 1)
SPAN = (START.isoformat(), END.isoformat(), "20240701-20250701", 1_719_792_000, 1_751_328_000)
YEAR_BARS = (SPAN[4] - SPAN[3]) // 60  # 525,600
MICROS_FROM_S = 1_735_689_600  # 2025-01-01: spot archive files print µs from here
SYMBOL, INTERVAL = "BTCUSDT", "1m"
DEFAULT_WRONG = (
    archive_url("", "spot", "monthly", SYMBOL, INTERVAL, "2024-09"),
    archive_url("", "spot", "daily", SYMBOL, INTERVAL, "2024-09-15"),
)


# ------------------------------------------------------------------------------ the tree
def _months(start: date, end: date) -> list[str]:
    out, d = [], start.replace(day=1)
    while d < end:
        out.append(f"{d:%Y-%m}")
        d = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return out


def _days(start: date, end: date) -> list[str]:
    """Every day from `start` to `end` INCLUSIVE: freqtrade asks for the end date's file too."""
    return [f"{start + timedelta(days=i):%Y-%m-%d}" for i in range((end - start).days + 1)]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return bytes(resp.read())


def _zip_rows(body: bytes) -> tuple[int, int, int]:
    """(rows, first open_time, last open_time) as printed in the zip's CSV."""
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        text = zf.read(zf.namelist()[0]).decode()
    first_col = [line.split(",", 1)[0] for line in text.splitlines() if line[:1].isdigit()]
    return len(first_col), int(first_col[0]), int(first_col[-1])


def warm_archives(url: str) -> dict[str, Any]:
    """GET every monthly and daily zip of the span once (untimed), so the sandbox's zip
    cache holds them before any tool is measured; returns what the monthly files hold."""
    months = _months(START, END)
    monthly = [archive_url(url, "spot", "monthly", SYMBOL, INTERVAL, m) for m in months]
    daily = [archive_url(url, "spot", "daily", SYMBOL, INTERVAL, d) for d in _days(START, END)]
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(_get, monthly + daily))
    rows = [_zip_rows(b) for b in bodies[: len(monthly)]]
    return {
        "files": len(bodies),
        "mib": round(sum(map(len, bodies)) / 2**20, 1),
        "seconds": round(time.perf_counter() - started, 2),
        "monthly_rows": sum(n for n, _, _ in rows),
        "monthly_files_in_us": [
            m for m, (_, first, _) in zip(months, rows, strict=True) if first > 10**13
        ],
    }


def arm_wrong_checksums(admin: SandboxAdmin, url: str, paths: list[str]) -> dict[str, Any]:
    """Set the archive's `wrong_checksum` knob to `paths` (replacing the default file) and
    check each: its `.CHECKSUM` must name another sha256 than the zip served."""
    settings = admin.configure_archive(wrong_checksum=paths)
    checked = {}
    for path in settings["wrong_checksum"]:
        body = _get(url + path)
        published = _get(url + path + ".CHECKSUM").decode().split()[0]
        checked[path] = {"mismatch": published != hashlib.sha256(body).hexdigest()}
    return {"wrong_checksum": checked}


# ------------------------------------------------------------------------------- the runs
def seamless_config_error(url: str, work: Path) -> str | None:
    """None if the config loader accepts the `archives:` section, else its message."""
    from seamless_assets.config import load_config_dict

    raw = jobs.seamless_config(
        work / "probe-data", url, lifted=False, archives=jobs.seamless_archives(url)
    )
    try:
        load_config_dict(raw, source="bench_archives probe")
    except Exception as exc:  # ConfigError or whatever the loader raises
        return f"{type(exc).__name__}: {exc}"
    return None


def run_one(tool: str, work: Path, url: str, admin: SandboxAdmin, args: Any) -> jobs.JobRun:
    if tool == "seamless":
        archives = jobs.seamless_archives(url, max_concurrent_downloads=args.concurrency)
        jobs.seamless_workdir(work, url, lifted=False, archives=archives)
        return jobs.run_seamless_archives(work, SPAN[0], SPAN[1], admin)
    jobs.freqtrade_archive_workdir(work, url, lifted=False)
    return jobs.run_freqtrade_archives(work, SPAN[2], admin, url)


# ---------------------------------------------------------------------- reading outputs
def _period_s(path: str) -> tuple[int, int]:
    """[start, end) epoch seconds of an archive file's period (from its name)."""
    stamp = path.rsplit(f"-{INTERVAL}-", 1)[1].removesuffix(".zip")
    if len(stamp) == 7:  # YYYY-MM
        first = date.fromisoformat(stamp + "-01")
        last = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    else:
        first = date.fromisoformat(stamp)
        last = first + timedelta(days=1)
    epoch = date(1970, 1, 1)
    return (first - epoch).days * 86_400, (last - epoch).days * 86_400


def bar_facts(ts: np.ndarray, wrong: list[str]) -> dict[str, Any]:
    """What a tool's stored 1m bars (open times, epoch seconds) look like over the span."""
    ts = np.sort(ts.astype(np.int64))
    inside = ts[(ts >= SPAN[3]) & (ts < SPAN[4])]
    y2025 = inside[inside >= MICROS_FROM_S]
    return {
        "bars": len(ts),
        "outside_span": int(len(ts) - len(inside)),
        "duplicates": int(len(ts) - len(np.unique(ts))),
        "missing_in_span": int(YEAR_BARS - len(np.unique(inside))),
        "first": _iso(int(ts[0])) if len(ts) else None,
        "last": _iso(int(ts[-1])) if len(ts) else None,
        "bars_2025": len(y2025),
        "bars_2025_expected": (SPAN[4] - MICROS_FROM_S) // 60,
        "on_minute_grid": bool(np.all(ts % 60 == 0)),
        "bars_2025_on_minute_grid": int(np.count_nonzero(y2025 % 60 == 0)),
        "bars_of_wrong_checksum_files": {
            p: int(np.count_nonzero((ts >= lo) & (ts < hi)))
            for p in wrong
            for lo, hi in [_period_s(p)]
        },
    }


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def seamless_output(work: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Open times and closes of every partition's current segment, and the provenance the
    segments' manifests state (bars per source; the first manifest naming a checksum
    mismatch, verbatim)."""
    import pyarrow.parquet as pq

    from seamless_assets.core.fingerprint import fingerprint_dirname

    ts: list[np.ndarray] = []
    close: list[np.ndarray] = []
    by_source: dict[str, int] = {}
    mismatch: list[dict[str, Any]] = []
    no_provenance = 0
    heads = sorted((work / "data").glob("**/heads/*.json"))
    for head in heads:
        fingerprint = json.loads(head.read_text())["fingerprint"]
        segment = head.parent.parent / "segments" / fingerprint_dirname(fingerprint)
        table = pq.read_table(segment / "data.parquet", columns=["ts", "close"])
        ts.append(table.column("ts").to_numpy())
        close.append(table.column("close").to_numpy())
        manifest = json.loads((segment / "manifest.json").read_text())
        provenance = manifest.get("provenance")
        if not isinstance(provenance, dict):
            no_provenance += 1
            continue
        bars = provenance.get("bars", {})
        for source, count in bars.items():
            by_source[source] = by_source.get(source, 0) + int(count)
        if any(int(n) for s, n in bars.items() if s.startswith("archive_checksum_mismatch")):
            mismatch.append({"range": manifest.get("range"), "provenance": provenance})
    facts = {
        "segments": len(heads),
        "manifests_without_provenance": no_provenance,
        "bars_by_source": by_source,
        "manifests_with_checksum_mismatch": len(mismatch),
        "mismatch_partitions": [
            mismatch[0]["range"].get("start_iso"),
            mismatch[-1]["range"].get("end_iso"),
        ]
        if mismatch
        else None,
        "one_mismatch_manifest": mismatch[0] if mismatch else None,
    }
    if not heads:
        return np.empty(0, np.int64), np.empty(0), facts
    return np.concatenate(ts), np.concatenate(close), facts


def freqtrade_output(work: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Open times (epoch s) and closes of freqtrade's feather file, and what its wrapper
    recorded (the archive URLs it asked for)."""
    import pyarrow as pa
    import pyarrow.feather as feather

    files = sorted((work / "data").glob("**/BTC_USDT-1m*.feather"))
    if not files:
        raise RuntimeError(f"no freqtrade feather file under {work / 'data'}")
    table = feather.read_table(files[0])
    dates = table.column("date").combine_chunks()
    unit = dates.type.unit
    per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    raw = dates.cast(pa.int64()).to_numpy()
    if np.any(raw % per_s):
        raise RuntimeError(f"freqtrade dates off the second grid in {files[0]}")
    sent = json.loads((work / "archive_report.json").read_text())
    facts = {
        "file": str(files[0].relative_to(work)),
        "date_type": str(dates.type),
        "archive_urls": len(sent["urls"]),
        "archive_calls": sent["archive_calls"],
        "urls_sent": sent["urls"],
    }
    return raw // per_s, table.column("close").to_numpy(), facts


def inspect(
    tool: str, run: jobs.JobRun, wrong: list[str], url: str
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    if tool == "seamless":
        ts, close, own = seamless_output(run.workdir)
    else:
        ts, close, own = freqtrade_output(run.workdir)
        sent = set(own.pop("urls_sent"))
        own["wrong_checksum_files_downloaded"] = {p: url + p in sent for p in wrong}
    facts = {**bar_facts(ts, wrong), **own}
    facts["checksum_files_fetched"] = run.extra["archive"]["checksums"]
    return facts, ts, close


def same_bars(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> dict:
    oa, ob = np.argsort(a[0], kind="stable"), np.argsort(b[0], kind="stable")
    ts_a, ts_b = a[0][oa], b[0][ob]
    same_ts = bool(np.array_equal(ts_a, ts_b))
    diff = float(np.max(np.abs(a[1][oa] - b[1][ob]))) if same_ts and len(ts_a) else None
    return {"same_open_times": same_ts, "max_close_diff": diff}


# ------------------------------------------------------------------------------- summary
def summarise(runs: dict[str, list[jobs.JobRun]]) -> dict[str, Any]:
    med = report._med
    s: dict[str, Any] = {}
    for tool, items in runs.items():
        if not items:
            continue
        arch = [r.extra["archive"] for r in items]
        s[tool] = {
            "wall_s": med([r.wall_s for r in items]),
            "download_s": med([d for r in items if (d := r.download_s) is not None]),
            "rss_mib": med([r.peak_rss_mib for r in items]),
            "bars": med([b for r in items if (b := r.extra.get("bars")) is not None]),
            "rest_requests": med([r.requests for r in items]),
            "bans": sum(r.bans for r in items),
            "zips": med([a["zips"] for a in arch]),
            "checksums": med([a["checksums"] for a in arch]),
            "archive_mib": med([a["mib"] for a in arch]),
            "walls": [round(r.wall_s, 2) for r in items],
        }
    if "seamless" in s and "freqtrade" in s:
        s["wall_ratio"] = report._ratio(s["seamless"]["wall_s"], s["freqtrade"]["wall_s"])
        s["rss_ratio"] = report._ratio(s["seamless"]["rss_mib"], s["freqtrade"]["rss_mib"])
    return s


def _f(value: Any, fmt: str = "{:,.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def rows(s: dict[str, Any]) -> list[list[str]]:
    def cell(tool: str, key: str, fmt: str = "{:,.0f}", unit: str = "") -> str:
        return _f(s[tool][key], fmt) + unit if tool in s else "not run"

    def walls(tool: str) -> str:
        if tool not in s:
            return "not run"
        t = s[tool]
        return (
            f"{t['wall_s']:.2f} s (download {_f(t['download_s'], '{:.2f}')} s; runs "
            f"{', '.join(map(str, t['walls']))})"
        )

    ratio = s.get("wall_ratio")
    return [
        [
            "whole job, 1 year of 1m through the archives (process wall)",
            walls("seamless"),
            walls("freqtrade"),
            _f(ratio, "{:.2f}×"),
        ],
        [
            "peak RSS",
            cell("seamless", "rss_mib", unit=" MiB"),
            cell("freqtrade", "rss_mib", unit=" MiB"),
            _f(s.get("rss_ratio"), "{:.2f}×"),
        ],
        [
            "bars obtained (the tool's own count)",
            cell("seamless", "bars"),
            cell("freqtrade", "bars"),
            "",
        ],
        [
            "REST requests (sandbox count, all endpoints)",
            cell("seamless", "rest_requests"),
            cell("freqtrade", "rest_requests"),
            "",
        ],
        [
            "archive zips downloaded / `.CHECKSUM` files / MiB",
            _archive_cell(s, "seamless"),
            _archive_cell(s, "freqtrade"),
            "",
        ],
    ]


def _archive_cell(s: dict[str, Any], tool: str) -> str:
    if tool not in s:
        return "not run"
    t = s[tool]
    return f"{_f(t['zips'])} / {_f(t['checksums'])} / {_f(t['archive_mib'], '{:.1f}')}"


def handling(checks: dict[str, Any]) -> list[str]:
    """One line per tool: the wrong-checksum files and the µs (2025) files."""
    out = []
    for tool, c in checks.get("tools", {}).items():
        wrong = c["bars_of_wrong_checksum_files"]
        bars_wrong = ", ".join(f"{Path(p).name}: {n:,} bars" for p, n in wrong.items())
        line = (
            f"- {tool}: {c['bars']:,} bars stored ({c['missing_in_span']:,} missing in the "
            f"span, {c['duplicates']} duplicates, {c['outside_span']} outside it); 2025 (µs "
            f"files): {c['bars_2025']:,} of {c['bars_2025_expected']:,} bars, "
            f"{c['bars_2025_on_minute_grid']:,} on the minute grid; wrong-checksum files: "
            f"{bars_wrong}; `.CHECKSUM` files fetched: {c['checksum_files_fetched']}"
        )
        if tool == "seamless":
            one = c["one_mismatch_manifest"]
            line += (
                f"; manifests: bars by source {c['bars_by_source'] or 'none stated'}, "
                f"{c['manifests_with_checksum_mismatch']} segment(s) record a checksum "
                f"mismatch" + (f", e.g. `{json.dumps(one)}`" if one else "")
            )
            if c["manifests_without_provenance"]:
                line += f"; {c['manifests_without_provenance']} manifest(s) have no `provenance`"
        else:
            dl = c["wrong_checksum_files_downloaded"]
            line += (
                "; downloaded (its daily reader): "
                + ", ".join(f"{Path(p).name} {'yes' if v else 'no'}" for p, v in dl.items())
                + " (freqtrade never fetches a `.CHECKSUM`, so it cannot notice)"
            )
        out.append(line + ".")
    if "same" in checks:
        out.append(
            f"- Both stores hold the same open times: {checks['same']['same_open_times']}; "
            f"largest difference of a close between them: {checks['same']['max_close_diff']}."
        )
    return out


def table(s: dict[str, Any], checks: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"load (1/5/15 min) before {report._load(meta['load_before'])}, after "
        f"{report._load(meta['load_after'])}; {meta['rounds']} rounds; {meta['elapsed_s']:.0f} s"
    ]
    lines += [" | ".join(r) for r in [["measure", *TOOLS, "seamless / freqtrade"], *rows(s)]]
    return "\n".join(lines + handling(checks))


def markdown(s: dict[str, Any], checks: dict[str, Any], meta: dict[str, Any]) -> str:
    title = "Backfill through the archives, side by side with freqtrade"
    out = [
        *report.section_head(title, "bench/bench_archives.py", meta),
        "",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "| 1 year of 1m BTC/USDT spot, 2024-07-01 to 2025-07-01 | seamless | freqtrade | "
        "seamless / freqtrade |",
        "| --- | --- | --- | --- |",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows(s)]
    out += ["", "What each tool made of the archive's faults (last run of each):", ""]
    out += handling(checks)
    if meta.get("seamless_skipped"):
        out += ["", f"seamless not run: {meta['seamless_skipped']}"]
    return "\n".join(out) + "\n\n" + HOW


HOW = """How it is measured (`bench/bench_archives.py`, helpers in `bench/peers/`):
- The sandbox (`python -m sandbox`, own process, loopback) serves REST at 6000 weight/min
  and the data.binance.vision-style tree under `/data/`. Before any run every monthly and
  daily zip of the span is fetched once (untimed), so its zip cache serves every run alike,
  and the year's REST pages once too. The `wrong_checksum` knob names the monthly file of
  2024-09 and the daily file of 2024-09-15 (content correct, `.CHECKSUM` wrong).
- seamless: `seamless backfill ohlcv:binance:BTC/USDT:1m --start 2024-07-01 --end
  2025-07-01`, config with `archives: {enabled: true, base_url: <sandbox>,
  max_concurrent_downloads: 4}`, no rate-limit keys (shipped settings), fresh
  `DAGSTER_HOME` (databases created untimed) and data directory per run.
- freqtrade: `download-data --timeframes 1m --timerange 20240701-20250701 --pairs BTC/USDT
  --data-format-ohlcv feather`, config without `only_from_ccxt` (its default for binance
  1m spot: the daily zips, then REST for what they lack), ccxt pointed at the sandbox, run
  by `bench/peers/freqtrade_archive.py` under freqtrade's own interpreter, which swaps the
  `https://data.binance.vision` prefix of its two archive URL builders for the sandbox's
  URL and then calls `freqtrade.main.main` (the installed package is not modified).
- Interleaved rounds, alternating who goes first; figures are medians. Process wall: fork
  to exit, measured by the parent; peak RSS: `ru_maxrss` from `os.wait4`. REST requests
  and archive downloads are the sandbox's own counters, reset before each run. Download
  part: seamless's run-totals observation `stage_fetch_s`; freqtrade's log, from
  `Download history data for` to `Downloaded data for` (archive and REST fetch and parse,
  before it stores).
- Outputs read back after the runs: seamless's current segment per partition (heads ->
  `data.parquet`, `manifest.json` `provenance`), freqtrade's feather file (pyarrow).
"""


# ---------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", choices=TOOLS, help="run only this tool")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--wrong-checksum",
        action="append",
        metavar="PATH",
        help=f"archive zip path whose .CHECKSUM is made wrong (default: {list(DEFAULT_WRONG)})",
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="seamless archives.max_concurrent_downloads"
    )
    args = parser.parse_args()
    tools = [t for t in TOOLS if t in (args.only or TOOLS)]
    wrong = list(args.wrong_checksum or DEFAULT_WRONG)
    versions = ensure_envs()
    log("versions", versions)
    from sandbox import spawn_sandbox_process

    load_before, started = os.getloadavg(), time.time()
    process, url = spawn_sandbox_process({"weight_limit_per_minute": BINANCE_WEIGHT})
    admin = SandboxAdmin(url)
    work = Path(tempfile.mkdtemp(prefix="bench-archives-"))
    runs: dict[str, list[jobs.JobRun]] = {t: [] for t in tools}
    checks: dict[str, Any] = {"tools": {}}
    meta: dict[str, Any] = {}
    try:
        if "seamless" in tools:
            refused = seamless_config_error(url, work)
            if refused:
                raise SystemExit(
                    f"seamless's config loader refuses the archives section ({refused}); "
                    "run with --only freqtrade until the archive path has landed"
                )
        admin.configure(weight_limit_per_minute=10**9)
        log("sandbox_warmup_rest", reads.warm_sandbox(url, *SPAN[3:]))
        admin.configure(weight_limit_per_minute=BINANCE_WEIGHT, latency_ms=0)
        tree = warm_archives(url)
        log("sandbox_warmup_archives", tree)
        armed = arm_wrong_checksums(admin, url, wrong)
        log("archive_faults", {**armed, "config": admin.archive_config()})
        for r in range(args.rounds):
            for tool in (t for t in _order(r) if t in tools):
                run = run_one(tool, work / f"{tool}-{r}", url, admin, args)
                runs[tool].append(run)
                log("job_archives", {**vars(run), "round": r})
        outputs = {}
        for tool in tools:
            facts, ts, close = inspect(tool, runs[tool][-1], wrong, url)
            checks["tools"][tool] = facts
            outputs[tool] = (ts, close)
            log("output", {"tool": tool, **facts})
        if len(outputs) == 2:
            checks["same"] = same_bars(outputs["seamless"], outputs["freqtrade"])
            log("same_bars", checks["same"])
        meta["archive_tree"] = tree
    finally:
        process.terminate()
        process.wait()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)
    summary = summarise(runs)
    meta.update(
        {
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "versions": versions,
            "rounds": args.rounds,
            "started": started,
            "elapsed_s": time.time() - started,
            "argv": sys.argv[1:],
            "wrong_checksum": wrong,
        }
    )
    if "seamless" not in tools:
        meta["seamless_skipped"] = "left out with --only"
    log("summary", {"meta": meta, "summary": summary, "checks": checks})
    print(markdown(summary, checks, meta) if args.markdown else table(summary, checks, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
