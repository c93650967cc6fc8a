"""The coverage picture sensor over a real Dagster instance, hot store and artifact store."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from sandbox import SandboxExchange, expected_bars
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.frame import CANONICAL_COLUMNS
from seamless_assets.coverage_view import GLYPHS
from sensors.coverage_picture import SENSOR_NAME
from tests.assets.conftest import open_hot

from .conftest import DAY, NODE, T0, tick


def _backfill(project: SeamlessConfig, first_day: int, days: int) -> None:
    start = datetime.fromtimestamp(T0 + first_day * DAY, tz=UTC)
    end = datetime.fromtimestamp(T0 + (first_day + days) * DAY, tz=UTC)
    assert run_backfill(project, [project.node(NODE)], start, end).success


def _upsert(project: SeamlessConfig, start: int, end: int) -> None:
    bars = expected_bars("BTC/USDT", 60, start, end)
    hot = open_hot(project)
    hot.upsert(NODE, pd.DataFrame({c: bars[c] for c in CANONICAL_COLUMNS}))
    hot.close()


def test_the_picture_shows_each_day_and_is_recorded_only_when_it_changes(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    # Closed partitions 01-01 … 01-07: 01-02 an exchange outage (confirmed empty), 01-03
    # half stored, 01-05 stored, the rest missing. (The backfill records the history start.)
    sandbox.configure(gaps={"BTC/USDT": [[T0 + DAY, T0 + 2 * DAY]]})
    _backfill(project, 0, 2)
    _backfill(project, 4, 1)
    _upsert(project, T0 + 2 * DAY, T0 + 2 * DAY + DAY // 2)

    first = tick(defs, SENSOR_NAME, instance)
    [event] = first.asset_events
    assert isinstance(event, dg.AssetObservation)
    assert event.asset_key == dg.AssetKey(project.node(NODE).asset_key_path())
    meta = {k: v.value for k, v in event.metadata.items()}
    g = GLYPHS
    row = g["complete"] + g["confirmed_empty"] + g["partial"] + g["missing"] + g["complete"]
    assert f"2024-01 {row}{g['missing'] * 2}\n" in meta["coverage"], meta["coverage"]
    assert "- 2024-01-06 … 2024-01-07: 2 missing" in meta["coverage"]
    assert (meta["partitions_complete"], meta["partitions_partial"]) == (2, 1)
    assert (meta["partitions_confirmed_empty"], meta["partitions_missing"]) == (1, 3)

    quiet = tick(defs, SENSOR_NAME, instance, first.cursor)
    assert not quiet.asset_events
    assert quiet.skip_reason is not None
    assert quiet.skip_reason.skip_message == "no node's coverage changed"

    _upsert(project, T0 + 5 * DAY, T0 + 7 * DAY)
    [changed] = tick(defs, SENSOR_NAME, instance, quiet.cursor).asset_events
    assert changed.metadata["partitions_missing"].value == 1
