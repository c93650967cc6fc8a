"""The embedded hot store: one DuckDB file, shared by every Dagster process on the machine.

DuckDB lets one process at a time open a file read-write, and run workers, the webserver
and sensors all touch the store. So each operation opens its own connection, holds it
only as long as the operation runs, and waits with backoff while another process holds
the file, up to `lock_timeout_s`. Uniqueness of `(node_id, ts)` is the table's primary
key; node ids map to small integer keys so the index stays compact.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from seamless_assets.core.coverage import LedgerGap
from seamless_assets.core.flag_ledger import FlagEvent
from seamless_assets.core.frame import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    TS,
    Range,
    empty_frame,
)
from seamless_assets.errors import StoreError

from .base import (
    clip_gaps,
    events_to_store,
    islands_to_ranges,
    merge_gaps,
    subtract_window,
    validate_upsert_frame,
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS nodes (
        node_key INTEGER PRIMARY KEY,
        node_id VARCHAR NOT NULL UNIQUE
    )""",
    # No primary key: one bar per (node_key, ts) is kept by `upsert`, the table's only
    # writer (its frames have unique ts, the bars they restate are deleted first, in one
    # transaction, one writer at a time). DuckDB's key index took 3/4 of a backfill's
    # insert time; reads of a window scan the ts zone maps either way. Files created with
    # the key keep it and work the same.
    """CREATE TABLE IF NOT EXISTS ohlcv (
        node_key INTEGER NOT NULL,
        ts BIGINT NOT NULL,
        open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE
    )""",
    """CREATE TABLE IF NOT EXISTS gap_ledger (
        node_key INTEGER NOT NULL,
        start_ts BIGINT NOT NULL,
        end_ts BIGINT NOT NULL,
        reason VARCHAR NOT NULL,
        PRIMARY KEY (node_key, start_ts, end_ts, reason),
        CHECK (start_ts < end_ts)
    )""",
    """CREATE TABLE IF NOT EXISTS flag_events (
        node_key INTEGER NOT NULL,
        ts BIGINT NOT NULL,
        flag VARCHAR NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (node_key, ts, flag),
        CHECK (n > 0)
    )""",
)

_COLUMNS_SQL = ", ".join(CANONICAL_COLUMNS)

# Gaps and islands: consecutive bars share `ts - interval * row_number()`.
_COVERAGE_SQL = """
    SELECT min(ts) AS first_ts, max(ts) AS last_ts
    FROM (
        SELECT ts, ts - $interval_s * row_number() OVER (ORDER BY ts) AS island
        FROM ohlcv
        WHERE node_key = $node_key AND ts > $after AND ts < $before
    )
    GROUP BY island
    ORDER BY first_ts
"""

# One lock per database file and process: DuckDB itself lets only one process at a time
# open the file, and this serializes the threads inside it (transactions never conflict,
# connects and closes never race).
_PROCESS_LOCKS: dict[Path, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock_for(path: Path) -> threading.RLock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(path, threading.RLock())


def _arrow_view(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table over contiguous column buffers (zero-copy when they
    already are): DuckDB scans it natively whatever the frame's index or strides, and
    NaN stays a value rather than becoming NULL."""
    return pa.table(
        {c: pa.array(np.ascontiguousarray(frame[c].to_numpy())) for c in CANONICAL_COLUMNS}
    )


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class DuckDBHotStore:
    """`HotStore` on an embedded DuckDB file (tables `nodes`, `ohlcv`, `gap_ledger`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout_s: float = 30.0,
        max_backoff_s: float = 0.5,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        self.lock_timeout_s = lock_timeout_s
        self.max_backoff_s = max_backoff_s
        self._process_lock = _process_lock_for(self.path)
        self._schema_ready = False
        self._closed = False
        self._held = threading.local()  # `session`'s connection (`.con`), per thread

    def __repr__(self) -> str:
        return f"DuckDBHotStore({str(self.path)!r})"

    def __enter__(self) -> DuckDBHotStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connections -------------------------------------------------------------------

    def _open(self) -> duckdb.DuckDBPyConnection:
        """Connect, waiting with jittered exponential backoff while another process
        holds the file."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.01
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.Error as exc:
                if not _is_lock_conflict(exc):
                    raise StoreError(f"cannot open DuckDB hot store {self.path}: {exc}") from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreError(
                        f"DuckDB hot store {self.path} stayed locked by another process for "
                        f"{self.lock_timeout_s:g}s. DuckDB allows one process per file: stop "
                        "or wait for the process named below, raise `lock_timeout_s`, or use "
                        f"the QuestDB hot store for many concurrent writers. ({exc})"
                    ) from exc
                time.sleep(min(delay * random.uniform(0.5, 1.0), remaining))
                delay = min(delay * 2, self.max_backoff_s)

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._closed:
            raise StoreError(f"{self!r} is closed; create a new store to use it again")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Every operation of this process on the file takes the file's process lock: DuckDB
        # connects/closes of one file race between threads ("Unique file handle
        # conflict"), and operations take milliseconds, so one at a time costs little.
        with self._process_lock:
            held = getattr(self._held, "con", None)
            con = held if held is not None else self._open()
            try:
                if not self._schema_ready:
                    for statement in _SCHEMA:
                        con.execute(statement)
                    self._schema_ready = True
                yield con
            except BaseException as exc:
                if held is not None:  # the session's connection goes on: end what failed
                    with suppress(duckdb.Error):
                        con.rollback()
                if isinstance(exc, duckdb.Error):
                    raise StoreError(f"DuckDB hot store {self.path}: {exc}") from exc
                raise
            finally:
                if held is None:
                    con.close()

    @contextmanager
    def session(self) -> Iterator[None]:
        """One connection (and this process's hold on the file) for the operations of
        this thread inside: a run's chunks pay one open and one checkpoint, not one per
        operation. Other processes wait for the file meanwhile (`lock_timeout_s`)."""
        if getattr(self._held, "con", None) is not None:  # nested: the outer session holds it
            yield
            return
        if self._closed:
            raise StoreError(f"{self!r} is closed; create a new store to use it again")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._process_lock:
            self._held.con, self._held.keys = self._open(), {}
            try:
                yield
            finally:
                con, self._held.con, self._held.keys = self._held.con, None, None
                con.close()

    def _node_key(
        self, con: duckdb.DuckDBPyConnection, node_id: str, *, create: bool
    ) -> int | None:
        """`node_id`'s key. Within a session, a committed key is looked up once (keys are
        never deleted or changed, and the session holds the file)."""
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(f"node_id must be a non-empty string, got {node_id!r}")
        keys = (
            getattr(self._held, "keys", None) if con is getattr(self._held, "con", None) else None
        )
        if keys and node_id in keys:
            return int(keys[node_id])
        query = "SELECT node_key FROM nodes WHERE node_id = ?"
        rows = con.execute(query, [node_id]).fetchall()
        if rows:
            if keys is not None:
                keys[node_id] = int(rows[0][0])
            return int(rows[0][0])
        if not create:
            return None
        con.execute(
            "INSERT INTO nodes SELECT coalesce(max(node_key), 0) + 1, ? FROM nodes", [node_id]
        ).fetchall()
        return int(con.execute(query, [node_id]).fetchall()[0][0])

    # -- bars --------------------------------------------------------------------------

    def upsert(self, node_id: str, frame: pd.DataFrame) -> int:
        validate_upsert_frame(frame)
        if frame.empty:
            return 0
        ts = frame[TS].to_numpy()
        with self._connection() as con:
            con.register("incoming_bars", _arrow_view(frame))
            con.begin()
            node_key = self._node_key(con, node_id, create=True)
            # New bars (a backfill's usual case) are a plain insert: the frame's ts are
            # unique and none is stored yet. Bars the frame restates are deleted first.
            span = [node_key, int(ts.min()), int(ts.max())]
            stored = con.execute(
                "SELECT 1 FROM ohlcv WHERE node_key = ? AND ts >= ? AND ts <= ? LIMIT 1", span
            ).fetchall()
            if stored:
                con.execute(
                    "DELETE FROM ohlcv WHERE node_key = ? AND ts >= ? AND ts <= ? "
                    "AND ts IN (SELECT ts FROM incoming_bars)",
                    span,
                )
            con.execute(
                f"INSERT INTO ohlcv (node_key, {_COLUMNS_SQL}) "
                f"SELECT ?, {_COLUMNS_SQL} FROM incoming_bars",
                [node_key],
            )
            con.unregister("incoming_bars")
            con.commit()
        return len(frame)

    def read_range(self, node_id: str, window: Range) -> pd.DataFrame:
        with self._connection() as con:
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None:
                return empty_frame()
            table = con.sql(
                f"SELECT {_COLUMNS_SQL} FROM ohlcv "
                "WHERE node_key = $node_key AND ts >= $start AND ts < $end",
                params={"node_key": node_key, "start": window.start, "end": window.end},
            ).to_arrow_table()
        columns = {c: table.column(c).to_numpy() for c in CANONICAL_COLUMNS}
        ts = columns[TS]
        if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
            # Scans usually return insertion order; sort only when they do not.
            order = np.argsort(ts, kind="stable")
            columns = {c: values[order] for c, values in columns.items()}
        for c, values in columns.items():
            values = np.asarray(values, dtype=CANONICAL_DTYPES[c])
            columns[c] = values if values.flags.writeable else values.copy()
        return pd.DataFrame(columns, copy=False)  # no consolidation copy

    def coverage(self, node_id: str, interval_s: int, window: Range | None = None) -> list[Range]:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        after = window.start - interval_s if window is not None else np.iinfo(np.int64).min
        before = window.end if window is not None else np.iinfo(np.int64).max
        with self._connection() as con:
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None:
                return []
            islands = con.execute(
                _COVERAGE_SQL,
                {
                    "node_key": node_key,
                    "interval_s": interval_s,
                    "after": int(after),
                    "before": int(before),
                },
            ).fetchall()
        return islands_to_ranges(islands, interval_s, window)

    def bounds(self, node_id: str) -> tuple[int, int] | None:
        with self._connection() as con:
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None:
                return None
            (row,) = con.execute(
                "SELECT min(ts), max(ts) FROM ohlcv WHERE node_key = ?", [node_key]
            ).fetchall()  # not fetchone: a result left unfinished blocks the session's next
        if row[0] is None:
            return None
        return int(row[0]), int(row[1])

    # -- gap ledger --------------------------------------------------------------------

    @staticmethod
    def _ledger(con: duckdb.DuckDBPyConnection, node_key: int) -> list[LedgerGap]:
        rows = con.execute(
            "SELECT start_ts, end_ts, reason FROM gap_ledger WHERE node_key = ?", [node_key]
        ).fetchall()
        return [LedgerGap(Range(int(s), int(e)), str(r)) for s, e, r in rows]

    @staticmethod
    def _replace_ledger_entries(
        con: duckdb.DuckDBPyConnection,
        node_key: int,
        remove: Sequence[LedgerGap],
        add: Sequence[LedgerGap],
    ) -> None:
        if remove:
            con.executemany(
                "DELETE FROM gap_ledger "
                "WHERE node_key = ? AND start_ts = ? AND end_ts = ? AND reason = ?",
                [[node_key, g.range.start, g.range.end, g.reason] for g in remove],
            )
        if add:
            con.executemany(
                "INSERT INTO gap_ledger (node_key, start_ts, end_ts, reason) VALUES (?, ?, ?, ?)",
                [[node_key, g.range.start, g.range.end, g.reason] for g in add],
            )

    def record_gaps(self, node_id: str, gaps: Sequence[LedgerGap]) -> None:
        for gap in gaps:
            if not isinstance(gap, LedgerGap) or not gap.reason:
                raise ValueError(f"gap ledger entries need a range and a reason, got {gap!r}")
        if not any(not gap.range.empty for gap in gaps):
            return
        with self._connection() as con:
            con.begin()
            node_key = self._node_key(con, node_id, create=True)
            assert node_key is not None
            existing = set(self._ledger(con, node_key))
            merged = set(merge_gaps([*existing, *gaps]))
            self._replace_ledger_entries(
                con, node_key, sorted(existing - merged), sorted(merged - existing)
            )
            con.commit()

    def ledger_gaps(self, node_id: str, window: Range | None = None) -> list[LedgerGap]:
        with self._connection() as con:
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None:
                return []
            return clip_gaps(self._ledger(con, node_key), window)

    def clear_gaps(self, node_id: str, window: Range) -> int:
        if window.empty:
            return 0
        with self._connection() as con:
            con.begin()
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None:
                return 0
            hit = [g for g in self._ledger(con, node_key) if g.range.intersect(window)]
            remainders = [part for g in hit for part in subtract_window(g, window)]
            self._replace_ledger_entries(con, node_key, hit, remainders)
            con.commit()
        return len(hit)

    # -- conformance events ------------------------------------------------------------

    def replace_flag_events(
        self, node_id: str, windows: Sequence[Range], events: Sequence[FlagEvent]
    ) -> None:
        kept = events_to_store(windows, events)
        windows = [w for w in windows if not w.empty]
        if not windows:
            return
        with self._connection() as con:
            con.begin()
            node_key = self._node_key(con, node_id, create=bool(kept))
            if node_key is None:
                con.commit()
                return
            con.executemany(
                "DELETE FROM flag_events WHERE node_key = ? AND ts >= ? AND ts < ?",
                [[node_key, w.start, w.end] for w in windows],
            )
            if kept:
                con.executemany(
                    "INSERT INTO flag_events (node_key, ts, flag, n) VALUES (?, ?, ?, ?)",
                    [[node_key, e.ts, e.flag, e.count] for e in kept],
                )
            con.commit()

    def flag_events(self, node_id: str, window: Range | None = None) -> list[FlagEvent]:
        start = window.start if window is not None else np.iinfo(np.int64).min
        end = window.end if window is not None else np.iinfo(np.int64).max
        with self._connection() as con:
            node_key = self._node_key(con, node_id, create=False)
            if node_key is None:
                return []
            rows = con.execute(
                "SELECT ts, flag, n FROM flag_events "
                "WHERE node_key = ? AND ts >= ? AND ts < ? ORDER BY ts, flag",
                [node_key, int(start), int(end)],
            ).fetchall()
        return [FlagEvent(int(ts), str(flag), int(n)) for ts, flag, n in rows]

    # -- housekeeping ------------------------------------------------------------------

    def node_ids(self) -> list[str]:
        with self._connection() as con:
            rows = con.execute(
                "SELECT node_id FROM nodes n "
                "WHERE EXISTS (SELECT 1 FROM ohlcv o WHERE o.node_key = n.node_key) "
                "OR EXISTS (SELECT 1 FROM gap_ledger g WHERE g.node_key = n.node_key) "
                "ORDER BY node_id"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        # Connections live only for one operation (or a session), so nothing is left open.
        self._closed = True
