"""The `seamless` program ends its process itself: exit code, flushed output, exit handlers,
and a still-running thread is waited for; its start-up heap is frozen."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seamless_assets.pipeline import _heap_frozen
from seamless_assets.process import RUN_GC_THRESHOLD, startup_heap

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_end_process_flushes_runs_exit_handlers_and_keeps_the_code() -> None:
    done = _python(
        """
        import atexit, logging, sys
        from seamless_assets.process import end_process
        atexit.register(lambda: print("handler ran", file=sys.stderr))
        print("line without newline at the end", end="")
        logging.basicConfig(stream=sys.stderr)
        logging.getLogger("x").warning("logged")
        end_process(3)
        """
    )
    assert done.returncode == 3
    assert done.stdout == "line without newline at the end"
    assert "handler ran" in done.stderr and "logged" in done.stderr


def test_end_process_waits_for_a_running_thread() -> None:
    done = _python(
        """
        import threading, time
        from seamless_assets.process import end_process
        def work():
            time.sleep(0.3)
            print("thread finished", flush=True)
        threading.Thread(target=work).start()
        end_process(0)
        """
    )
    assert done.returncode == 0
    assert done.stdout == "thread finished\n"


def test_the_program_ends_through_end_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "seamless_assets.cli", "--config", "seamless.yaml", "nodes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "ohlcv:" in done.stdout


def test_startup_heap_freezes_then_collects_with_the_run_threshold() -> None:
    before = gc.get_threshold()
    try:
        with startup_heap():
            assert not gc.isenabled()
            built = [[i] for i in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(built)
        assert gc.get_threshold() == RUN_GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_failing_startup_leaves_the_collector_as_it_was() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), startup_heap():
        raise RuntimeError("start-up failed")
    assert gc.isenabled()
    assert gc.get_threshold() == before


def test_a_runs_heap_freeze_ends_with_the_last_concurrent_run() -> None:
    """Runs overlap in a reader: the heap is unfrozen only when the last one ends, and a
    heap frozen before them (the program's start-up heap) stays frozen."""
    gc.unfreeze()
    try:
        first, second = _heap_frozen(), _heap_frozen()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert gc.get_freeze_count() > 0  # the second run is still going
        second.__exit__(None, None, None)
        assert gc.get_freeze_count() == 0

        gc.freeze()  # as `startup_heap` leaves it
        with _heap_frozen():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
