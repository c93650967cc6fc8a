"""SLA budgets are enforced by cancelling the work: a hung hot store costs its budget and
no more, a slow exchange's backfill is cancelled (it writes nothing), and PARTIAL_FILL
returns what the read had, saying why."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from resources.read_runtime import MAX_ABANDONED
from resources.reader import ComputeContext
from sandbox import SandboxExchange
from seamless_assets.core.frame import Range
from seamless_assets.errors import SeamlessSLAExceeded
from tests.assets.conftest import open_hot

from .test_reader_support import (
    DAY,
    NODE_ID,
    NOW,
    T0,
    Slow,
    advance,
    day,
    frozen_sandbox,
    materialize,
    project,
    reader_for,
)

STORAGE_BUDGET_MS = 300
TIGHT = {
    "max_wait_storage_ms": STORAGE_BUDGET_MS,
    "max_wait_backfill_ms": 300,
    "max_wait_live_ms": 5000,
    "total_deadline_ms": 10_000,
}
SLACK_S = 0.050  # the acceptance bound: budget + 50 ms


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with frozen_sandbox() as exchange:
        yield exchange


def live(strategy: str) -> ComputeContext:
    return ComputeContext("w1", "live", strategy=strategy)


def test_a_hung_hot_store_raises_storage_wait_within_the_budget(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config = project(tmp_path, sandbox, sla=TIGHT)
    slow = Slow(open_hot(config), delay_s=5.0, methods=("read_range",))
    with reader_for(config, hot=slow) as reader:
        started = time.perf_counter()
        with pytest.raises(SeamlessSLAExceeded) as exceeded:
            reader.fetch(NODE_ID, NOW - 3600, NOW, live("FAIL_FAST"))
        elapsed = time.perf_counter() - started
    assert exceeded.value.phase == "storage_wait"
    assert slow.calls == ["read_range"]
    assert STORAGE_BUDGET_MS / 1000 - 0.005 <= elapsed <= STORAGE_BUDGET_MS / 1000 + SLACK_S
    assert "storage_wait exceeded its budget of 300 ms" in str(exceeded.value)


def test_partial_fill_returns_what_it_read_before_the_store_hung(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config = project(tmp_path, sandbox, sla=TIGHT)
    materialize(config, [8])  # 2024-01-09, the day before the exchange's now
    slow = Slow(open_hot(config), delay_s=5.0, methods=("coverage",))
    window = (T0 + 8 * DAY + 3600, T0 + 8 * DAY + 7200)
    with reader_for(config, hot=slow) as reader:
        started = time.perf_counter()
        frame, meta = reader.fetch(NODE_ID, *window, live("PARTIAL_FILL"))
        elapsed = time.perf_counter() - started
        assert reader.metrics()["partial_fill_returns"] == 1
    assert elapsed <= STORAGE_BUDGET_MS / 1000 + SLACK_S
    assert len(frame) == 60 and meta.partial and meta.downgrade == "PARTIAL_FILL"
    assert meta.sla_exceeded == ("storage_wait",)
    assert meta.downgrade_reason is not None
    assert "storage_wait budget of 300 ms ran out" in meta.downgrade_reason
    assert "returns what it had (60 bars)" in meta.downgrade_reason
    assert meta.sla["storage_wait_ms"] >= STORAGE_BUDGET_MS - 5


def test_the_total_deadline_binds_across_phases(tmp_path: Path, sandbox: SandboxExchange) -> None:
    sla = {
        **TIGHT,
        "max_wait_storage_ms": 5000,
        "total_deadline_ms": 200,
        "on_violation": "FAIL_FAST",
    }
    config = project(tmp_path, sandbox, sla=sla)
    slow = Slow(open_hot(config), delay_s=5.0, methods=("read_range",))
    with reader_for(config, hot=slow) as reader:
        started = time.perf_counter()
        with pytest.raises(SeamlessSLAExceeded) as exceeded:
            reader.fetch(NODE_ID, NOW - 3600, NOW, live("SEAMLESS"))
        elapsed = time.perf_counter() - started
    assert exceeded.value.phase == "total"
    assert elapsed <= 0.2 + SLACK_S


def test_a_slow_backfill_is_cancelled_when_its_budget_runs_out(tmp_path: Path) -> None:
    with frozen_sandbox() as sandbox:
        config = project(
            tmp_path,
            sandbox,
            sla={**TIGHT, "on_violation": "FAIL_FAST"},
            backfill={"mode": "sync"},
        )
        materialize(config, [0])
        advance(config, T0 + DAY)
        sandbox.configure(latency_ms=1500)  # every request now takes 1.5 s
        dry = ComputeContext("w1", "dryrun", as_of=T0 + 2 * DAY, strategy="AUTO_BACKFILL")
        with reader_for(config) as reader:
            started = time.perf_counter()
            with pytest.raises(SeamlessSLAExceeded) as exceeded:
                reader.fetch(NODE_ID, T0, T0 + 2 * DAY, dry)
            elapsed = time.perf_counter() - started
            assert exceeded.value.phase == "backfill_wait"
            assert elapsed <= 0.3 + 0.2  # the backfill budget plus the snapshot reads
            rt = reader._rt
            assert rt is not None and rt.flights == {}  # nobody waits: the fill was cancelled

            # Still cancelled once the exchange would have answered: nothing was written.
            time.sleep(2.0)
            hot = open_hot(config)
            try:
                assert hot.coverage(NODE_ID, 60, day(1)) == []
            finally:
                hot.close()

            # AUTO_BACKFILL with on_violation PARTIAL_FILL: the snapshot's day, flagged.
        config = project(
            tmp_path,
            sandbox,
            sla={**TIGHT, "on_violation": "PARTIAL_FILL"},
            backfill={"mode": "sync"},
        )
        with reader_for(config) as reader:
            frame, meta = reader.fetch(NODE_ID, T0, T0 + 2 * DAY, dry)
    assert meta.partial and meta.sla_exceeded == ("backfill_wait",)
    assert len(frame) == 1440 and int(frame["ts"].max()) < T0 + DAY
    assert "backfill_wait budget of 300 ms ran out" in (meta.downgrade_reason or "")
    assert meta.missing == (Range(T0 + DAY, T0 + 2 * DAY),)


def test_frames_are_canonical(tmp_path: Path, sandbox: SandboxExchange) -> None:
    config = project(tmp_path, sandbox)
    materialize(config, [8])
    with reader_for(config) as reader:
        frame, _ = reader.fetch(NODE_ID, T0 + 8 * DAY, T0 + 9 * DAY, live("PARTIAL_FILL"))
    assert list(frame.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert frame["ts"].dtype == "int64" and isinstance(frame, pd.DataFrame)


HUNG_EXIT_SCRIPT = """
import sys, time
from pathlib import Path
from resources.reader import ComputeContext
from seamless_assets.errors import SeamlessSLAExceeded
from tests.assets.conftest import open_hot
from tests.resources.test_reader_sla import TIGHT
from tests.resources.test_reader_support import NODE_ID, NOW, Slow, frozen_sandbox
from tests.resources.test_reader_support import project, reader_for

with frozen_sandbox() as sandbox:
    config = project(Path(sys.argv[1]), sandbox, sla=TIGHT)
    slow = Slow(open_hot(config), delay_s=120.0, methods=("read_range",))
    reader = reader_for(config, hot=slow)
    try:
        reader.fetch(NODE_ID, NOW - 3600, NOW, ComputeContext("w1", "live", strategy="FAIL_FAST"))
    except SeamlessSLAExceeded as exc:
        print("exceeded", exc.phase, flush=True)
# No close(): the process exits with the store call still hung.
"""


def test_an_abandoned_storage_call_does_not_hold_up_process_exit(tmp_path: Path) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", HUNG_EXIT_SCRIPT, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exceeded storage_wait" in done.stdout
    assert time.perf_counter() - started < 30  # the hung call sleeps 120 s


def test_in_background_mode_an_abandoned_fill_completes_for_the_next_read(tmp_path: Path) -> None:
    """The caller is released at its budget all the same; the fill runs on, once."""
    with frozen_sandbox() as sandbox:
        config = project(
            tmp_path,
            sandbox,
            sla={**TIGHT, "on_violation": "PARTIAL_FILL"},
            backfill={"mode": "background"},
        )
        materialize(config, [0])
        advance(config, T0 + DAY)
        sandbox.configure(latency_ms=1000)
        sandbox.reset()
        dry = ComputeContext("w1", "dryrun", as_of=T0 + 2 * DAY, strategy="AUTO_BACKFILL")
        with reader_for(config) as reader:
            started = time.perf_counter()
            frame, meta = reader.fetch(NODE_ID, T0, T0 + 2 * DAY, dry)
            assert time.perf_counter() - started <= 0.3 + 0.2
            assert meta.partial and meta.sla_exceeded == ("backfill_wait",)
            assert len(frame) == 1440
            rt = reader._rt
            assert rt is not None
            deadline = time.monotonic() + 20
            while rt.flights and time.monotonic() < deadline:
                time.sleep(0.05)
            assert rt.flights == {}  # the fill finished and unregistered itself
            hot = open_hot(config)
            try:
                assert hot.coverage(NODE_ID, 60, day(1)) == [day(1)]
            finally:
                hot.close()
            sandbox.configure(latency_ms=0)
            klines = sandbox.stats()["by_endpoint"]["klines"]["requests"]
            frame, meta = reader.fetch(NODE_ID, T0, T0 + 2 * DAY, dry)
            assert not meta.partial and len(frame) == 2 * 1440
            assert sandbox.stats()["by_endpoint"]["klines"]["requests"] == klines  # no refetch


def test_repeated_breaches_do_not_grow_the_thread_count(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    """Storage calls abandoned on a hung store are capped: once MAX_ABANDONED of them
    still run, a read starts no new call (it breaches its budget waiting), so the threads
    stay bounded however many reads breach; when the store recovers, reads recover."""
    config = project(tmp_path, sandbox, sla=TIGHT)
    materialize(config, [8])
    slow = Slow(open_hot(config), delay_s=60.0, methods=("read_range",))
    window = (T0 + 8 * DAY + 3600, T0 + 8 * DAY + 7200)
    with reader_for(config, hot=slow) as reader:
        rt = reader._rt
        assert rt is not None
        baseline = threading.active_count()
        for _ in range(3 * MAX_ABANDONED):
            frame, meta = reader.fetch(NODE_ID, *window, live("PARTIAL_FILL"))
            assert meta.partial and meta.sla_exceeded == ("storage_wait",) and len(frame) == 0
        assert slow.calls == ["read_range"] * MAX_ABANDONED  # nothing started beyond the cap
        assert rt.storage.abandoned == MAX_ABANDONED
        assert threading.active_count() - baseline <= MAX_ABANDONED
        assert "abandoned at their budget are still running" in (meta.downgrade_reason or "")

        slow.released.set()  # the store answers again
        deadline = time.monotonic() + 10
        while rt.storage.abandoned and time.monotonic() < deadline:
            time.sleep(0.02)
        slow.methods = ()
        frame, meta = reader.fetch(NODE_ID, *window, live("PARTIAL_FILL"))
        assert len(frame) == 60  # the bars again (the budget may still bind on a busy box)
        assert threading.active_count() - baseline <= MAX_ABANDONED
