"""The conformance-event ledger end to end: reruns restate, never accumulate.

Manifests count flags from the events persisted in the hot store. A rerun that fetches a
window again (a bar still missing, `--refetch`, `--refetch-gaps`) replaces that window's
events with what the exchange answered this time, so the same answers leave the ledger
and every manifest byte-identical, and a restated partition's manifest states the
current bars and ledger only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.flag_ledger import FlagEvent
from seamless_assets.core.frame import Range

from .conftest import DAY, open_artifacts, open_hot, tree_digest

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
DAYS = 3
END = datetime.fromtimestamp(T0 + DAYS * DAY, tz=UTC)
WINDOW = Range(T0, T0 + DAYS * DAY)
NODE = "ohlcv:binance:BTC/USDT:1m"
BAD_ROWS = {
    "duplicate": T0 + 500 * 60,  # day 1: the bar is kept, the copy dropped
    "high_below_low": T0 + DAY + 700 * 60,  # day 2: dropped, its slot stays missing
    "nan": T0 + 2 * DAY + 300 * 60,  # day 3: dropped
}
FLAG_OF = {"duplicate": "duplicate_ts", "high_below_low": "ohlc_inconsistent", "nan": "non_finite"}
HOLE = [T0 + DAY + 3600, T0 + DAY + 2 * 3600]  # an hour the exchange has no bars for


def _corrupt(sandbox: SandboxExchange, on: bool) -> None:
    rows = [{"symbol": "BTC/USDT", "ts": ts, "kind": kind} for kind, ts in BAD_ROWS.items()]
    sandbox.configure(corruptions=rows if on else [])


def _backfill(project: SeamlessConfig, **flags: bool) -> None:
    result = run_backfill(project, [project.node(NODE)], START, END, **flags)
    assert result.success


def _events(project: SeamlessConfig) -> list[FlagEvent]:
    hot = open_hot(project)
    try:
        return hot.flag_events(NODE, WINDOW)
    finally:
        hot.close()


def _manifest(project: SeamlessConfig, day: int) -> dict[str, Any]:
    node = project.node(NODE)
    artifacts = open_artifacts(project)
    head = artifacts.head(node, Range(T0 + day * DAY, T0 + (day + 1) * DAY))
    assert head is not None
    manifest = artifacts.read_manifest(node, head)
    assert manifest is not None
    return manifest


@pytest.mark.parametrize("refetch", [{}, {"refetch_stored": True}, {"refetch_gaps": True}])
def test_the_same_answers_again_leave_ledger_and_manifests_byte_identical(
    project: SeamlessConfig, sandbox: SandboxExchange, refetch: dict[str, bool]
) -> None:
    _corrupt(sandbox, on=True)
    sandbox.configure(gaps={"BTC/USDT": [HOLE]})
    _backfill(project)
    events = _events(project)
    assert events == sorted(FlagEvent(ts, FLAG_OF[kind]) for kind, ts in BAD_ROWS.items())
    for day, (kind, _) in enumerate(BAD_ROWS.items()):
        assert _manifest(project, day)["conformance"]["flags"][FLAG_OF[kind]] == 1
    assert _manifest(project, 1)["conformance"]["flags"]["gap"] == 60 + 1
    tree = tree_digest(project.data_dir / "artifacts")
    for _ in range(2):  # rerun twice: counts must not grow
        _backfill(project, **refetch)
        assert _events(project) == events
        assert tree_digest(project.data_dir / "artifacts") == tree


def test_a_refetch_restates_the_events_of_its_window(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    _corrupt(sandbox, on=True)
    _backfill(project)
    assert len(_events(project)) == len(BAD_ROWS)
    before = {day: _manifest(project, day) for day in range(DAYS)}

    _corrupt(sandbox, on=False)  # the exchange now answers cleanly
    _backfill(project, refetch_stored=True)
    assert _events(project) == []
    for day, kind in enumerate(BAD_ROWS):
        manifest = _manifest(project, day)
        if kind == "duplicate":  # same bars: the sealed segment stays what it was
            assert manifest == before[day]
            continue
        # Restated (the dropped bar is back): a new segment stating today's bars and ledger.
        assert manifest["fingerprint"] != before[day]["fingerprint"]
        assert manifest["row_count"] == 1440 and manifest["conformance"]["events"] == []
        assert set(manifest["conformance"]["flags"].values()) == {0}
    assert open_artifacts(project).verify_all() == []


def test_refetched_gaps_that_now_hold_bars_leave_the_ledger(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    sandbox.configure(gaps={"BTC/USDT": [HOLE]})
    _backfill(project)
    before = _manifest(project, 1)
    assert before["conformance"]["flags"]["gap"] == 60 and len(before["gaps"]) == 1

    sandbox.configure(gaps={})
    _backfill(project)  # a plain rerun trusts the ledger: nothing changes
    assert _manifest(project, 1) == before
    _backfill(project, refetch_gaps=True)
    after = _manifest(project, 1)
    assert after["gaps"] == [] and after["conformance"]["flags"]["gap"] == 0
    assert after["row_count"] == 1440 and after["fingerprint"] != before["fingerprint"]
    assert open_artifacts(project).verify_all() == []
