"""An honest ledger end to end: real ccxt over HTTP against a misbehaving sandbox exchange.

For each fault an exchange can commit (a late candle, rows with impossible open times,
prices of 0 and below, all-zero bars), at several positions of a 3-day 1m backfill:

* the fault is flagged (run metadata and the partitions' manifests);
* nothing is stored wrong: every hot row and every published segment row equals the
  exchange's true bar at that open time;
* no slot is confirmed-empty by mistake: the gap ledger holds exactly the real
  maintenance window the sandbox is configured with (which proves the ledger still
  confirms what is truly empty), never a faulted or late slot;
* a rerun completes the data (faults are transient: `times: 1`, or the clock moves on).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from sandbox import SandboxExchange, expected_bars
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.conformance import DROP_FLAGS
from seamless_assets.core.coverage import REASON_NO_BARS, LedgerGap
from seamless_assets.core.frame import VALUE_COLUMNS, Range

from .conftest import DAY
from .conftest import kline_requests as _klines
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
DAYS = 3
WINDOW = Range(T0, T0 + DAYS * DAY)
NODE = "ohlcv:binance:BTC/USDT:1m"
SYMBOL = "BTC/USDT"
MIN = 60
# A real maintenance window, in a page (1000 bars from T0) that holds no fault: it must be
# confirmed empty every time, whatever else goes wrong elsewhere.
MAINTENANCE = Range(T0 + 3100 * MIN, T0 + 3130 * MIN)
# Fault positions (minutes after T0): the first bar of the range and of a page, the last
# bar of day 1 (mid page), the last bar of a page (the client asks again from it), the
# first bar of day 3, the last bar of the range.
POSITIONS = (0, 1439, 1999, 2880, 4319)

FAULTS = [
    ("ts_zero", "invalid_timestamp"),
    ("ts_future", "invalid_timestamp"),
    ("zero_price", "non_positive_price"),
    ("negative_price", "non_positive_price"),
    ("zero_bar", "zero_bar"),
]


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _backfill(config: SeamlessConfig) -> dg.JobExecutionResult:
    result = run_backfill(config, [config.node(NODE)], _dt(WINDOW.start), _dt(WINDOW.end))
    assert result.success
    return result


def _run_flags(result: dg.JobExecutionResult) -> dict[str, int]:
    """What conformance did to the rows the run fetched: the run totals' `fetched_rows_flags`
    (one observation per node and run)."""
    (event,) = result.get_asset_observation_events()
    totals = event.asset_observation_data.asset_observation.metadata
    return dict(totals["fetched_rows_flags"].value)  # type: ignore[arg-type]


def _truth(sandbox: SandboxExchange) -> pd.DataFrame:
    bars = expected_bars(SYMBOL, 60, WINDOW.start, WINDOW.end, sandbox.state.config)
    return pd.DataFrame(bars)


def _assert_true_bars(frame: pd.DataFrame, truth: pd.DataFrame, where: str) -> set[int]:
    """Every row of `frame` is the exchange's true bar at its open time; returns the true
    open times (inside the frame's window) that the frame lacks."""
    true_ts = truth["ts"].to_numpy()
    ts = frame["ts"].to_numpy()
    at = np.searchsorted(true_ts, ts)
    assert (at < true_ts.size).all(), f"{where}: rows after the true bars"
    assert (true_ts[at] == ts).all(), f"{where}: rows at open times with no true bar"
    for column in VALUE_COLUMNS:
        np.testing.assert_array_equal(
            frame[column].to_numpy(), truth[column].to_numpy()[at], err_msg=f"{where}: {column}"
        )
    return set(true_ts.tolist()) - set(ts.tolist())


def _assert_nothing_stored_wrong(config: SeamlessConfig, truth: pd.DataFrame) -> set[int]:
    """Hot rows and every published segment equal the true bars; returns what hot lacks."""
    node = config.node(NODE)
    lacking = _assert_true_bars(_hot(config).read_range(NODE, WINDOW), truth, "hot store")
    artifacts = _artifacts(config)
    for window, fingerprint in artifacts.heads(node).items():
        segment = artifacts.read_segment(node, fingerprint)
        inside = truth[(truth["ts"] >= window.start) & (truth["ts"] < window.end)]
        _assert_true_bars(segment, inside, f"segment {window}")
    assert artifacts.verify_all() == []
    return lacking


def _manifests(config: SeamlessConfig) -> dict[Range, dict[str, Any]]:
    node = config.node(NODE)
    artifacts = _artifacts(config)
    return {w: artifacts.read_manifest(node, fp) or {} for w, fp in artifacts.heads(node).items()}


def _ledger(config: SeamlessConfig) -> list[LedgerGap]:
    return _hot(config).ledger_gaps(NODE)


@pytest.mark.parametrize(("kind", "flag"), FAULTS)
def test_each_fault_is_flagged_never_stored_never_ledgered_and_a_rerun_completes(
    project: SeamlessConfig, sandbox: SandboxExchange, kind: str, flag: str
) -> None:
    sandbox.configure(
        gaps={SYMBOL: [[MAINTENANCE.start, MAINTENANCE.end]]},
        corruptions=[
            {"symbol": SYMBOL, "ts": T0 + p * MIN, "kind": kind, "times": 1} for p in POSITIONS
        ],
    )
    truth = _truth(sandbox)
    faulted = {T0 + p * MIN for p in POSITIONS}

    result = _backfill(project)
    assert sandbox.stats()["corrupted_rows_served"] == len(POSITIONS)
    # flagged: each faulted row once, under its own flag and no other drop flag
    flags = _run_flags(result)
    assert {f: flags.get(f, 0) for f in DROP_FLAGS} == {
        f: len(POSITIONS) * (f == flag) for f in DROP_FLAGS
    }
    manifests = _manifests(project)
    assert len(manifests) == DAYS
    assert sum(m["conformance"]["flags"][flag] for m in manifests.values()) == len(POSITIONS)
    # nothing stored wrong; what is lacking is a faulted slot (the client asks again from a
    # page's last bar, so a fault there is already mended by the same run) or maintenance
    lacking = _assert_nothing_stored_wrong(project, truth)
    assert lacking and lacking <= faulted
    # no faulted slot is confirmed empty; the real maintenance window is
    assert _ledger(project) == [LedgerGap(MAINTENANCE, REASON_NO_BARS)]
    for window, manifest in manifests.items():
        missing = {r["start"] for r in manifest["coverage"]["missing"]}
        assert missing == {t for t in lacking if window.contains(t)}, window
        # the flag is about the very slot that came back bad or empty (an impossible
        # open time is listed at the slot it stood in for), so it lands in its partition
        events = {(ts, f) for ts, f, _ in manifest["conformance"]["events"]}
        assert {(t, flag) for t in missing} <= events, window

    # the exchange serves the bars cleanly now: a rerun fetches just the lacking slots
    sandbox.reset()
    _backfill(project)
    assert 1 <= _klines(sandbox) <= len(lacking)
    assert _assert_nothing_stored_wrong(project, truth) == set()
    assert _ledger(project) == [LedgerGap(MAINTENANCE, REASON_NO_BARS)]
    for manifest in _manifests(project).values():
        assert manifest["coverage"]["completeness"] == 1.0 and manifest["coverage"]["missing"] == []


@pytest.mark.parametrize(("kind", "flag"), FAULTS)
def test_a_permanent_fault_stays_missing_work_run_after_run(
    project: SeamlessConfig, sandbox: SandboxExchange, kind: str, flag: str
) -> None:
    """Bad data is never evidence of emptiness, however often the exchange repeats it."""
    bad = T0 + DAY + 777 * MIN
    sandbox.configure(corruptions=[{"symbol": SYMBOL, "ts": bad, "kind": kind}])
    truth = _truth(sandbox)
    for run in range(2):
        sandbox.reset()
        flags = _run_flags(_backfill(project))
        assert flags.get(flag, 0) == 1, run
        assert _klines(sandbox) >= 1, run  # run 2 asks for the slot again
        assert _assert_nothing_stored_wrong(project, truth) == {bad}
        assert _ledger(project) == []


LATE = [
    # (exchange clock in seconds after T0, publish delay in seconds)
    pytest.param(2 * DAY + 10, 30.0, id="last-bar-of-a-day-30s-late"),
    pytest.param(2 * DAY + 777 * MIN + 5, 45.0, id="mid-day-45s-late"),
    pytest.param(2 * DAY + 1439 * MIN + 20, 100.0, id="two-bars-100s-late"),
    pytest.param(DAY + MIN + 1, 2.0, id="first-bar-of-a-day-2s-late"),
]


@pytest.mark.parametrize(("now_after_t0", "delay_s"), LATE)
def test_a_late_candle_stays_provisional_and_is_fetched_when_it_arrives(
    project: SeamlessConfig, sandbox: SandboxExchange, now_after_t0: int, delay_s: float
) -> None:
    """The newest closed bars are empty on the first request and served later: they are
    never ledgered (they are not stable yet), and the next runs fetch them."""
    day1_gap = Range(T0 + 300 * MIN, T0 + 320 * MIN)  # stable and truly empty: confirmed
    sandbox.configure(gaps={SYMBOL: [[day1_gap.start, day1_gap.end]]}, publish_delay_s=delay_s)
    now = T0 + now_after_t0
    sandbox.set_clock(now=now)
    closed = now // MIN * MIN
    late = {t for t in range(closed - 5 * MIN, closed, MIN) if t + MIN + delay_s > now}
    assert late, "the scenario must serve a closed bar late"
    truth = _truth(sandbox)
    truth_closed = truth[truth["ts"] < closed]

    first = _backfill(project)
    lacking = _assert_nothing_stored_wrong(project, truth_closed)
    assert lacking == late
    said = [
        e.message
        for e in dg.DagsterInstance.get().all_logs(first.run_id)
        if "stay missing work" in e.message
    ]
    assert len(said) == 1 and f"{len(late)} closed bar(s)" in said[0], said
    assert _ledger(project) == [LedgerGap(day1_gap, REASON_NO_BARS)]

    sandbox.set_clock(advance_s=60)  # a minute later the late candle is served
    _backfill(project)
    arrived = {t for t in late if t + MIN + delay_s <= now + 60}
    assert arrived, "the scenario must let a late bar arrive"
    lacking = _assert_nothing_stored_wrong(project, truth[truth["ts"] < closed + MIN])
    assert lacking & arrived == set()
    assert _ledger(project) == [LedgerGap(day1_gap, REASON_NO_BARS)]

    # once the window is stable, every bar is there and published; the ledger is exact
    sandbox.set_clock(now=WINDOW.end + 10 * MIN)
    _backfill(project)
    assert _assert_nothing_stored_wrong(project, truth) == set()
    assert _ledger(project) == [LedgerGap(day1_gap, REASON_NO_BARS)]
    manifests = _manifests(project)
    assert len(manifests) == DAYS
    assert all(m["coverage"]["completeness"] == 1.0 for m in manifests.values())
