"""The production hot store: QuestDB.

The store creates its own tables (never ILP auto-create): WAL tables with a designated
timestamp, partitioned by time, and `DEDUP UPSERT KEYS(ts, node_id)` so a rewrite of a bar
replaces it. Bars are written in bulk from pandas over ILP/HTTP with the `questdb` client;
reads, coverage (gaps-and-islands in SQL) and the gap ledger go over the PostgreSQL wire
protocol with psycopg 3 and parameterised SQL only; bar reads request binary results. A
write returns once QuestDB has applied its WAL transactions (read-your-writes), or fails
after a bounded wait.

The node column stores `node_key(node_id)`, a reversible encoding into `[A-Za-z0-9_]`
(`/` → `_2f`): QuestDB's string-literal escaping differs from PostgreSQL's (backslashes),
so keys that cannot contain quotes or backslashes keep parameterised SQL exact.

QuestDB has no DELETE, so the gap ledger is an append-only log of versions: every change
writes the node's whole new ledger under `version + 1` (an empty ledger is one marker
row), and readers take the newest version. Conformance events live in a WAL table with
`DEDUP UPSERT KEYS(ts, node_id, flag)`: an event is removed by upserting its count to 0,
and one replacement is one multi-row INSERT (one WAL transaction).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.numeric import Int8BinaryDumper, Int8Dumper
from questdb import QuestDBError, Sender

from seamless_assets.core.coverage import LedgerGap
from seamless_assets.core.flag_ledger import FlagEvent
from seamless_assets.core.frame import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    TS,
    VALUE_COLUMNS,
    Range,
    empty_frame,
)
from seamless_assets.errors import StoreError
from seamless_assets.nodes import asset_key_part, from_asset_key_part

from .base import (
    clip_gaps,
    events_to_store,
    islands_to_ranges,
    merge_gaps,
    subtract_window,
    validate_upsert_frame,
)

US = 1_000_000
_MAX_S = 253_402_300_799  # 9999-12-31T23:59:59Z, QuestDB's timestamp range


def _us(epoch_s: int) -> int:
    """Epoch seconds as QuestDB microseconds, clamped to the representable range."""
    return max(0, min(int(epoch_s), _MAX_S)) * US


_EMPTY_MARKER = ""  # reason of the row that stands for "no gaps" in a ledger version
_PREFIX = re.compile(r"^[a-z][a-z0-9_]*$|^$")
# ILP/HTTP requests are capped (100 MiB by default, ~165 bytes a bar): send in chunks.
ILP_CHUNK_ROWS = 250_000
# Bar reads: rows per libpq chunk, and rows decoded into numpy at a time.
_STREAM_CHUNK_ROWS = 10_000
_BATCH_ROWS = 2_000
START_HINT = "start it with `bash scripts/services.sh start questdb`"


class QuestDBHotStore:
    """`HotStore` on QuestDB: ILP/HTTP writes, PG-wire reads."""

    def __init__(
        self,
        dsn: str = "postgresql://admin:quest@127.0.0.1:8812/qdb",
        ilp_conf: str = "http::addr=127.0.0.1:9000;",
        *,
        table_prefix: str = "",
        ttl_days: int | None = None,
        apply_timeout_s: float = 30.0,
    ) -> None:
        if not _PREFIX.match(table_prefix):
            raise ValueError(f"table_prefix {table_prefix!r} must match [a-z][a-z0-9_]*")
        self.dsn = dsn
        self.ilp_conf = ilp_conf
        self.bars_table = f"{table_prefix}ohlcv"
        self.ledger_table = f"{table_prefix}gap_ledger"
        self.events_table = f"{table_prefix}flag_events"
        self.ttl_days = ttl_days
        self.apply_timeout_s = apply_timeout_s
        self._conn: Any = None
        self._lock = threading.RLock()
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"QuestDBHotStore({self._pg_address()}, table={self.bars_table!r})"

    def _pg_address(self) -> str:
        parsed = urlparse(self.dsn)
        return f"{parsed.hostname}:{parsed.port or 8812}"

    def _ilp_address(self) -> str:
        """Where ILP writes go, without the configuration string's credentials."""
        for part in self.ilp_conf.split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() in ("addr", "http::addr", "https::addr", "tcp::addr"):
                return f"{self.ilp_conf.split('::', 1)[0]}://{value.strip()}"
        return self.ilp_conf.split("::", 1)[0] + " (no addr= given)"

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> Any:
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=5, autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"QuestDB not reachable at {self._pg_address()} (PG wire) — {START_HINT}, or "
                f"point seamless.hot_store.questdb_dsn at your server ({str(exc).strip()})"
            ) from exc
        # Every int parameter is a LONG: psycopg would pick int2/int4 for small values, which
        # QuestDB does not compare with TIMESTAMP columns.
        conn.adapters.register_dumper(int, Int8Dumper)
        conn.adapters.register_dumper(int, Int8BinaryDumper)
        return conn

    @contextmanager
    def _cursor(self, *, binary: bool = False) -> Iterator[Any]:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            if not self._schema_ready:
                self._create_tables(self._conn)
            try:
                with self._conn.cursor(binary=binary) as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                self._conn = None  # reconnect next time
                raise StoreError(
                    f"QuestDB at {self._pg_address()} failed ({_one_line(exc)}); is QuestDB "
                    f"up at {self._pg_address()}? {START_HINT}"
                ) from exc
            except psycopg.Error as exc:
                raise StoreError(f"QuestDB query failed: {_one_line(exc)}") from exc

    def _create_tables(self, conn: Any) -> None:
        ttl = f" TTL {int(self.ttl_days)} DAYS" if self.ttl_days else ""
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.bars_table} ("
                "node_id SYMBOL CAPACITY 4096 CACHE, ts TIMESTAMP, "
                "open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE"
                f") TIMESTAMP(ts) PARTITION BY MONTH{ttl} WAL DEDUP UPSERT KEYS(ts, node_id)"
            )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.ledger_table} ("
                "node_id SYMBOL CAPACITY 4096 CACHE, version LONG, start_s LONG, end_s LONG, "
                "reason VARCHAR, written_at TIMESTAMP"
                ") TIMESTAMP(written_at) PARTITION BY YEAR WAL"
            )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.events_table} ("
                "node_id SYMBOL CAPACITY 4096 CACHE, flag SYMBOL, n LONG, ts TIMESTAMP"
                ") TIMESTAMP(ts) PARTITION BY YEAR WAL DEDUP UPSERT KEYS(ts, node_id, flag)"
            )
        self._schema_ready = True

    def _wait_applied(self, table: str) -> None:
        """Block until QuestDB applied every committed WAL transaction of `table`."""
        deadline = time.monotonic() + self.apply_timeout_s
        with self._cursor() as cur:
            while True:
                cur.execute(
                    "SELECT writerTxn, sequencerTxn, suspended FROM wal_tables() WHERE name = %s",
                    (table,),
                )
                row = cur.fetchone()
                if row is None or row[0] >= row[1]:
                    return
                if row[2]:
                    raise StoreError(
                        f"QuestDB suspended WAL apply for table {table}; see the server log, then "
                        f"`ALTER TABLE {table} RESUME WAL`"
                    )
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"QuestDB did not apply writes to {table} within {self.apply_timeout_s:g}s "
                        f"(writerTxn={row[0]}, sequencerTxn={row[1]}); the data is committed and "
                        "will become visible; retry the materialization"
                    )
                time.sleep(0.02)

    # -- bars --------------------------------------------------------------------------

    def upsert(self, node_id: str, frame: pd.DataFrame) -> int:
        key = node_key(node_id)
        validate_upsert_frame(frame)
        if frame.empty:
            return 0
        with self._cursor():
            pass  # tables exist before ILP writes (never auto-create)
        rows = pd.DataFrame(
            {
                "node_id": pd.Categorical.from_codes(
                    np.zeros(len(frame), np.int8), pd.Index([key])
                ),
                **{c: frame[c].to_numpy() for c in VALUE_COLUMNS},
                TS: frame[TS].to_numpy().astype("datetime64[s]").astype("datetime64[ns]"),
            }
        )
        conf = self.ilp_conf + "auto_flush=off;request_timeout=60000;retry_timeout=10000;"
        try:
            with Sender.from_conf(conf) as sender:
                for first in range(0, len(rows), ILP_CHUNK_ROWS):
                    chunk = rows.iloc[first : first + ILP_CHUNK_ROWS]
                    sender.dataframe(chunk, table_name=self.bars_table, symbols=["node_id"], at=TS)
                    sender.flush()
        except QuestDBError as exc:
            raise StoreError(
                f"QuestDB ILP write to {self.bars_table} failed ({exc}); is QuestDB up at "
                f"{self._ilp_address()}? {START_HINT}"
            ) from exc
        self._wait_applied(self.bars_table)
        return len(frame)

    def read_range(self, node_id: str, window: Range) -> pd.DataFrame:
        key = node_key(node_id)
        sql = (
            f"SELECT cast(ts AS LONG) / 1000000, {', '.join(VALUE_COLUMNS)} "
            f"FROM {self.bars_table} WHERE node_id = %s AND ts >= %s AND ts < %s"
        )
        params = (key, _us(window.start), _us(window.end))
        width = len(CANONICAL_COLUMNS)
        parts = []
        with self._cursor(binary=True) as cur:
            # Binary results: QuestDB sends each double's 8 bytes as stored (no text
            # formatting; bit-exact incl. -0.0; NaN is QuestDB's NULL) and psycopg decodes
            # them in C. Streaming in chunks (libpq >= 17) overlaps QuestDB's sending with
            # our decoding. Every value fits a float64 exactly (ts < 2**53): each batch of
            # rows becomes one float64 block in a single pass.
            if psycopg.capabilities.has_stream_chunked():
                rows = cur.stream(sql, params, size=_STREAM_CHUNK_ROWS)
            else:
                rows = iter(cur.execute(sql, params))
            while batch := list(itertools.islice(rows, _BATCH_ROWS)):
                try:
                    cells = itertools.chain.from_iterable(batch)
                    parts.append(np.fromiter(cells, np.float64, count=len(batch) * width))
                except TypeError:  # a NULL (stored NaN): np.array maps None to NaN
                    parts.append(np.array(batch, dtype=np.float64).ravel())
        if not parts:
            return empty_frame()
        matrix = np.concatenate(parts).reshape(-1, width)
        frame = pd.DataFrame(
            {c: matrix[:, i].astype(CANONICAL_DTYPES[c]) for i, c in enumerate(CANONICAL_COLUMNS)}
        )
        if not frame[TS].is_monotonic_increasing:
            frame = frame.sort_values(TS, kind="stable").reset_index(drop=True)
        return frame

    def coverage(self, node_id: str, interval_s: int, window: Range | None = None) -> list[Range]:
        key = node_key(node_id)
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        # A bar opening less than one interval before the window still closes inside it.
        after = _us(window.start - interval_s) + 1 if window is not None else 0
        before = _us(window.end) if window is not None else _us(_MAX_S)
        with self._cursor() as cur:
            # Gaps and islands: consecutive bars share `ts - interval * row_number()`.
            cur.execute(
                "SELECT cast(min(ts) AS LONG) first_ts, cast(max(ts) AS LONG) last_ts FROM ("
                "  SELECT ts, cast(ts AS LONG) / 1000000 - %s * row_number() OVER (ORDER BY ts)"
                f"  AS island FROM {self.bars_table}"
                "  WHERE node_id = %s AND ts >= %s AND ts < %s"
                ") GROUP BY island ORDER BY first_ts",
                (interval_s, key, after, before),
            )
            islands = [(first // US, last // US) for first, last in cur.fetchall()]
        return islands_to_ranges(islands, interval_s, window)

    def bounds(self, node_id: str) -> tuple[int, int] | None:
        key = node_key(node_id)
        with self._cursor() as cur:
            cur.execute(
                f"SELECT cast(min(ts) AS LONG), cast(max(ts) AS LONG) FROM {self.bars_table} "
                "WHERE node_id = %s",
                (key,),
            )
            row = cur.fetchone()
        if row is None or row[0] is None:
            return None
        return int(row[0]) // US, int(row[1]) // US

    # -- gap ledger --------------------------------------------------------------------

    def _ledger(self, key: str) -> tuple[int, list[LedgerGap]]:
        with self._cursor() as cur:
            cur.execute(f"SELECT max(version) FROM {self.ledger_table} WHERE node_id = %s", (key,))
            row = cur.fetchone()
            if row is None or row[0] is None:
                return 0, []
            version = int(row[0])
            cur.execute(
                f"SELECT start_s, end_s, reason FROM {self.ledger_table} "
                "WHERE node_id = %s AND version = %s",
                (key, version),
            )
            rows = cur.fetchall()
        gaps = [LedgerGap(Range(int(s), int(e)), from_asset_key_part(r)) for s, e, r in rows if r]
        return version, sorted(gaps)

    def _write_ledger(self, key: str, version: int, gaps: Sequence[LedgerGap]) -> None:
        rows = [(key, version, g.range.start, g.range.end, asset_key_part(g.reason)) for g in gaps]
        rows = rows or [(key, version, 0, 0, _EMPTY_MARKER)]
        with self._cursor() as cur:
            cur.executemany(
                f"INSERT INTO {self.ledger_table} (node_id, version, start_s, end_s, reason, "
                "written_at) VALUES (%s, %s, %s, %s, %s, now())",
                rows,
            )
        self._wait_applied(self.ledger_table)

    def record_gaps(self, node_id: str, gaps: Sequence[LedgerGap]) -> None:
        key = node_key(node_id)
        for gap in gaps:
            if not isinstance(gap, LedgerGap) or not gap.reason:
                raise ValueError(f"gap ledger entries need a range and a reason, got {gap!r}")
        if not any(not gap.range.empty for gap in gaps):
            return
        with self._lock:
            version, existing = self._ledger(key)
            merged = merge_gaps([*existing, *gaps])
            if merged != existing:
                self._write_ledger(key, version + 1, merged)

    def ledger_gaps(self, node_id: str, window: Range | None = None) -> list[LedgerGap]:
        key = node_key(node_id)
        return clip_gaps(self._ledger(key)[1], window)

    def clear_gaps(self, node_id: str, window: Range) -> int:
        key = node_key(node_id)
        if window.empty:
            return 0
        with self._lock:
            version, existing = self._ledger(key)
            hit = [g for g in existing if g.range.intersect(window)]
            if not hit:
                return 0
            kept = [g for g in existing if not g.range.intersect(window)]
            kept += [part for g in hit for part in subtract_window(g, window)]
            self._write_ledger(key, version + 1, sorted(kept))
        return len(hit)

    # -- conformance events ------------------------------------------------------------

    def _events(self, key: str, windows: Sequence[Range]) -> list[FlagEvent]:
        out: list[FlagEvent] = []
        with self._cursor() as cur:
            for window in windows:
                cur.execute(
                    f"SELECT cast(ts AS LONG), flag, n FROM {self.events_table} "
                    "WHERE node_id = %s AND ts >= %s AND ts < %s AND n > 0",
                    (key, _us(window.start), _us(window.end)),
                )
                out += [
                    FlagEvent(int(ts) // US, from_asset_key_part(str(flag)), int(n))
                    for ts, flag, n in cur.fetchall()
                ]
        return sorted(out)

    def replace_flag_events(
        self, node_id: str, windows: Sequence[Range], events: Sequence[FlagEvent]
    ) -> None:
        key = node_key(node_id)
        kept = events_to_store(windows, events)
        windows = [w for w in windows if not w.empty]
        if not windows:
            return
        with self._lock:
            wanted = {(e.ts, e.flag): e.count for e in kept}
            current = {(e.ts, e.flag): e.count for e in self._events(key, windows)}
            if current == wanted:
                return
            rows = {**dict.fromkeys(current, 0), **wanted}  # a count of 0 removes an event
            values = [
                (key, asset_key_part(flag), n, _us(ts)) for (ts, flag), n in sorted(rows.items())
            ]
            with self._cursor() as cur:
                cur.execute(
                    f"INSERT INTO {self.events_table} (node_id, flag, n, ts) VALUES "
                    + ", ".join(["(%s, %s, %s, cast(%s AS TIMESTAMP))"] * len(values)),
                    [cell for row in values for cell in row],
                )
            self._wait_applied(self.events_table)

    def flag_events(self, node_id: str, window: Range | None = None) -> list[FlagEvent]:
        key = node_key(node_id)
        return self._events(key, [window if window is not None else Range(0, _MAX_S)])

    # -- housekeeping ------------------------------------------------------------------

    def node_ids(self) -> list[str]:
        with self._cursor() as cur:
            cur.execute(f"SELECT DISTINCT node_id FROM {self.bars_table}")
            keys = {str(r[0]) for r in cur.fetchall()}
            cur.execute(f"SELECT DISTINCT node_id FROM {self.ledger_table}")
            ledger_keys = {str(r[0]) for r in cur.fetchall()} - keys
        keys |= {k for k in ledger_keys if self._ledger(k)[1]}
        return sorted(from_asset_key_part(k) for k in keys)

    def drop_tables(self) -> None:
        """Drop this store's tables (tests and tear-down of throwaway prefixes)."""
        with self._cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self.bars_table}")
            cur.execute(f"DROP TABLE IF EXISTS {self.ledger_table}")
            cur.execute(f"DROP TABLE IF EXISTS {self.events_table}")
        self._schema_ready = False

    @contextmanager
    def session(self) -> Iterator[None]:
        """The store keeps one connection across operations already: nothing to hold."""
        yield

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def node_key(node_id: str) -> str:
    """The stored form of a node id: reversible, only `[A-Za-z0-9_]`."""
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"node_id must be a non-empty string, got {node_id!r}")
    return asset_key_part(node_id)


def _one_line(exc: BaseException) -> str:
    """psycopg's message on one line (it spans several), so logs and the CLI's last line
    carry all of it."""
    return " ".join(str(exc).split())
