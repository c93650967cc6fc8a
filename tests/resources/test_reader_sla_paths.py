"""Every SLA breach follows `on_violation` on every path of the read: snapshot resolution
and reads, segment manifests, the hot store, fills, the exchange clock, dry-run
publication; in every domain. A real store wrapped to hang (fault injection) or a slow
exchange breaches one phase; FAIL_FAST raises `SeamlessSLAExceeded(phase)` within the
budget, PARTIAL_FILL never raises and returns what it has, flagged partial with the
reason."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from resources.reader import ComputeContext, SeamlessReader
from sandbox import SandboxExchange
from seamless_assets.errors import MissingPartitions, SeamlessSLAExceeded
from tests.assets.conftest import open_artifacts, open_hot

from .test_reader_support import (
    DAY,
    NODE_ID,
    NOW,
    T0,
    Slow,
    advance,
    frozen_sandbox,
    materialize,
    project,
)

BUDGET_MS = 800  # well above what the real calls take on a busy machine
#: Budgets of the phase under test are BUDGET_MS; the others are roomy, so exactly one
#: phase breaches.
ROOMY = {
    "max_wait_storage_ms": 20_000,
    "max_wait_backfill_ms": 20_000,
    "max_wait_live_ms": 20_000,
    "total_deadline_ms": 30_000,
}
BUDGET_KEY = {
    "storage_wait": "max_wait_storage_ms",
    "backfill_wait": "max_wait_backfill_ms",
    "live_wait": "max_wait_live_ms",
}
HANG_S = 20.0
SLACK_S = 1.0  # a busy machine (the suite runs beside other work)


@dataclass(frozen=True)
class ReadPath:
    name: str
    domain: str
    window: tuple[int, int]
    phase: str
    as_of: int | None = None
    strategy: str = "AUTO_BACKFILL"
    slow_hot: tuple[str, ...] = ()
    slow_artifacts: tuple[str, ...] = ()
    exchange_latency_ms: int = 0
    partial: bool = True  # False: the breach costs no bars (only the measurement)
    extra_sla: dict[str, int] = field(default_factory=dict)


# Data: days 0-2 stored and published, days 0-1 in the snapshot committed at T0 + 2 days.
SNAP = T0 + 2 * DAY
PATHS = [
    ReadPath("snapshot resolution", "backtest", (T0, SNAP), "storage_wait", SNAP,
             slow_artifacts=("resolve_snapshot",)),
    ReadPath("snapshot read", "research", (T0, SNAP), "storage_wait", SNAP,
             slow_artifacts=("read_snapshot_range",)),
    ReadPath("segment manifests", "backtest", (T0, SNAP), "storage_wait", SNAP,
             slow_artifacts=("read_manifest",)),
    ReadPath("dryrun snapshot", "dryrun", (T0, SNAP), "storage_wait", SNAP,
             slow_artifacts=("resolve_snapshot",)),
    ReadPath("dryrun stored coverage", "dryrun", (T0, T0 + 3 * DAY), "storage_wait",
             T0 + 3 * DAY, slow_hot=("coverage",)),
    ReadPath("dryrun read-back", "dryrun", (T0, T0 + 3 * DAY), "storage_wait", T0 + 3 * DAY,
             slow_artifacts=("read_segment",)),
    ReadPath("dryrun backfill", "dryrun", (T0, T0 + 4 * DAY), "backfill_wait", T0 + 4 * DAY,
             exchange_latency_ms=1500),
    ReadPath("live hot read", "live", (T0 + DAY, SNAP), "storage_wait",
             slow_hot=("read_range",)),
    ReadPath("live hot coverage", "live", (T0 + DAY, SNAP), "storage_wait",
             slow_hot=("ledger_gaps",)),
    ReadPath("live exchange clock", "live", (T0 + DAY, SNAP), "live_wait",
             exchange_latency_ms=1500, partial=False),
    ReadPath("live backfill", "live", (NOW - 3600, NOW), "backfill_wait", strategy="SEAMLESS",
             exchange_latency_ms=1500, extra_sla={"max_wait_live_ms": 20_000}),
]  # fmt: skip


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxExchange]:
    with frozen_sandbox() as exchange:
        yield exchange


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxExchange) -> Path:
    """A data directory with days 0-2 published and days 0-1 snapshotted (copied per test)."""
    base = tmp_path_factory.mktemp("stored")
    config = project(base, sandbox)
    materialize(config, [0, 1, 2])
    advance(config, SNAP, now_s=SNAP)
    return base / "data"


def open_reader(
    tmp_path: Path, sandbox: SandboxExchange, stored: Path, path: ReadPath, on_violation: str
) -> tuple[SeamlessReader, list[Slow]]:
    shutil.copytree(stored, tmp_path / "data")
    sla = {**ROOMY, BUDGET_KEY[path.phase]: BUDGET_MS, **path.extra_sla}
    config = project(
        tmp_path,
        sandbox,
        backfill={"mode": "sync"},
        domains={path.domain: {"sla": {**sla, "on_violation": on_violation}}},
    )
    hot = Slow(open_hot(config), HANG_S, path.slow_hot)
    artifacts = Slow(open_artifacts(config), HANG_S, path.slow_artifacts)
    stores: dict[str, Any] = {"hot": hot, "artifacts": artifacts}
    return SeamlessReader.open(config, **stores), [hot, artifacts]


def fetch(reader: SeamlessReader, path: ReadPath) -> Any:
    context = ComputeContext("w1", path.domain, as_of=path.as_of, strategy=path.strategy)
    return reader.fetch(NODE_ID, *path.window, context)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("on_violation", ["FAIL_FAST", "PARTIAL_FILL"])
def test_a_breach_on_any_path_follows_on_violation(
    tmp_path: Path, sandbox: SandboxExchange, stored: Path, path: ReadPath, on_violation: str
) -> None:
    reader, faults = open_reader(tmp_path, sandbox, stored, path, on_violation)
    sandbox.configure(latency_ms=path.exchange_latency_ms)
    try:
        started = time.perf_counter()
        if on_violation == "FAIL_FAST":
            with pytest.raises(SeamlessSLAExceeded) as exceeded:
                fetch(reader, path)
            assert exceeded.value.phase == path.phase
        else:
            frame, meta = fetch(reader, path)  # never raises
            assert path.phase in meta.sla_exceeded
            assert meta.partial is path.partial
            if path.partial:
                assert f"{path.phase} budget of {BUDGET_MS} ms ran out" in (
                    meta.downgrade_reason or ""
                )
                assert len(frame) < meta.requested.bars(60) or meta.missing == ()
                if path.domain == "live":
                    assert meta.downgrade in ("PARTIAL_FILL", "HOLD")
        elapsed = time.perf_counter() - started
        assert elapsed <= (BUDGET_MS / 1000) + SLACK_S + path.exchange_latency_ms / 1000
        assert any(f.calls for f in faults) or path.exchange_latency_ms  # the fault was hit
    finally:
        sandbox.configure(latency_ms=0)
        for fault in faults:
            fault.release()
        reader.close()


@pytest.mark.parametrize("on_violation", ["FAIL_FAST", "PARTIAL_FILL"])
def test_missing_partitions_stay_an_error_when_the_advice_lookup_breaches(
    tmp_path: Path, sandbox: SandboxExchange, stored: Path, on_violation: str
) -> None:
    """A range the snapshot lacks is a hard failure either way; only the advice about what
    adds the partitions is lost to the budget."""
    path = ReadPath("advice", "backtest", (T0, T0 + 3 * DAY), "storage_wait", SNAP,
                    slow_artifacts=("latest_snapshot",))  # fmt: skip
    reader, faults = open_reader(tmp_path, sandbox, stored, path, on_violation)
    try:
        with pytest.raises(MissingPartitions) as missing:
            fetch(reader, path)
        assert missing.value.partition_keys == ["2024-01-03"]
        assert "the storage budget ran out before newer snapshots" in str(missing.value)
    finally:
        for fault in faults:
            fault.release()
        reader.close()
