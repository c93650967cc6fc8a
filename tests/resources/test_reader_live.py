"""The live domain against a running sandbox clock: hot store + backfill + live edge within
max_lag, HOLD with the reason while the exchange is down, recovery by itself when it
returns, and an as_of that never moves back within a session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from resources.reader import ComputeContext
from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.errors import AsOfRegression, MissingPartitions

from .test_reader_support import DAY, NODE_ID, endpoint_requests, project, reader_for


@contextmanager
def running_sandbox(second: float) -> Iterator[SandboxExchange]:
    """A sandbox whose clock runs in real time, two days behind, now at `second` of a minute."""
    now = time.time()
    offset = -2 * DAY + (second - now % 60)
    with SandboxExchange(SandboxConfig(clock_offset_s=offset)) as sandbox:
        yield sandbox


def exchange_now(sandbox: SandboxExchange) -> float:
    return sandbox.state.clock.now_s()


def test_live_reads_stay_within_max_lag_as_the_exchange_clock_advances(tmp_path: Path) -> None:
    with running_sandbox(second=10.0) as sandbox:
        config = project(tmp_path, sandbox)
        context = ComputeContext("w1", "live", max_lag=90)  # strategy: SEAMLESS
        as_ofs = []
        with reader_for(config) as reader:
            for step in range(4):
                now = exchange_now(sandbox)
                frame, meta = reader.fetch(NODE_ID, now - 3 * 3600, now + 60, context)
                assert meta.downgrade is None and not meta.partial, meta.downgrade_reason
                assert meta.staleness_s is not None and 0 <= meta.staleness_s <= 90
                last_closed = int(exchange_now(sandbox)) // 60 * 60 - 60
                assert int(frame["ts"].max()) in (last_closed, last_closed - 60)
                assert meta.coverage_bounds is not None
                assert meta.as_of_s == meta.coverage_bounds[1]
                assert meta.source == "hot_store+backfill"
                as_ofs.append(meta.as_of_s)
                sandbox.set_clock(advance_s=600 + 7 * step)  # ten minutes and a bit later

            # The past of this session is still readable, but as_of never moves back.
            old, meta = reader.fetch(NODE_ID, now - 6 * 3600, now - 5 * 3600, context)
            assert len(old) == 60 and meta.as_of_s == as_ofs[-1]
            with pytest.raises(AsOfRegression, match="only moves forward"):
                reader.fetch(
                    NODE_ID, now - 3600, now, ComputeContext("w1", "live", as_of=as_ofs[0] - 60)
                )
            # Another world has its own session.
            _, other = reader.fetch(
                NODE_ID, now - 3600, now, ComputeContext("w2", "live", as_of=as_ofs[0] - 60)
            )
            assert other.as_of_s is not None
            assert reader.metrics()["as_of_advancement_events"] == 3
    assert as_ofs == sorted(as_ofs) and len(set(as_ofs)) == 4
    assert as_ofs[-1] - as_ofs[0] >= 30 * 60


def test_live_holds_while_the_exchange_is_down_and_recovers_by_itself(tmp_path: Path) -> None:
    # 57 s into a minute: the newest closed bar closed 57 s ago, so max_lag 60 holds until
    # the next bar closes unseen.
    with running_sandbox(second=57.0) as sandbox:
        config = project(tmp_path, sandbox)
        context = ComputeContext("w1", "live", max_lag=60)
        with reader_for(config) as reader:
            now = exchange_now(sandbox)
            window = (now - 3600, now + 600)
            _, fresh = reader.fetch(NODE_ID, *window, context)
            assert fresh.downgrade is None, fresh.downgrade_reason
            assert fresh.coverage_bounds is not None
            data_end = fresh.coverage_bounds[1]

            sandbox.configure(down=True)
            while exchange_now(sandbox) < data_end + 61.5:  # the next bar closes, unseen
                time.sleep(0.1)
            frame, held = reader.fetch(NODE_ID, *window, context)
            assert held.downgrade == "HOLD"
            reason = held.downgrade_reason or ""
            assert "max_lag 60 s" in reason and "exchange unavailable" in reason
            assert held.staleness_s is not None and held.staleness_s > 60
            assert held.as_of_s == fresh.as_of_s  # nothing newer, nothing older
            assert int(frame["ts"].max()) + 60 == data_end  # what it has, flagged
            assert reader.metrics()["domain_gate_holds"] == 1

            sandbox.configure(down=False)
            _, recovered = reader.fetch(NODE_ID, *window, context)
            assert recovered.downgrade is None, recovered.downgrade_reason
            assert recovered.staleness_s is not None and recovered.staleness_s <= 60
            assert recovered.as_of_s is not None and fresh.as_of_s is not None
            assert recovered.as_of_s > fresh.as_of_s


def test_fail_fast_and_partial_fill_never_fetch(tmp_path: Path) -> None:
    with running_sandbox(second=30.0) as sandbox:
        config = project(tmp_path, sandbox)
        now = exchange_now(sandbox)
        with reader_for(config) as reader:
            with pytest.raises(MissingPartitions) as missing:
                reader.fetch(
                    NODE_ID, now - 3600, now, ComputeContext("w1", "live", strategy="FAIL_FAST")
                )
            assert missing.value.partition_keys  # the day(s) of the window
            frame, meta = reader.fetch(
                NODE_ID, now - 3600, now, ComputeContext("w1", "live", strategy="PARTIAL_FILL")
            )
        assert endpoint_requests(sandbox, "klines") == 0
        assert len(frame) == 0 and meta.partial and meta.downgrade == "HOLD"
        assert "missing closed bars" in (meta.downgrade_reason or "")
