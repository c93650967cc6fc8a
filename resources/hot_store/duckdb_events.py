"""Event series in the embedded hot store: the bar store's DuckDB file, its own tables.

Events live in the same file as the bars (`DuckDBHotStore`) so that one file, one lock
and one backup hold the node's whole hot state. The store drives the file through a
`DuckDBHotStore` of the same path: its connection per operation with lock backoff, its
sessions and its `nodes` table (node ids as small integer keys) are the bar store's own,
so either store may create the file first. Each kind gets a table whose primary key is
`(node_key, *kind.key)`: funding replaces on conflict (`ON CONFLICT DO UPDATE`), trades
keep the first version (`ON CONFLICT DO NOTHING`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from seamless_assets.core.frame import Range
from seamless_assets.event_nodes import EVENT_KINDS, EventKind

from .duckdb import DuckDBHotStore
from .event_tables import (
    ANSWERED_TABLE,
    EVENT_TABLES,
    check_windows,
    clip_answered,
    event_kind,
    events_frame,
    merge_answered,
    validate_event_frame,
    window_ms,
)

_SQL_TYPES = {"int64": "BIGINT", "float64": "DOUBLE", "int8": "TINYINT"}


def _table_sql(spec: EventKind) -> str:
    columns = ", ".join(f"{c} {_SQL_TYPES[dtype]} NOT NULL" for c, dtype in spec.dtypes.items())
    return (
        f"CREATE TABLE IF NOT EXISTS {EVENT_TABLES[spec.name]} (node_key INTEGER NOT NULL, "
        f"{columns}, PRIMARY KEY (node_key, {', '.join(spec.key)}))"
    )


_SCHEMA = (
    *(_table_sql(spec) for spec in EVENT_KINDS.values()),
    f"""CREATE TABLE IF NOT EXISTS {ANSWERED_TABLE} (
        kind VARCHAR NOT NULL,
        node_key INTEGER NOT NULL,
        start_s BIGINT NOT NULL,
        end_s BIGINT NOT NULL,
        PRIMARY KEY (kind, node_key, start_s, end_s),
        CHECK (start_s < end_s)
    )""",
)


class DuckDBEventStore:
    """`EventStore` on the bar store's DuckDB file (tables `funding_events`,
    `trade_events`, `event_answered`; node keys in the bar store's `nodes`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout_s: float = 30.0,
        max_backoff_s: float = 0.5,
    ) -> None:
        self._file = DuckDBHotStore(
            path, lock_timeout_s=lock_timeout_s, max_backoff_s=max_backoff_s
        )
        self.path = self._file.path
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"DuckDBEventStore({str(self.path)!r})"

    def __enter__(self) -> DuckDBEventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The bar store's connection (lock backoff, process lock, session, errors as
        `StoreError`), with the event tables created on first use."""
        with self._file._connection() as con:
            if not self._schema_ready:
                for statement in _SCHEMA:
                    con.execute(statement)
                self._schema_ready = True
            yield con

    def _node_key(
        self, con: duckdb.DuckDBPyConnection, node_id: str, *, create: bool
    ) -> int | None:
        return self._file._node_key(con, node_id, create=create)

    @contextmanager
    def session(self) -> Iterator[None]:
        """One connection for this thread's operations inside (see `DuckDBHotStore.session`)."""
        with self._file.session():
            yield

    # -- events ------------------------------------------------------------------------

    def upsert_events(self, kind: str, node_id: str, frame: pd.DataFrame) -> int:
        spec = event_kind(kind)
        validate_event_frame(spec, frame)
        if frame.empty:
            return 0
        table, columns = EVENT_TABLES[kind], ", ".join(spec.columns)
        (key,) = spec.key  # every kind has a one-column key (ts, id)
        # Contiguous Arrow buffers: DuckDB scans them natively, NaN stays a value (not NULL).
        incoming = pa.table(
            {c: pa.array(np.ascontiguousarray(frame[c].to_numpy())) for c in spec.columns}
        )
        with self._connection() as con:
            con.register("incoming_events", incoming)
            try:
                con.begin()
                node_key = self._node_key(con, node_id, create=True)
                # New rows (a backfill's usual case) are a plain insert: the frame's keys are
                # unique, so nothing can conflict when none of the key range is stored yet.
                stored = con.execute(
                    f"SELECT 1 FROM {table} WHERE node_key = ? AND {key} >= ? AND {key} <= ? "
                    "LIMIT 1",
                    [node_key, int(frame[key].min()), int(frame[key].max())],
                ).fetchall()
                if not stored:
                    conflict = ""
                elif spec.name == "trades":  # a trade id's first stored version wins
                    conflict = " ON CONFLICT DO NOTHING"
                else:  # a restated funding event replaces the stored one
                    updates = ", ".join(
                        f"{c} = excluded.{c}" for c in spec.columns if c not in spec.key
                    )
                    conflict = f" ON CONFLICT DO UPDATE SET {updates}"
                (row,) = con.execute(
                    f"INSERT INTO {table} (node_key, {columns}) "
                    f"SELECT ?, {columns} FROM incoming_events{conflict}",
                    [node_key],
                ).fetchall()
                con.commit()
            finally:
                con.unregister("incoming_events")
        return int(row[0])  # rows inserted or updated; skipped conflicts not counted

    def read_events(self, kind: str, node_id: str, window: Range) -> pd.DataFrame:
        spec = event_kind(kind)
        start_ms, end_ms = window_ms(window)
        with self._connection() as con:
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None or start_ms >= end_ms:
                return spec.empty()
            table = con.sql(
                f"SELECT {', '.join(spec.columns)} FROM {EVENT_TABLES[kind]} "
                f"WHERE node_key = ? AND ts >= ? AND ts < ? ORDER BY {', '.join(spec.order)}",
                params=[node_key, start_ms, end_ms],
            ).to_arrow_table()
        return events_frame(spec, {c: table.column(c).to_numpy() for c in spec.columns})

    def event_bounds(self, kind: str, node_id: str) -> tuple[int, int] | None:
        event_kind(kind)
        with self._connection() as con:
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None:
                return None
            (row,) = con.execute(
                f"SELECT min(ts), max(ts) FROM {EVENT_TABLES[kind]} WHERE node_key = ?",
                [node_key],
            ).fetchall()  # not fetchone: a result left unfinished blocks a session's next
        if row[0] is None:
            return None
        return int(row[0]), int(row[1])

    # -- answered windows --------------------------------------------------------------

    @staticmethod
    def _answered(con: duckdb.DuckDBPyConnection, kind: str, node_key: int) -> list[Range]:
        rows = con.execute(
            f"SELECT start_s, end_s FROM {ANSWERED_TABLE} WHERE kind = ? AND node_key = ?",
            [kind, node_key],
        ).fetchall()
        return sorted(Range(int(s), int(e)) for s, e in rows)

    def record_answered(self, kind: str, node_id: str, windows: Sequence[Range]) -> None:
        event_kind(kind)
        added = check_windows(windows)
        if not added:
            return
        with self._connection() as con:
            con.begin()
            node_key = self._node_key(con, node_id, create=True)
            assert node_key is not None
            existing = set(self._answered(con, kind, node_key))
            merged = set(merge_answered(existing, added))
            if gone := sorted(existing - merged):
                con.executemany(
                    f"DELETE FROM {ANSWERED_TABLE} "
                    "WHERE kind = ? AND node_key = ? AND start_s = ? AND end_s = ?",
                    [[kind, node_key, w.start, w.end] for w in gone],
                )
            if new := sorted(merged - existing):
                con.executemany(
                    f"INSERT INTO {ANSWERED_TABLE} (kind, node_key, start_s, end_s) "
                    "VALUES (?, ?, ?, ?)",
                    [[kind, node_key, w.start, w.end] for w in new],
                )
            con.commit()

    def answered(self, kind: str, node_id: str, window: Range | None = None) -> list[Range]:
        event_kind(kind)
        with self._connection() as con:
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None:
                return []
            stored = self._answered(con, kind, node_key)
        return clip_answered(stored, window)

    # -- housekeeping ------------------------------------------------------------------

    def close(self) -> None:
        self._file.close()
