"""Dagster's SQLite instance storage, with batched event writes.

A single-run backfill of a year of daily partitions ends with 365 materialization events.
Dagster emits them as one batch (`DagsterEventBatchMetadata`) and, when
`DAGSTER_EVENT_BATCH_SIZE` is set (the CLI sets it), hands the batch to
`EventLogStorage.store_event_batch`. The stock SQLite storage inherits the base method,
which stores the events one by one: per event a new engine and connection, a commit in the
run's shard and another in the cross-run index shard, each an fsync, and closing the last
connection to a WAL database checkpoints it (more fsyncs).

`SeamlessSqliteEventLogStorage.store_event_batch` runs Dagster's own `store_event` for each
event of the batch unchanged, but inside one transaction per shard: the same rows, the same
tables, two commits instead of 730. All shards commit only after every event of the batch
has been written, so a failing batch leaves nothing behind and Dagster's fallback (store the
events one by one) starts clean. Events outside a batch take Dagster's path untouched. It
also remembers the tables and columns Dagster finds present (Dagster checks them for every
asset event, `has_table` on a new engine each time), serializes a planned check evaluation
once for all the partitions of the run (Dagster serializes it per partition), and within a
batch updates an asset's row (its last materialization) only for the batch's last
materialization of that asset: the row ends as Dagster's would, without serializing and
writing the 365 materializations the same transaction overwrites.

Configured in `dagster_home/dagster.yaml`:

    storage:
      custom:
        module: seamless_assets.dagster_storage
        class: SeamlessSqliteStorage
        config:
          base_dir:
            env: DAGSTER_HOME

The on-disk layout is Dagster's default (`history/`, `history/runs/`, `schedules/`), so an
existing `dagster_home/` keeps working and switching back is a config change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from dagster import AssetKey, serialize_value
from dagster._core.events import AssetCheckEvaluationPlanned
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool


class SeamlessSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` whose `store_event_batch` commits once per shard."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._batch = threading.local()  # the open batch of this thread: shard → connection
        self._tables_present: set[str] = set()
        self._asset_key_columns: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)  # may already connect (new index)

    # Dagster asks, for every asset event it stores, whether the index has the tables and
    # columns of later migrations: by opening a new engine (`has_table`) or inspecting the
    # table. Migrations only ever add them, so a yes is remembered (a no is asked again).
    def has_table(self, table_name: str) -> bool:
        if table_name in self._tables_present:
            return True
        present = super().has_table(table_name)
        if present:
            self._tables_present.add(table_name)
        return present

    def _store_asset_check_evaluation_planned(
        self, event: EventLogEntry, event_id: int | None
    ) -> None:
        """Dagster's rows (one per check and partition of the run), with the planned event
        serialized once instead of once per partition: the event holds the run's whole
        partition subset, so a year's 366 partitions serialized it 366 times per check."""
        planned = event.get_dagster_event().event_specific_data
        assert isinstance(planned, AssetCheckEvaluationPlanned)
        subset = planned.partitions_subset
        partition_keys = subset.get_partition_keys() if subset else [None]
        evaluation_event = serialize_value(event)
        timestamp = datetime.fromtimestamp(event.timestamp, UTC).replace(tzinfo=None)
        rows = [
            dict(
                asset_key=planned.asset_key.to_string(),
                check_name=planned.check_name,
                partition=partition_key,
                run_id=event.run_id,
                execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                evaluation_event=evaluation_event,
                evaluation_event_timestamp=timestamp,
                evaluation_event_storage_id=event_id,
            )
            for partition_key in partition_keys
        ]
        with self.index_connection() as conn:
            # one statement executed for every row (compiled once) rather than one INSERT
            # with every row's values, whose compilation grew with the partitions
            conn.execute(AssetCheckExecutionsTable.insert(), rows)

    def _store_asset_event(self, conn: Connection, event: EventLogEntry, event_id: int) -> None:
        """Dagster's update of the asset's row (last materialization, run, timestamp), except
        for a materialization that a later one of the same asset in the open batch
        overwrites: that one writes every column this one would, in the same transaction."""
        if id(event) in getattr(self._batch, "superseded", ()):
            return
        super()._store_asset_event(conn, event, event_id)

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        if column_name in self._asset_key_columns:
            return True
        present = super()._has_asset_key_col_on_connection(conn, column_name)
        if present:
            self._asset_key_columns.add(column_name)
        return present

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> SeamlessSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        opened: dict[str, tuple[Engine, Connection]] = {}
        with self._db_lock:  # as `_connect`: one writer of this storage at a time
            self._batch.opened = opened
            self._batch.superseded = superseded_materializations(events)
            try:
                for event in events:
                    self.store_event(event)  # Dagster's own logic; `_connect` yields `opened`
                for _, conn in opened.values():
                    conn.commit()
            except BaseException:
                for _, conn in opened.values():
                    conn.rollback()
                raise
            finally:
                self._batch.opened = None
                self._batch.superseded = ()
                for engine, conn in opened.values():
                    conn.close()
                    engine.dispose()

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        opened: dict[str, tuple[Engine, Connection]] | None = getattr(self._batch, "opened", None)
        if opened is None:
            with super()._connect(shard) as conn:
                yield conn
            return
        if shard not in opened:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=NullPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            conn = engine.connect()
            conn.begin()
            opened[shard] = (engine, conn)
        yield opened[shard][1]


def superseded_materializations(events: Sequence[EventLogEntry]) -> set[int]:
    """The ids of the batch's materialization events followed in it by another
    materialization of the same asset."""
    last: dict[AssetKey, EventLogEntry] = {}
    materializations = []
    for event in events:
        dagster_event = event.dagster_event
        if dagster_event and dagster_event.is_step_materialization and dagster_event.asset_key:
            last[dagster_event.asset_key] = event
            materializations.append((dagster_event.asset_key, event))
    return {id(event) for key, event in materializations if last[key] is not event}


class SeamlessSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage with `SeamlessSqliteEventLogStorage` as event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = SeamlessSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> SeamlessSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
