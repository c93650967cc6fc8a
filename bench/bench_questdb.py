"""Benchmark: QuestDB hot store ingest and read, next to the raw client and DuckDB.

    bash scripts/services.sh start questdb
    uv run python bench/bench_questdb.py [--bars 5000000] [--repeat 3]

Measured in the same run, alternating: `QuestDBHotStore.upsert` (ILP/HTTP + wait for WAL
apply) against the raw `questdb` client sending the same frame to a table of the same
schema (also waited for); reading one year of 1m for one node over PG wire
(`QuestDBHotStore.read_range`: binary results through psycopg 3) against the former read
(one `concat()` text cell per bar, parsed by Arrow's CSV reader) and
`DuckDBHotStore.read_range`. Prints JSON with medians.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from questdb import Sender

from resources.hot_store.duckdb import DuckDBHotStore
from resources.hot_store.questdb import ILP_CHUNK_ROWS, QuestDBHotStore, _us, node_key
from seamless_assets.core.frame import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    TS,
    VALUE_COLUMNS,
    Range,
    frame_from_arrays,
)

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


def text_read(store: QuestDBHotStore, window: Range) -> pd.DataFrame:
    """The former read path (commit 6e07a5a): one text cell per bar, Arrow CSV parse."""
    with store._cursor() as cur:
        cur.execute(
            "SELECT concat(cast(ts AS LONG) / 1000000, ',', open, ',', high, ',', low, ',', "
            f"close, ',', volume) FROM {store.bars_table} "
            "WHERE node_id = %s AND ts >= %s AND ts < %s",
            (node_key(NODE), _us(window.start), _us(window.end)),
        )
        text = "\n".join(row[0] for row in cur.fetchall()).encode()
    types = {TS: pa.int64(), **{c: pa.float64() for c in VALUE_COLUMNS}}
    table = pacsv.read_csv(
        io.BytesIO(text),
        read_options=pacsv.ReadOptions(column_names=list(CANONICAL_COLUMNS)),
        convert_options=pacsv.ConvertOptions(column_types=types),
    )
    return pd.DataFrame(
        {c: table.column(c).to_numpy().astype(CANONICAL_DTYPES[c]) for c in CANONICAL_COLUMNS}
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = bars(args.bars)
    year = frame.iloc[:YEAR].reset_index(drop=True)

    ours_s, raw_s, pg_ms, text_ms, duck_ms = [], [], [], [], []
    window = Range(T0, T0 + YEAR * 60)
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
            for _ in range(3):  # alternating, so load on this shared machine hits all three
                t = time.perf_counter()
                got = ours.read_range(NODE, window)
                pg_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                former = text_read(ours, window)
                text_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                duck.read_range(NODE, window)
                duck_ms.append((time.perf_counter() - t) * 1000)
            assert len(got) == YEAR
            pd.testing.assert_frame_equal(got, year, check_exact=True)
            pd.testing.assert_frame_equal(former, year, check_exact=True)
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
                "read_year_pg_wire_runs_ms": [round(x) for x in pg_ms],
                "read_year_former_text_ms": round(statistics.median(text_ms), 1),
                "read_vs_former_ratio": round(
                    statistics.median(pg_ms) / statistics.median(text_ms), 3
                ),
                "read_year_duckdb_ms": round(statistics.median(duck_ms), 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
