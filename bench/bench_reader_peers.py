"""The backtest-read rows of bench/bench_reader.py: seeded random windows, the seamless
reader warm and in a fresh process, pyarrow over the same segments, ArcticDB (LMDB).

Each function here runs in its own child process (`python bench/bench_reader_peers.py
MODE ARGS...`, one JSON line on stdout); ArcticDB's child runs under another python (the
one with arcticdb installed), so it only uses pandas and arcticdb.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NODE = "ohlcv:binance:BTC/USDT:1m"
DAY = 86_400
T0 = 1_672_531_200  # 2023-01-01T00:00:00Z
DAYS = 365


def windows(seed: int, reads: int) -> dict[str, list[list[int]]]:
    """`reads` year-span windows (the year less up to a day at each end) and as many
    30-day windows, each different, minute-aligned, inside the year."""
    rng = random.Random(seed)
    end = T0 + DAYS * DAY
    year = [[T0 + rng.randrange(1440) * 60, end - rng.randrange(1440) * 60] for _ in range(reads)]
    starts = [T0 + rng.randrange((DAYS - 30) * 1440) * 60 for _ in range(reads)]
    return {"year": year, "d30": [[s, s + 30 * DAY] for s in starts]}


def seamless_warm(config: str, as_of: int, windows_json: str) -> dict[str, Any]:
    """Median ms of the windows read through one warm reader (result cache on; it must
    never hit: every window differs)."""
    sys.path.insert(0, str(ROOT))
    from resources.reader import ComputeContext, SeamlessReader

    spans = json.loads(windows_json)
    ctx = ComputeContext("bench", "backtest", as_of=as_of)
    out: dict[str, Any] = {}
    with SeamlessReader.from_config(config) as reader:
        reader.fetch(NODE, T0, T0 + DAY, ctx)  # the process and the cache files are warm
        for name, spans_of in spans.items():
            ms = []
            for start, end in spans_of:
                started = time.perf_counter()
                frame, meta = reader.fetch(NODE, start, end, ctx)
                ms.append((time.perf_counter() - started) * 1000)
                assert not meta.cache_hit and not meta.partial and len(frame) == (end - start) // 60
            out[f"{name}_ms"] = statistics.median(ms)
        out["segment_cache"] = meta.segment_cache
    return out


def seamless_fresh(config: str, as_of: int) -> dict[str, Any]:
    """The first read of the year in this (fresh) process; imports and the reader's open
    timed apart."""
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import resources.read_domains  # noqa: F401 - the read layers (pandas, pyarrow, ccxt, ...)
    from resources.reader import ComputeContext, SeamlessReader

    imported = time.perf_counter()
    reader = SeamlessReader.from_config(config)
    opened = time.perf_counter()
    ctx = ComputeContext("bench", "backtest", as_of=as_of)
    frame, meta = reader.fetch(NODE, T0, T0 + DAYS * DAY, ctx)
    read = time.perf_counter()
    reader.close()
    assert len(frame) == DAYS * 1440 and not meta.partial
    return {
        "import_ms": (imported - started) * 1000,
        "open_ms": (opened - imported) * 1000,
        "read_ms": (read - opened) * 1000,
        "segment_cache": meta.segment_cache,
    }


def pyarrow_fresh(artifacts: str) -> dict[str, Any]:
    """pyarrow reading the year's Parquet segments (the snapshot's 365 files) to pandas."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(Path(artifacts).rglob("data.parquet"))
    assert len(files) == DAYS, len(files)
    pq.ParquetFile(files[0]).read().to_pandas()  # lazy imports and first-use setup
    started = time.perf_counter()
    frame = pa.concat_tables([pq.ParquetFile(f).read() for f in files]).to_pandas()
    elapsed = (time.perf_counter() - started) * 1000
    assert len(frame) == DAYS * 1440
    return {"read_ms": elapsed}


def arcticdb(mode: str, store: str, arg: str) -> dict[str, Any]:
    """ArcticDB over LMDB at `store`: `write` the bars of Parquet file `arg`; `warm`: the
    windows `arg` (JSON) read warm; `fresh`: the year's first read in this process."""
    started = time.perf_counter()
    import arcticdb as adb
    import pandas as pd

    imported = time.perf_counter()
    library = adb.Arctic(f"lmdb://{store}").get_library("bench", create_if_missing=True)

    def read(start: int, end: int) -> pd.DataFrame:
        first, last = pd.Timestamp(start, unit="s"), pd.Timestamp(end - 60, unit="s")
        return library.read("BTCUSDT_1m", date_range=(first, last)).data

    if mode == "write":
        frame = pd.read_parquet(arg)
        frame.index = pd.to_datetime(frame["ts"], unit="s")
        library.write("BTCUSDT_1m", frame)
        return {"rows": len(frame)}
    if mode == "fresh":
        opened = time.perf_counter()
        frame = read(T0, T0 + DAYS * DAY)
        assert len(frame) == DAYS * 1440
        return {
            "import_ms": (imported - started) * 1000,
            "read_ms": (time.perf_counter() - opened) * 1000,
        }
    out: dict[str, Any] = {}
    read(T0, T0 + DAY)
    for name, spans in json.loads(arg).items():
        ms = []
        for start, end in spans:
            begun = time.perf_counter()
            frame = read(start, end)
            ms.append((time.perf_counter() - begun) * 1000)
            assert len(frame) == (end - start) // 60
        out[f"{name}_ms"] = statistics.median(ms)
    return out


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "seamless_warm":
        result = seamless_warm(args[0], int(args[1]), args[2])
    elif mode == "seamless_fresh":
        result = seamless_fresh(args[0], int(args[1]))
    elif mode == "pyarrow_fresh":
        result = pyarrow_fresh(args[0])
    else:  # arcticdb_write | arcticdb_warm | arcticdb_fresh
        result = arcticdb(mode.removeprefix("arcticdb_"), args[0], args[1])
    print(json.dumps(result))
