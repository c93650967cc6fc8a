"""Benchmark: QuestDB hot store ingest and read, next to the raw client and DuckDB.

    bash scripts/services.sh start questdb
    uv run python bench/bench_questdb.py [--bars 5000000] [--repeat 3]

Measured in the same run, alternating: `QuestDBHotStore.upsert` (ILP/HTTP + wait for WAL
apply) against the raw `questdb` client sending the same frame to a table of the same
schema (also waited for); reading one year of 1m for one node over PG wire against
`DuckDBHotStore.read_range`. Prints JSON with medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from questdb.ingress import Sender

from resources.hot_store.duckdb import DuckDBHotStore
from resources.hot_store.questdb import ILP_CHUNK_ROWS, QuestDBHotStore, node_key
from seamless_assets.core.frame import VALUE_COLUMNS, Range, frame_from_arrays

T0 = 1_672_531_200  # 2023-01-01
YEAR = 525_600
NODE = "ohlcv:binance:BTC/USDT:1m"


def bars(count: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    close = 100 + rng.random(count).cumsum()
    values = {
        "open": close - 0.5,
        "high": close + 1,
        "low": close - 1,
        "close": close,
        "volume": rng.random(count),
    }
    return frame_from_arrays(T0 + np.arange(count) * 60, {c: values[c] for c in VALUE_COLUMNS})


def raw_ingest(store: QuestDBHotStore, frame: pd.DataFrame, table: str) -> None:
    """What a hand-written ingest does: the same frame, straight through the client."""
    rows = pd.DataFrame(
        {
            "node_id": pd.Categorical.from_codes(np.zeros(len(frame), np.int8), [node_key(NODE)]),
            **{c: frame[c].to_numpy() for c in VALUE_COLUMNS},
            "ts": frame["ts"].to_numpy().astype("datetime64[s]").astype("datetime64[ns]"),
        }
    )
    conf = store.ilp_conf + "auto_flush=off;request_timeout=120000;"
    with Sender.from_conf(conf) as sender:
        for first in range(0, len(rows), ILP_CHUNK_ROWS):  # the server caps one request
            sender.dataframe(
                rows.iloc[first : first + ILP_CHUNK_ROWS],
                table_name=table,
                symbols=["node_id"],
                at="ts",
            )
            sender.flush()
    store._wait_applied(table)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = bars(args.bars)
    year = frame.iloc[:YEAR].reset_index(drop=True)

    ours_s, raw_s, pg_ms, duck_ms = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        duck = DuckDBHotStore(Path(tmp) / "hot.duckdb")
        duck.upsert(NODE, year)
        for _ in range(args.repeat):
            prefix = f"b{uuid.uuid4().hex[:8]}_"
            ours = QuestDBHotStore(table_prefix=prefix)
            raw = QuestDBHotStore(table_prefix=prefix + "raw_")
            with raw._cursor():  # same schema, created up front for the raw client too
                pass
            t = time.perf_counter()
            raw_ingest(raw, frame, raw.bars_table)
            raw_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours.upsert(NODE, frame)
            ours_s.append(time.perf_counter() - t)
            for _ in range(3):
                t = time.perf_counter()
                got = ours.read_range(NODE, Range(T0, T0 + YEAR * 60))
                pg_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                duck.read_range(NODE, Range(T0, T0 + YEAR * 60))
                duck_ms.append((time.perf_counter() - t) * 1000)
            assert len(got) == YEAR
            ours.drop_tables()
            raw.drop_tables()
    ours_rate = args.bars / statistics.median(ours_s)
    raw_rate = args.bars / statistics.median(raw_s)
    print(
        json.dumps(
            {
                "bars": args.bars,
                "runs": args.repeat,
                "questdb_store_ingest_bars_per_s": round(ours_rate),
                "raw_client_ingest_bars_per_s": round(raw_rate),
                "store_vs_raw_ratio": round(ours_rate / raw_rate, 3),
                "read_year_pg_wire_ms": round(statistics.median(pg_ms), 1),
                "read_year_duckdb_ms": round(statistics.median(duck_ms), 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
