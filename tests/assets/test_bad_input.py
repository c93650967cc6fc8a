"""Bad input end to end: malformed exchange rows and malformed config.

Garbage from the exchange (injected by the sandbox's `corruptions` knob as raw JSON, so it
goes through real ccxt) must give flagged conformance, never a half-written segment and
never a confirmed-empty ledger entry for a bar that was dropped; bad config must fail at
load with a one-line `ConfigError` naming the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from sandbox import SandboxExchange, expected_bars
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.conformance import DROP_FLAGS
from seamless_assets.core.frame import Range
from seamless_assets.errors import ConfigError

from .conftest import DAY, write_config
from .conftest import kline_requests as _klines
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
DAYS = 3
END = datetime.fromtimestamp(T0 + DAYS * DAY, tz=UTC)
NODE = "ohlcv:binance:BTC/USDT:1m"
# Binance pages hold 1000 bars and the client fetches [T0, ...) in 1000-bar windows, so the
# bar T0 + 1999 min is the last of a page and T0 + 2000 min the first of the next (day 2).
BAD_TS = T0 + 1999 * 60
MID_PAGE_TS = T0 + 1500 * 60
DAY2 = Range(T0 + DAY, T0 + 2 * DAY)
assert DAY2.start <= BAD_TS < DAY2.end and DAY2.start <= MID_PAGE_TS < DAY2.end


def _run_flags(result: dg.JobExecutionResult) -> dict[str, int]:
    """What conformance did to the rows the run fetched: the run totals' `fetched_rows_flags`
    (one observation per node and run)."""
    (event,) = result.get_asset_observation_events()
    totals = event.asset_observation_data.asset_observation.metadata
    return dict(totals["fetched_rows_flags"].value)  # type: ignore[arg-type]


def _head_manifest(config: SeamlessConfig, window: Range) -> dict[str, Any]:
    node = config.node(NODE)
    artifacts = _artifacts(config)
    head = artifacts.head(node, window)
    assert head is not None, f"no segment published for {window}"
    manifest = artifacts.read_manifest(node, head)
    assert manifest is not None
    return manifest


def _assert_no_half_written_segment(config: SeamlessConfig) -> None:
    """Every manifest points at a whole data file holding exactly its rows; no temp files."""
    root = config.data_dir / "artifacts"
    assert _artifacts(config).verify_all() == []
    manifests = list(root.rglob("manifest.json"))
    assert manifests
    for path in manifests:
        manifest = json.loads(path.read_text())
        data = path.parent / manifest["format"]["file"]
        assert data.is_file(), data
        assert pq.read_metadata(data).num_rows == manifest["row_count"]
    assert not [p for p in root.rglob("*.tmp")], "temp files left behind"


def _days() -> list[Range]:
    return [Range(T0 + d * DAY, T0 + (d + 1) * DAY) for d in range(DAYS)]


# (kind, flag expected in conformance, bar kept?) — flags are what reaches conformance
# *through ccxt*: binance's parse_ohlcv turns "abc" into None (safe_number), which reads as
# a missing value, i.e. `non_finite`; "NaN"/"Infinity" become float nan/inf.
DROPPED = [
    ("string", "non_finite"),
    ("nan", "non_finite"),
    ("inf", "non_finite"),
    ("negative_volume", "ohlc_inconsistent"),
    ("high_below_low", "ohlc_inconsistent"),
    ("misaligned", "invalid_timestamp"),
]


@pytest.mark.parametrize(("kind", "flag"), DROPPED)
def test_bad_row_is_dropped_flagged_not_ledgered_and_refetched_later(
    project: SeamlessConfig, sandbox: SandboxExchange, kind: str, flag: str
) -> None:
    node = project.node(NODE)
    sandbox.configure(corruptions=[{"symbol": "BTC/USDT", "ts": BAD_TS, "kind": kind}])

    result = run_backfill(project, [node], START, END)
    assert result.success
    assert sandbox.stats()["corrupted_rows_served"] == 1
    # the run's metadata: exactly one row dropped, under the right flag
    flags = _run_flags(result)
    assert {f: flags.get(f, 0) for f in DROP_FLAGS} == {f: int(f == flag) for f in DROP_FLAGS}
    coverage = {c.check_name: c for c in result.get_asset_check_evaluations()}["coverage_ratio"]
    assert coverage.metadata["coverage_ratio"].value == pytest.approx(1 - 1 / (DAYS * 1440))

    # the bar is not stored and not confirmed empty: it is missing work, not a known gap
    hot = _hot(project)
    stored = hot.read_range(str(node), Range(T0, T0 + DAYS * DAY))
    assert len(stored) == DAYS * 1440 - 1 and BAD_TS not in set(stored["ts"])
    assert hot.ledger_gaps(str(node)) == []

    # the partition's manifest carries the flag and the hole; the other days are clean
    for window in _days():
        manifest = _head_manifest(project, window)
        got = manifest["conformance"]["flags"]
        if window == DAY2:
            assert got[flag] == 1 and sum(got[f] for f in DROP_FLAGS) == 1, got
            assert manifest["row_count"] == 1439 and manifest["gaps"] == []
            assert manifest["coverage"]["ratio"] == pytest.approx(1 - 1 / 1440)
            assert manifest["coverage"]["completeness"] == pytest.approx(1 - 1 / 1440)
            assert manifest["coverage"]["missing"][0]["start"] == BAD_TS
            assert manifest["coverage"]["missing"][0]["end"] == BAD_TS + 60
        else:
            assert sum(got[f] for f in DROP_FLAGS) == 0 and manifest["row_count"] == 1440
    _assert_no_half_written_segment(project)

    # the exchange serves the bar cleanly again: the next run refetches just that bar
    sandbox.configure(corruptions=[])
    sandbox.reset()
    again = run_backfill(project, [node], START, END)
    assert again.success and _klines(sandbox) == 1
    stored = hot.read_range(str(node), Range(T0, T0 + DAYS * DAY))
    expected = expected_bars("BTC/USDT", 60, T0, T0 + DAYS * DAY)
    np.testing.assert_array_equal(stored["ts"].to_numpy(), expected["ts"])
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(stored[column].to_numpy(), expected[column])
    revised = _head_manifest(project, DAY2)
    assert revised["row_count"] == 1440 and revised["coverage"]["ratio"] == 1.0
    assert sum(revised["conformance"]["flags"][f] for f in DROP_FLAGS) == 0
    _assert_no_half_written_segment(project)


def test_duplicate_in_a_page_is_flagged_and_the_bar_kept(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    """Mid-page: at a page's end the 1001st row is cut by ccxt's `limit` filter instead."""
    node = project.node(NODE)
    sandbox.configure(corruptions=[{"symbol": "BTC/USDT", "ts": MID_PAGE_TS, "kind": "duplicate"}])
    result = run_backfill(project, [node], START, END)
    assert result.success
    flags = _run_flags(result)
    want = {f: int(f == "duplicate_ts") for f in DROP_FLAGS}
    assert {f: flags.get(f, 0) for f in DROP_FLAGS} == want
    stored = _hot(project).read_range(str(node), Range(T0, T0 + DAYS * DAY))
    assert len(stored) == DAYS * 1440 and stored["ts"].is_unique
    manifest = _head_manifest(project, DAY2)
    assert manifest["conformance"]["flags"]["duplicate_ts"] == 1
    assert manifest["row_count"] == 1440 and manifest["coverage"]["ratio"] == 1.0
    _assert_no_half_written_segment(project)


def test_duplicate_across_page_boundary_is_flagged_and_stored_once(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    """The repeated row opens before the next page's `since`. ccxt's own since filter would
    drop it unseen; the client keeps it for conformance, which flags `duplicate_ts` once
    (in the partition of the bar) and stores the bar once: exactly the exchange's data."""
    node = project.node(NODE)
    sandbox.configure(
        corruptions=[{"symbol": "BTC/USDT", "ts": BAD_TS, "kind": "duplicate_next_page"}]
    )
    result = run_backfill(project, [node], START, END)
    assert result.success
    assert sandbox.stats()["corrupted_rows_served"] == 1  # the duplicate was sent
    flags = _run_flags(result)
    assert {f: flags.get(f, 0) for f in DROP_FLAGS} == {
        f: int(f == "duplicate_ts") for f in DROP_FLAGS
    }
    artifacts = _artifacts(project)
    heads = artifacts.heads(node)
    manifests = {w: artifacts.read_manifest(node, fp) or {} for w, fp in heads.items()}
    flagged = [w for w, m in manifests.items() if m["conformance"]["flags"]["duplicate_ts"]]
    assert flagged == [w for w in heads if w.contains(BAD_TS)]
    stored = _hot(project).read_range(str(node), Range(T0, T0 + DAYS * DAY))
    expected = expected_bars("BTC/USDT", 60, T0, T0 + DAYS * DAY)
    np.testing.assert_array_equal(stored["ts"].to_numpy(), expected["ts"])
    np.testing.assert_array_equal(stored["close"].to_numpy(), expected["close"])
    assert _hot(project).ledger_gaps(str(node)) == []
    _assert_no_half_written_segment(project)


def test_microsecond_timestamp_is_cast_and_kept(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    node = project.node(NODE)
    sandbox.configure(corruptions=[{"symbol": "BTC/USDT", "ts": BAD_TS, "kind": "us_ts"}])
    result = run_backfill(project, [node], START, END)
    assert result.success
    _assert_no_half_written_segment(project)
    hot = _hot(project)
    # whatever else happens, a bar the exchange did send is never a confirmed-empty gap
    assert hot.ledger_gaps(str(node)) == []
    # The odd row may come back on the next page too (its µs value sorts after the page's
    # cursor); every copy is cast, and copies beyond the first are flagged as duplicates.
    flags = _run_flags(result)
    assert flags["ts_cast"] >= 1
    assert flags.get("duplicate_ts", 0) == flags["ts_cast"] - 1
    stored = hot.read_range(str(node), Range(T0, T0 + DAYS * DAY))
    assert len(stored) == DAYS * 1440 and BAD_TS in set(stored["ts"])
    assert _head_manifest(project, DAY2)["conformance"]["flags"]["ts_cast"] >= 1


def test_many_corruptions_in_one_run_are_each_counted(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    node = project.node(NODE)
    kinds = [k for k, _ in DROPPED] + ["duplicate"]
    sandbox.configure(
        corruptions=[
            {"symbol": "BTC/USDT", "ts": T0 + (i + 1) * 3600, "kind": kind}
            for i, kind in enumerate(kinds)
        ]
    )
    result = run_backfill(project, [node], START, END)
    assert result.success
    want = Counter(flag for _, flag in DROPPED)
    want["duplicate_ts"] += 1
    flags = _run_flags(result)
    assert {f: flags.get(f, 0) for f in DROP_FLAGS} == {f: want[f] for f in DROP_FLAGS}
    day1 = _head_manifest(project, Range(T0, T0 + DAY))
    assert {f: day1["conformance"]["flags"][f] for f in DROP_FLAGS} == {
        f: want[f] for f in DROP_FLAGS
    }
    assert day1["row_count"] == 1440 - len(DROPPED)
    assert _hot(project).ledger_gaps(str(node)) == []
    _assert_no_half_written_segment(project)


# --------------------------------------------------------------------------- bad config
def _cli(config_path: Path, dagster_home: Path) -> subprocess.CompletedProcess[str]:
    args = [
        sys.executable, "-m", "seamless_assets.cli", "--config", str(config_path), "backfill",
        NODE, "--start", "2024-01-01", "--end", "2024-01-02",
    ]  # fmt: skip
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    env.pop("SEAMLESS_CONFIG", None)
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


def _edit(path: Path, edit: Any) -> Path:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    return path


def _append(path: Path, text: str) -> Path:
    path.write_text(path.read_text() + text)
    return path


BAD_CONFIGS: list[Any] = [
    pytest.param(
        lambda p: _edit(p, lambda d: d["exchanges"]["binance"].update(timeframes=["1m", "7m"])),
        "exchanges.binance.timeframes[1]",
        "binance has no timeframe '7m'",
        id="unknown-timeframe",
    ),
    pytest.param(
        lambda p: _edit(p, lambda d: d["exchanges"]["binance"].update(timeframes=["1M"])),
        "exchanges.binance.timeframes[0]",
        "1M",
        id="calendar-timeframe",
    ),
    pytest.param(
        lambda p: _edit(p, lambda d: d["seamless"]["backfill"].update(max_attempts="many")),
        "seamless.backfill.max_attempts",
        "many",
        id="wrong-type",
    ),
    pytest.param(
        lambda p: _append(p, "  oops: [unclosed\n"),
        "<file>",
        "not valid YAML",
        id="malformed-yaml",
    ),
]


@pytest.mark.parametrize(("corrupt", "key", "says"), BAD_CONFIGS)
def test_bad_config_is_a_one_line_config_error(
    tmp_path: Path,
    sandbox: SandboxExchange,
    dagster_home: Path,
    corrupt: Any,
    key: str,
    says: str,
) -> None:
    path = corrupt(write_config(tmp_path, sandbox.url))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key and says in str(info.value)

    done = _cli(path, dagster_home)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ConfigError: ") and f"`{key}`" in lines[0]
    assert says in lines[0]
    assert len(lines) == 1, done.stderr
    assert _klines(sandbox) == 0  # failed before touching the exchange
    assert not (tmp_path / "data").exists()  # and before writing anything
