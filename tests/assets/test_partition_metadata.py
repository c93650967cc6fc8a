"""Each partition's materialization describes that partition; the run's totals describe the run.

A single-run backfill is one Dagster step for many partitions. Whatever the run looks like
(any number of days, a day before the listing, a maintenance gap, days still inside the
stabilization window, a rate limit on the way), every partition gets exactly one
materialization event whose metadata is its own: its bars in the hot store, its segment's
fingerprint and `manifest.json` on disk, its coverage and completeness. The run's totals
(one observation per node) equal what the exchange saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import dagster as dg
import pytest

from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.materialization import STAGES

from .conftest import DAY
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

NODE = "ohlcv:binance:BTC/USDT:1m"
MIN = 60


@dataclass(frozen=True)
class Scenario:
    """A run of `days` partitions from `start`; `listed_after_days`: the symbol lists that
    many days in; `gap`: (day, first minute, minutes) the exchange has no bars for;
    `unstable_days`: the last days the exchange clock still holds inside stabilization."""

    start: datetime
    days: int
    listed_after_days: int = 0
    gap: tuple[int, int, int] | None = None
    unstable_days: int = 0
    rate_limited: bool = False
    bad_bar: tuple[int, int] | None = None  # (day, minute): sent with high < low, dropped


SCENARIOS = {
    "complete-days": Scenario(datetime(2024, 3, 10, tzinfo=UTC), days=3),
    "listing-gap-unstable-429": Scenario(
        datetime(2024, 1, 1, tzinfo=UTC),
        days=6,
        listed_after_days=1,
        gap=(2, 300, 45),
        unstable_days=2,
        rate_limited=True,
        bad_bar=(3, 700),
    ),
    "one-day": Scenario(datetime(2024, 2, 29, tzinfo=UTC), days=1, gap=(0, 0, 30)),
}


def _window(s: Scenario, day: int) -> Range:
    t0 = int(s.start.timestamp())
    return Range(t0 + day * DAY, t0 + (day + 1) * DAY)


def _plant(sandbox: SandboxExchange, s: Scenario) -> None:
    t0 = int(s.start.timestamp())
    knobs: dict[str, Any] = {}
    if s.listed_after_days:
        knobs["listing_ts"] = {"BTC/USDT": t0 + s.listed_after_days * DAY}
    if s.gap:
        day, minute, minutes = s.gap
        gap_start = t0 + day * DAY + minute * MIN
        knobs["gaps"] = {"BTC/USDT": [[gap_start, gap_start + minutes * MIN]]}
    if s.bad_bar:
        day, minute = s.bad_bar
        bad = {"symbol": "BTC/USDT", "ts": t0 + day * DAY + minute * MIN, "kind": "high_below_low"}
        knobs["corruptions"] = [bad]
    if s.rate_limited:
        # the first answers the history start (asked again next run), the second a backfill
        # page, which waits out Retry-After and retries
        knobs.update(force_429=2, force_429_retry_after=1)
    if knobs:
        sandbox.configure(**knobs)
    if s.unstable_days:
        # the exchange's clock 30 s after the last partition's start: it and the day before
        # are closed or forming but not yet stable (2 bars of stabilization)
        sandbox.set_clock(now=t0 + (s.days - 1) * DAY + 30)


def _expected_completeness(s: Scenario, day: int) -> str:
    if day >= s.days - s.unstable_days:
        return "unstable"
    if day < s.listed_after_days:
        return "confirmed_empty"
    if s.bad_bar and s.bad_bar[0] == day:
        return "partial"  # the dropped bar is neither stored nor confirmed empty
    return "complete"  # a confirmed maintenance gap is known, not missing


def _events(result: dg.JobExecutionResult) -> dict[str, dict[str, Any]]:
    """Partition key -> that partition's materialization metadata; exactly one each."""
    events = result.get_asset_materialization_events()
    by_partition: dict[str, dict[str, Any]] = {}
    for event in events:
        assert event.partition and event.partition not in by_partition, event.partition
        by_partition[event.partition] = {
            k: v.value for k, v in event.materialization.metadata.items()
        }
    assert len(by_partition) == len(events)
    return by_partition


def _totals(result: dg.JobExecutionResult) -> dict[str, Any]:
    (event,) = result.get_asset_observation_events()
    observation = event.asset_observation_data.asset_observation
    assert observation.partition is None  # about the run, not a partition
    return {k: v.value for k, v in observation.metadata.items()}


def _manifest(uri: str) -> dict[str, Any]:
    parsed = urlparse(uri)
    assert parsed.scheme == "file" and parsed.path.endswith("/manifest.json"), uri
    return dict(json.loads(Path(unquote(parsed.path)).read_text()))


def _assert_partitions_describe_themselves(
    config: SeamlessConfig, s: Scenario, by_partition: dict[str, dict[str, Any]]
) -> None:
    node = config.node(NODE)
    hot, artifacts = _hot(config), _artifacts(config)
    keys = [(s.start + timedelta(days=d)).date().isoformat() for d in range(s.days)]
    assert sorted(by_partition) == keys  # one event per partition, no run-level extra
    for day, key in enumerate(keys):
        meta, window = by_partition[key], _window(s, day)
        stored = hot.read_range(str(node), window)["ts"].to_numpy()
        where = f"partition {key}: {meta}"
        assert meta["dagster/row_count"] == len(stored), where
        assert meta["completeness"] == _expected_completeness(s, day), where
        if len(stored):
            assert meta["coverage_start"] == iso_utc(int(stored[0])), where
            assert meta["coverage_end"] == iso_utc(int(stored[-1]) + MIN), where
        else:
            assert meta["coverage_start"] is None and meta["coverage_end"] is None, where
        assert meta["coverage_ratio"] == pytest.approx(len(stored) / (DAY // MIN), abs=1e-6)
        head = artifacts.head(node, window)
        if meta["completeness"] == "unstable":
            assert head is None and meta["fingerprint"] is None, where
            assert meta["manifest_uri"] is None, where
            continue
        manifest = _manifest(meta["manifest_uri"])
        assert meta["fingerprint"] == head == manifest["fingerprint"], where
        assert manifest["range"]["start"] == window.start, where
        assert manifest["range"]["end"] == window.end, where
        assert manifest["row_count"] == meta["dagster/row_count"], where
        assert manifest["coverage"]["ratio"] == pytest.approx(meta["coverage_ratio"])
        assert manifest["coverage"]["completeness"] == pytest.approx(meta["completeness_ratio"])
        own_flags = {f: n for f, n in manifest["conformance"]["flags"].items() if n}
        assert meta["conformance_flags"] == own_flags, where


def _assert_totals_match_exchange(
    totals: dict[str, Any], sandbox: SandboxExchange, s: Scenario, partitions: int
) -> None:
    stats = sandbox.stats()
    assert totals["run_partitions"] == partitions
    assert totals["exchange_requests"] == stats["requests_total"], (totals, stats)
    by_endpoint = {
        path.rsplit("/", 1)[-1]: n for path, n in totals["exchange_requests_by_endpoint"].items()
    }
    assert by_endpoint == {k: v["requests"] for k, v in stats["by_endpoint"].items()}
    # one client per run: the history start's request and the backfill share its markets
    assert stats["by_endpoint"]["exchangeInfo"]["requests"] == 1, stats["by_endpoint"]
    # every 429 answer, also those to requests already in flight when the first was sent
    assert totals["exchange_http_429"] == stats["by_status"].get("429", 0)
    assert totals["exchange_http_418"] == stats["by_status"].get("418", 0) == 0
    assert (totals["exchange_http_429"] > 0) == s.rate_limited
    if s.rate_limited:
        assert totals["exchange_rate_limited"] >= 1 and totals["exchange_retries"] >= 1
        assert totals["rate_limit_wait_s"] >= 0.9  # waited out Retry-After: 1
    else:
        assert totals["exchange_rate_limited"] == totals["exchange_retries"] == 0
    for stage in STAGES:
        assert totals[f"stage_{stage}_s"] >= 0.0
    measured = sum(totals[f"stage_{st}_s"] for st in STAGES if st not in ("encode", "total"))
    assert totals["stage_total_s"] >= measured - 1e-3
    if totals["segments_written"]:
        assert totals["stage_encode_s"] > 0


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_partition_event_holds_its_own_facts(
    name: str, project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    s = SCENARIOS[name]
    _plant(sandbox, s)
    node = project.node(NODE)
    end = s.start + timedelta(days=s.days)

    result = run_backfill(project, [node], s.start, end)
    assert result.success
    by_partition = _events(result)
    _assert_partitions_describe_themselves(project, s, by_partition)
    totals = _totals(result)
    _assert_totals_match_exchange(totals, sandbox, s, s.days)
    stable = s.days - s.unstable_days
    assert totals["segments_published"] == totals["segments_written"] == stable
    assert totals["partitions_unstable"] == s.unstable_days
    assert totals["bars_stored"] == sum(m["dagster/row_count"] for m in by_partition.values())
    if s.bad_bar:  # the bad row is flagged on its own day only
        bad_key = sorted(by_partition)[s.bad_bar[0]]
        for key, meta in by_partition.items():
            flagged = meta["conformance_flags"].get("ohlc_inconsistent", 0)
            assert flagged == (1 if key == bad_key else 0), (key, meta)
        assert by_partition[bad_key]["missing_bars"] == 1
    if s.gap:  # the planted gap shows on its own day only
        day = s.gap[0]
        gap_key = sorted(by_partition)[day]
        assert by_partition[gap_key]["coverage_ratio"] < 1.0
        assert by_partition[gap_key]["completeness_ratio"] == 1.0
        assert by_partition[gap_key]["known_gaps"]  # confirmed empty, with its reason
        assert by_partition[gap_key]["missing_bars"] == 0

    if s.unstable_days:
        return
    # A rerun of settled partitions asks the exchange nothing and writes nothing; each
    # partition's event again names its own (unchanged) segment.
    requests_before = sandbox.stats()["requests_total"]
    again = run_backfill(project, [node], s.start, end)
    assert again.success
    rerun = _events(again)
    assert {k: m["fingerprint"] for k, m in rerun.items()} == {
        k: m["fingerprint"] for k, m in by_partition.items()
    }
    assert sandbox.stats()["requests_total"] == requests_before
    rerun_totals = _totals(again)
    assert rerun_totals["exchange_requests"] == 0 and rerun_totals["segments_written"] == 0
    assert rerun_totals["stage_fetch_s"] == 0.0 and rerun_totals["stage_encode_s"] == 0.0


@pytest.mark.parametrize(
    ("rows", "completeness_ratio", "stable", "word"),
    [
        (1440, 1.0, True, "complete"),
        (1400, 1.0, True, "complete"),  # the rest confirmed empty by the exchange
        (1400, 0.99, True, "partial"),
        (0, 1.0, True, "confirmed_empty"),
        (0, 0.0, True, "missing"),
        (0, 0.5, True, "missing"),
        (1440, 1.0, False, "unstable"),
        (0, 0.0, False, "unstable"),
    ],
)
def test_completeness_words(rows: int, completeness_ratio: float, stable: bool, word: str) -> None:
    from seamless_assets.materialization import completeness
    from seamless_assets.pipeline import PartitionOutcome

    part = PartitionOutcome(
        window=Range(0, DAY),
        row_count=rows,
        coverage_ratio=rows / 1440,
        completeness_ratio=completeness_ratio,
        missing=(),
        gaps=(),
        flags={},
        stable=stable,
    )
    assert completeness(part) == word
