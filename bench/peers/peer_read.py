"""Peer side of the read rows, run by a peer's own Python (bench/.peers/<env>/bin/python).

    peer_read.py arcticdb-write  LMDB_DIR YEAR.parquet
    peer_read.py warm  TOOL SOURCE WINDOWS.json     TOOL: arcticdb | pyarrow | freqtrade
    peer_read.py fresh TOOL SOURCE START END

SOURCE is the LMDB directory (arcticdb), a JSON list of the artifact store's Parquet
segment files (pyarrow), or freqtrade's data directory (freqtrade). Windows are
`[start, end)` in epoch seconds; every tool returns a pandas DataFrame of that window.
Only the standard library is imported at module level, so `fresh` can time imports.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYMBOL = "BTC_USDT_1m"


def _arcticdb(source: str) -> Callable[[int, int], Any]:
    import arcticdb
    import pandas as pd

    lib = arcticdb.Arctic(f"lmdb://{source}").get_library("bench")

    def read(start: int, end: int) -> Any:
        # date_range is inclusive at both ends: stop one second before `end`
        span = (pd.Timestamp(start, unit="s"), pd.Timestamp(end - 1, unit="s"))
        return lib.read(SYMBOL, date_range=span).data

    return read


def _pyarrow(source: str) -> Callable[[int, int], Any]:
    import pyarrow.dataset as ds

    dataset = ds.dataset(json.loads(Path(source).read_text()), format="parquet")

    def read(start: int, end: int) -> Any:
        where = (ds.field("ts") >= start) & (ds.field("ts") < end)
        return dataset.to_table(filter=where).to_pandas()

    return read


def _freqtrade(source: str) -> Callable[[int, int], Any]:
    from freqtrade.configuration import TimeRange
    from freqtrade.data.history import load_pair_history

    def read(start: int, end: int) -> Any:
        timerange = TimeRange("date", "date", start, end)
        return load_pair_history(
            "BTC/USDT", "1m", Path(source), timerange=timerange, data_format="feather"
        )

    return read


TOOLS = {"arcticdb": _arcticdb, "pyarrow": _pyarrow, "freqtrade": _freqtrade}


def arcticdb_write(lmdb_dir: str, parquet: str) -> dict:
    import arcticdb
    import pandas as pd

    frame = pd.read_parquet(parquet)
    frame.index = pd.to_datetime(frame.pop("ts"), unit="s")
    lib = arcticdb.Arctic(f"lmdb://{lmdb_dir}").get_library("bench", create_if_missing=True)
    lib.write(SYMBOL, frame)
    return {"rows": len(frame)}


def warm(tool: str, source: str, windows_path: str) -> dict:
    windows = json.loads(Path(windows_path).read_text())
    read = TOOLS[tool](source)
    read(*windows["warmup"])
    ms, rows = [], []
    for start, end in windows["reads"]:
        t = time.perf_counter()
        frame = read(start, end)
        ms.append((time.perf_counter() - t) * 1000)
        rows.append(len(frame))
    return {"ms": ms, "median_ms": statistics.median(ms), "rows": rows}


def fresh(tool: str, source: str, start: int, end: int) -> dict:
    t0 = time.perf_counter()
    if tool == "arcticdb":
        import arcticdb  # noqa: F401
        import pandas
    elif tool == "pyarrow":
        import pandas  # noqa: F401
        import pyarrow.dataset  # noqa: F401
    else:
        import freqtrade.data.history  # noqa: F401
    t1 = time.perf_counter()
    frame = TOOLS[tool](source)(start, end)
    t2 = time.perf_counter()
    return {"import_ms": (t1 - t0) * 1000, "read_ms": (t2 - t1) * 1000, "rows": len(frame)}


def main(argv: list[str]) -> int:
    mode, *rest = argv
    if mode == "arcticdb-write":
        out = arcticdb_write(rest[0], rest[1])
    elif mode == "warm":
        out = warm(rest[0], rest[1], rest[2])
    elif mode == "fresh":
        out = fresh(rest[0], rest[1], int(rest[2]), int(rest[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}: arcticdb-write | warm | fresh")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
