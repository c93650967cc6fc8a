"""How the `seamless` program spends its process: garbage collection and exit.

A one-shot command builds a large, long-lived heap (Dagster, pandas, pyarrow, ccxt, the
definitions, the instance) and then runs one job. CPython's cyclic collector would walk
that heap again and again (a year's backfill spent ~2 s in collections, most of them full
ones over objects that live until exit), and at exit the interpreter tears every object
down one by one (~1 s) for memory the operating system takes back at once.

Only the program itself uses these (`cli.main` without argv): a library caller or a test
keeps Python's defaults.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

# Collect the young generation every 10 000 net allocations instead of 700: a run's
# short-lived containers (exchange pages, rows, events) die young either way, and the
# full collections that walk the whole heap become rare.
RUN_GC_THRESHOLD = (10_000, 10, 10)


@contextmanager
def startup_heap() -> Iterator[None]:
    """No collection while the block builds the program's long-lived objects; after it,
    they are moved out of the collector's sight (`gc.freeze`) and the run collects with
    `RUN_GC_THRESHOLD`. A failing start-up restores the collector and changes nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    except BaseException:
        if was_enabled:
            gc.enable()
        raise
    gc.freeze()
    gc.set_threshold(*RUN_GC_THRESHOLD)
    if was_enabled:
        gc.enable()


def end_process(code: int) -> NoReturn:
    """Exit with `code` without the interpreter's teardown: the exit handlers run (log
    handlers flushed, file locks released, executors joined) and the standard streams
    are flushed, then the process ends. While another non-daemon thread still runs, the
    normal exit waits for it instead."""
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stream: let Python report it
        sys.exit(code)
    os._exit(code)
