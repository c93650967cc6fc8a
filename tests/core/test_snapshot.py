"""Snapshot values: fingerprints, manifests, resolution and diffs."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamless_assets.core.frame import Range
from seamless_assets.core.snapshot import (
    Snapshot,
    SnapshotSegment,
    build_snapshot,
    diff_bars,
    diff_segments,
    parse_as_of,
    resolve_as_of,
)

NODE = "ohlcv:binance:BTC/USDT:1m"
DAY = 86_400


def segment(day: int, tag: str = "a", rows: int = 1440) -> SnapshotSegment:
    return SnapshotSegment(Range(day * DAY, (day + 1) * DAY), "sha256:" + tag * 64, rows)


def test_build_lists_only_stable_segments_and_sets_as_of() -> None:
    snapshot = build_snapshot(NODE, 60, "v2", [segment(2), segment(0), segment(1)], 2 * DAY + 5)
    assert snapshot is not None
    assert [s.range.start for s in snapshot.segments] == [0, DAY]
    assert snapshot.as_of_s == 2 * DAY
    assert snapshot.as_of_iso == "1970-01-03T00:00:00Z"
    assert snapshot.row_count == 2880
    assert build_snapshot(NODE, 60, "v2", [segment(2)], DAY) is None


def test_fingerprint_covers_every_field_and_round_trips() -> None:
    base = Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), segment(1)))
    variants = [
        Snapshot(NODE.replace("BTC", "ETH"), 60, "v2", 2 * DAY, base.segments),
        Snapshot(NODE, 30, "v2", 2 * DAY, base.segments),
        Snapshot(NODE, 60, "v3", 2 * DAY, base.segments),
        Snapshot(NODE, 60, "v2", 2 * DAY + 60, base.segments),
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), segment(1, "b"))),
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), segment(1, rows=1439))),
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(1),)),
    ]
    prints = {base.fingerprint, *(v.fingerprint for v in variants)}
    assert len(prints) == len(variants) + 1
    assert Snapshot.from_json(base.to_json()) == base
    assert "published" not in str(base.to_json())  # no wall clock inside


def test_a_manifest_that_does_not_hash_to_its_fingerprint_is_refused() -> None:
    manifest = Snapshot(NODE, 60, "v2", DAY, (segment(0),)).to_json()
    manifest["segments"][0]["row_count"] = 1
    with pytest.raises(ValueError, match="hashes to"):
        Snapshot.from_json(manifest)
    with pytest.raises(ValueError, match="missing a field"):
        Snapshot.from_json({"node_id": NODE})


def test_segments_must_be_ordered_disjoint_and_within_as_of() -> None:
    with pytest.raises(ValueError, match="out of time order"):
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(1), segment(0)))
    overlapping = SnapshotSegment(Range(DAY // 2, DAY + DAY // 2), "sha256:" + "c" * 64, 1)
    with pytest.raises(ValueError, match="overlapping"):
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), overlapping))
    with pytest.raises(ValueError, match="ending later"):
        Snapshot(NODE, 60, "v2", DAY, (segment(0), segment(1)))


def test_uncovered_names_holes_and_the_part_after_as_of() -> None:
    snapshot = Snapshot(NODE, 60, "v2", 3 * DAY, (segment(0), segment(2)))
    assert snapshot.uncovered(Range(0, 4 * DAY)) == [Range(DAY, 2 * DAY), Range(3 * DAY, 4 * DAY)]
    assert snapshot.uncovered(Range(10, 20)) == []
    assert [s.range.start for s in snapshot.segments_overlapping(Range(DAY, 3 * DAY))] == [2 * DAY]


@given(st.lists(st.integers(0, 100), unique=True, max_size=8), st.integers(-5, 110))
def test_resolve_picks_the_latest_at_or_before(as_ofs: list[int], wanted: int) -> None:
    found = resolve_as_of(sorted(as_ofs), wanted)
    earlier = [a for a in as_ofs if a <= wanted]
    assert found == (max(earlier) if earlier else None)


def test_parse_as_of_forms() -> None:
    expected = 1_709_251_200  # 2024-03-01T00:00:00Z
    assert parse_as_of("2024-03-01T00:00:00Z") == expected
    assert parse_as_of("2024-03-01T01:00:00+01:00") == expected
    assert parse_as_of("2024-03-01") == expected
    assert parse_as_of(datetime(2024, 3, 1, tzinfo=UTC)) == expected
    assert parse_as_of(datetime(2024, 3, 1)) == expected
    assert parse_as_of(expected) == expected
    assert parse_as_of(str(expected)) == expected
    for bad in ("yesterday", True, None):
        with pytest.raises(ValueError, match="as_of"):
            parse_as_of(bad)  # type: ignore[arg-type]


def test_diff_segments_lists_changed_added_removed_partitions() -> None:
    a = Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), segment(1)))
    b = Snapshot(NODE, 60, "v2", 3 * DAY, (segment(0, "b"), segment(2)))
    changes = diff_segments(a, b)
    assert [(c.range.start // DAY, c.before, c.after) for c in changes] == [
        (0, "sha256:" + "a" * 64, "sha256:" + "b" * 64),
        (1, "sha256:" + "a" * 64, None),
        (2, None, "sha256:" + "a" * 64),
    ]
    assert diff_segments(a, a) == []


def frame(ts: list[int], close: list[float]) -> pd.DataFrame:
    values = np.asarray(close, dtype=np.float64)
    return pd.DataFrame(
        {
            "ts": np.asarray(ts, dtype=np.int64),
            "open": values,
            "high": values,
            "low": values,
            "close": values,
            "volume": np.ones(len(ts)),
        }
    )


def test_diff_bars_lists_exactly_the_changed_bars() -> None:
    before = frame([0, 60, 120, 180], [1.0, 2.0, np.nan, 4.0])
    after = frame([60, 120, 180, 240], [2.0, np.nan, 4.5, 5.0])
    diff = diff_bars(before, after)
    assert diff["ts"].tolist() == [0, 180, 240]
    assert diff["change"].tolist() == ["removed", "changed", "added"]
    assert diff.loc[1, "close_before"] == 4.0 and diff.loc[1, "close_after"] == 4.5
    assert diff_bars(before, before).empty
