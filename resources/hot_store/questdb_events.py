"""Event series in the production hot store: QuestDB.

The store reuses `QuestDBHotStore`'s machinery (PG-wire connection and its errors, the
wait for WAL apply, the `node_key` encoding) through a private subclass that creates the
event tables instead of the bar tables, so an event store never creates bar tables with
other settings (TTL) than the bar store's.

Tables (never ILP auto-create): WAL, designated timestamp `ts` (the row's epoch ms as
microseconds, so `ts / 1000` gives the ms back exactly). `funding_events` has
`DEDUP UPSERT KEYS(ts, node_id)`: a restated funding event replaces the stored one.
Trades keep the *first* stored version of an id, which dedup cannot express (its keys
must include the designated timestamp, so a version of the id with another `ts` would
be kept beside the first): before writing, the store reads which of the batch's ids are
stored already (by id, whatever their time) and sends only the others. Their dedup keys
`(ts, node_id, id)` still make a resent batch (an ILP retry) harmless. Two processes
writing the same new id at once can both pass the check; conformance keeps one version
per fetch, so that takes two fetches of one trade racing.

Funding events are a few a day, so their table is partitioned by month (a day partition
per handful of rows would cost a directory each); trades by day. No TTL: the answered
windows would go on claiming rows a TTL had dropped.

QuestDB has no DELETE, so the answered windows are an append-only log of versions, like
the bar store's gap ledger: a change writes the node's whole merged list under
`version + 1`, and readers merge the rows of the newest version (two writers racing to
one version both add windows, and their union is what both answered).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from questdb import QuestDBError, Sender

from seamless_assets.core.frame import TS, Range
from seamless_assets.errors import StoreError
from seamless_assets.event_nodes import EVENT_KINDS, EventKind

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
from .questdb import (
    _BATCH_ROWS,
    _STREAM_CHUNK_ROWS,
    ILP_CHUNK_ROWS,
    START_HINT,
    QuestDBHotStore,
    node_key,
)

_SQL_TYPES = {"int64": "LONG", "float64": "DOUBLE", "int8": "BYTE"}
_PARTITION_BY = {"funding": "MONTH", "trades": "DAY"}
US_PER_MS = 1000


class _EventTables(QuestDBHotStore):
    """`QuestDBHotStore`'s connection machinery, creating the event tables (not the bar
    tables) on the first connection."""

    def __init__(
        self, dsn: str, ilp_conf: str, *, table_prefix: str, apply_timeout_s: float
    ) -> None:
        super().__init__(dsn, ilp_conf, table_prefix=table_prefix, apply_timeout_s=apply_timeout_s)
        self.tables = {kind: f"{table_prefix}{name}" for kind, name in EVENT_TABLES.items()}
        self.answered_table = f"{table_prefix}{ANSWERED_TABLE}"

    def _create_tables(self, conn: Any) -> None:
        with conn.cursor() as cur:
            for spec in EVENT_KINDS.values():
                columns = ", ".join(
                    f"{c} {_SQL_TYPES[dtype]}" for c, dtype in spec.dtypes.items() if c != TS
                )
                dedup = ", ".join([TS, "node_id", *(k for k in spec.key if k != TS)])
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.tables[spec.name]} ("
                    f"node_id SYMBOL CAPACITY 4096 CACHE, {columns}, {TS} TIMESTAMP"
                    f") TIMESTAMP({TS}) PARTITION BY {_PARTITION_BY[spec.name]} WAL "
                    f"DEDUP UPSERT KEYS({dedup})"
                )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.answered_table} ("
                "kind SYMBOL, node_id SYMBOL CAPACITY 4096 CACHE, version LONG, "
                "start_s LONG, end_s LONG, written_at TIMESTAMP"
                ") TIMESTAMP(written_at) PARTITION BY YEAR WAL"
            )
        self._schema_ready = True

    def drop_tables(self) -> None:
        with self._cursor() as cur:
            for table in [*self.tables.values(), self.answered_table]:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
        self._schema_ready = False


class QuestDBEventStore:
    """`EventStore` on QuestDB: ILP/HTTP writes, PG-wire reads (binary results)."""

    def __init__(
        self,
        dsn: str = "postgresql://admin:quest@127.0.0.1:8812/qdb",
        ilp_conf: str = "http::addr=127.0.0.1:9000;",
        *,
        table_prefix: str = "",
        apply_timeout_s: float = 30.0,
    ) -> None:
        self._db = _EventTables(
            dsn, ilp_conf, table_prefix=table_prefix, apply_timeout_s=apply_timeout_s
        )
        self.tables = self._db.tables
        self.answered_table = self._db.answered_table

    def __repr__(self) -> str:
        return f"QuestDBEventStore({self._db._pg_address()}, tables={sorted(self.tables.values())})"

    @contextmanager
    def session(self) -> Iterator[None]:
        """The store keeps one connection across operations already: nothing to hold."""
        yield

    # -- events ------------------------------------------------------------------------

    def upsert_events(self, kind: str, node_id: str, frame: pd.DataFrame) -> int:
        spec = event_kind(kind)
        key = node_key(node_id)
        validate_event_frame(spec, frame)
        if frame.empty:
            return 0
        with self._db._lock:  # this process's check and write of trades are one step
            if spec.name == "trades":
                stored = self._stored_ids(key, frame["id"].to_numpy())
                if len(stored):
                    frame = frame[~np.isin(frame["id"].to_numpy(), stored)]
            if not frame.empty:
                self._send(spec, key, frame)
        return len(frame)

    def _stored_ids(self, key: str, ids: np.ndarray) -> np.ndarray:
        """The ids among `ids`' range already stored for the node, at any time."""
        with self._db._cursor(binary=True) as cur:
            cur.execute(
                f"SELECT id FROM {self.tables['trades']} "
                "WHERE node_id = %s AND id >= %s AND id <= %s",
                (key, int(ids.min()), int(ids.max())),
            )
            rows = cur.fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, count=len(rows))

    def _send(self, spec: EventKind, key: str, frame: pd.DataFrame) -> None:
        """Write rows over ILP/HTTP (the tables exist: never auto-create), then wait until
        QuestDB applied them (read-your-writes)."""
        table = self.tables[spec.name]
        with self._db._cursor():
            pass  # creates the tables before the first ILP write
        rows = pd.DataFrame(
            {
                "node_id": pd.Categorical.from_codes(
                    np.zeros(len(frame), np.int8), pd.Index([key])
                ),
                **{c: frame[c].to_numpy() for c in spec.columns if c != TS},
                TS: (frame[TS].to_numpy() * US_PER_MS).astype("datetime64[us]"),
            }
        )
        conf = self._db.ilp_conf + "auto_flush=off;request_timeout=60000;retry_timeout=10000;"
        try:
            with Sender.from_conf(conf) as sender:
                for first in range(0, len(rows), ILP_CHUNK_ROWS):
                    chunk = rows.iloc[first : first + ILP_CHUNK_ROWS]
                    sender.dataframe(chunk, table_name=table, symbols=["node_id"], at=TS)
                    sender.flush()
        except QuestDBError as exc:
            raise StoreError(
                f"QuestDB ILP write to {table} failed ({exc}); is QuestDB up at "
                f"{self._db._ilp_address()}? {START_HINT}"
            ) from exc
        self._db._wait_applied(table)

    def read_events(self, kind: str, node_id: str, window: Range) -> pd.DataFrame:
        spec = event_kind(kind)
        key = node_key(node_id)
        start_ms, end_ms = window_ms(window)
        if start_ms >= end_ms:
            return spec.empty()
        selected = ", ".join(
            f"cast({TS} AS LONG) / {US_PER_MS}" if c == TS else c for c in spec.columns
        )
        sql = (
            f"SELECT {selected} FROM {self.tables[kind]} "
            f"WHERE node_id = %s AND {TS} >= %s AND {TS} < %s"
        )
        params = (key, start_ms * US_PER_MS, end_ms * US_PER_MS)
        parts: dict[str, list[np.ndarray]] = {c: [] for c in spec.columns}
        with self._db._cursor(binary=True) as cur:
            # Binary results: each double's 8 bytes as stored (bit-exact incl. -0.0; NaN is
            # QuestDB's NULL, decoded as None, which numpy turns back into NaN). Ids may
            # exceed 2**53, so each column is decoded with its own dtype.
            if psycopg.capabilities.has_stream_chunked():
                rows = cur.stream(sql, params, size=_STREAM_CHUNK_ROWS)
            else:
                rows = iter(cur.execute(sql, params))
            while batch := list(itertools.islice(rows, _BATCH_ROWS)):
                columns = zip(*batch, strict=True)  # the batch's columns
                for (column, dtype), values in zip(spec.dtypes.items(), columns, strict=True):
                    parts[column].append(np.array(values, dtype=dtype))
        if not parts[TS]:
            return spec.empty()
        return events_frame(spec, {c: np.concatenate(p) for c, p in parts.items()})

    def event_bounds(self, kind: str, node_id: str) -> tuple[int, int] | None:
        event_kind(kind)
        key = node_key(node_id)
        with self._db._cursor() as cur:
            cur.execute(
                f"SELECT cast(min({TS}) AS LONG), cast(max({TS}) AS LONG) "
                f"FROM {self.tables[kind]} WHERE node_id = %s",
                (key,),
            )
            row = cur.fetchone()
        if row is None or row[0] is None:
            return None
        return int(row[0]) // US_PER_MS, int(row[1]) // US_PER_MS

    # -- answered windows --------------------------------------------------------------

    def _answered(self, kind: str, key: str) -> tuple[int, list[Range]]:
        """The newest version of the node's answered windows, merged."""
        with self._db._cursor() as cur:
            cur.execute(
                f"SELECT max(version) FROM {self.answered_table} WHERE kind = %s AND node_id = %s",
                (kind, key),
            )
            row = cur.fetchone()
            if row is None or row[0] is None:
                return 0, []
            version = int(row[0])
            cur.execute(
                f"SELECT start_s, end_s FROM {self.answered_table} "
                "WHERE kind = %s AND node_id = %s AND version = %s",
                (kind, key, version),
            )
            rows = cur.fetchall()
        return version, merge_answered(Range(int(s), int(e)) for s, e in rows)

    def record_answered(self, kind: str, node_id: str, windows: Sequence[Range]) -> None:
        event_kind(kind)
        key = node_key(node_id)
        added = check_windows(windows)
        if not added:
            return
        with self._db._lock:
            version, existing = self._answered(kind, key)
            merged = merge_answered(existing, added)
            if merged == existing:
                return
            with self._db._cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {self.answered_table} (kind, node_id, version, start_s, "
                    "end_s, written_at) VALUES (%s, %s, %s, %s, %s, now())",
                    [(kind, key, version + 1, w.start, w.end) for w in merged],
                )
            self._db._wait_applied(self.answered_table)

    def answered(self, kind: str, node_id: str, window: Range | None = None) -> list[Range]:
        event_kind(kind)
        return clip_answered(self._answered(kind, node_key(node_id))[1], window)

    # -- housekeeping ------------------------------------------------------------------

    def drop_tables(self) -> None:
        """Drop this store's event tables (tests and tear-down of throwaway prefixes)."""
        self._db.drop_tables()

    def close(self) -> None:
        self._db.close()
