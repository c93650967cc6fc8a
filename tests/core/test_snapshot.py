"""Snapshot values: fingerprints, manifests, resolution and diffs."""

from __future__ import annotations

import copy
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
    commit_as_of,
    diff_bars,
    diff_segments,
    manifest_digest,
    parse_as_of,
    published_set,
    resolve_as_of,
    unsnapshotted,
)

NODE = "ohlcv:binance:BTC/USDT:1m"
DAY = 86_400


def segment(day: int, tag: str = "a", rows: int = 1440) -> SnapshotSegment:
    return SnapshotSegment(
        Range(day * DAY, (day + 1) * DAY), "sha256:" + tag * 64, rows, manifest_digest(b"m")
    )


def test_build_commits_at_the_instant_and_records_watermark_and_missing() -> None:
    snapshot = build_snapshot(
        NODE, 60, "v2", [segment(3), segment(0), segment(1)], 9 * DAY, history_start_s=-DAY
    )
    assert snapshot is not None
    assert [s.range.start for s in snapshot.segments] == [0, DAY, 3 * DAY]
    assert snapshot.as_of_s == 9 * DAY and snapshot.as_of_iso == "1970-01-10T00:00:00Z"
    assert snapshot.watermark_s == 4 * DAY and snapshot.watermark_iso == "1970-01-05T00:00:00Z"
    assert snapshot.missing == (Range(-DAY, 0), Range(2 * DAY, 3 * DAY))
    assert snapshot.row_count == 3 * 1440
    # Without a history start, the first segment starts the node.
    plain = build_snapshot(NODE, 60, "v2", [segment(3), segment(0)], 9 * DAY)
    assert plain is not None and plain.missing == (Range(DAY, 3 * DAY),)
    assert build_snapshot(NODE, 60, "v2", [], 9 * DAY) is None


@given(st.integers(0, 10**10), st.one_of(st.none(), st.integers(0, 10**10)))
def test_commit_as_of_strictly_increases(now_s: int, previous_as_of: int | None) -> None:
    previous = (
        None
        if previous_as_of is None
        else Snapshot(NODE, 60, "v2", previous_as_of, (), watermark_s=0)
    )
    as_of = commit_as_of(now_s, previous)
    assert as_of >= now_s
    if previous is not None:
        assert as_of > previous.as_of_s


def test_published_set_and_unsnapshotted() -> None:
    heads = [(segment(d).range, segment(d).fingerprint) for d in range(4)]
    published = published_set(reversed(heads), 3 * DAY)
    assert published == heads[:3]
    previous = Snapshot(NODE, 60, "v2", 5 * DAY, (segment(0), segment(1, "b")))
    # Day 1 restated (another segment), day 2 new: both unsnapshotted; day 0 is listed.
    assert unsnapshotted(previous, published) == [segment(1).range, segment(2).range]
    assert unsnapshotted(None, published) == [r for r, _ in published]


def test_fingerprint_covers_every_field_and_round_trips() -> None:
    base = Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), segment(1)))
    digest = SnapshotSegment(segment(1).range, segment(1).fingerprint, 1440, manifest_digest(b"x"))
    variants = [
        Snapshot(NODE.replace("BTC", "ETH"), 60, "v2", 2 * DAY, base.segments),
        Snapshot(NODE, 30, "v2", 2 * DAY, base.segments),
        Snapshot(NODE, 60, "v3", 2 * DAY, base.segments),
        Snapshot(NODE, 60, "v2", 2 * DAY + 60, base.segments),
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), segment(1, "b"))),
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), segment(1, rows=1439))),
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(1),)),
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), digest)),
        Snapshot(NODE, 60, "v2", 3 * DAY, base.segments, watermark_s=3 * DAY),
        Snapshot(NODE, 60, "v2", 2 * DAY, base.segments, missing=(Range(-DAY, 0),)),
    ]
    prints = {base.fingerprint, *(v.fingerprint for v in variants)}
    assert len(prints) == len(variants) + 1
    for snapshot in (base, *variants):
        again = Snapshot.from_json(snapshot.to_json())
        assert again == snapshot and again.fingerprint == snapshot.fingerprint
    assert "published" not in str(base.to_json())  # no wall clock inside


# A version 1 snapshot manifest exactly as the previous code wrote it (as_of = watermark,
# no manifest digests, no missing): it must keep parsing with its own fingerprint.
V1_MANIFEST = {
    "as_of": "1970-01-03T00:00:00Z",
    "as_of_s": 172800,
    "conformance_version": "v2",
    "fingerprint": "sha256:1307aeff309d2471269129cc9de30f043ce0f784fc7cd50fce5f0e51af5d43a3",
    "interval_s": 60,
    "node_id": NODE,
    "segments": [
        {"end": 86400, "fingerprint": "sha256:" + "a" * 64, "row_count": 1440, "start": 0},
        {"end": 172800, "fingerprint": "sha256:" + "a" * 64, "row_count": 1440, "start": 86400},
    ],
    "snapshot_version": 1,
}


def test_version_1_manifests_keep_parsing() -> None:
    manifest = copy.deepcopy(V1_MANIFEST)
    snapshot = Snapshot.from_json(manifest)
    assert (snapshot.version, snapshot.as_of_s, snapshot.watermark_s) == (1, 2 * DAY, 2 * DAY)
    assert snapshot.missing == () and snapshot.fingerprint == manifest["fingerprint"]
    assert all(s.manifest_sha256 is None for s in snapshot.segments)
    assert snapshot.to_json() == manifest  # re-encodes to the very same content
    with pytest.raises(ValueError, match="hashes to"):
        Snapshot.from_json({**manifest, "as_of_s": 2 * DAY + 1})


def test_a_manifest_that_does_not_hash_to_its_fingerprint_is_refused() -> None:
    manifest = Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0),)).to_json()
    for field, value in (("row_count", 1), ("manifest_sha256", manifest_digest(b"y"))):
        edited = copy.deepcopy(manifest)
        edited["segments"][0][field] = value
        with pytest.raises(ValueError, match="hashes to"):
            Snapshot.from_json(edited)
    for field, value in (("watermark_s", 2 * DAY), ("missing", [{"start": 0, "end": 60}])):
        with pytest.raises(ValueError, match="hashes to"):
            Snapshot.from_json({**manifest, field: value})
    with pytest.raises(ValueError, match="missing a field"):
        Snapshot.from_json({"node_id": NODE, "snapshot_version": 2})


def test_segments_must_be_ordered_disjoint_and_within_the_watermark() -> None:
    with pytest.raises(ValueError, match="out of time order"):
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(1), segment(0)))
    overlapping = SnapshotSegment(
        Range(DAY // 2, DAY + DAY // 2), "sha256:" + "c" * 64, 1, manifest_digest(b"")
    )
    with pytest.raises(ValueError, match="overlapping"):
        Snapshot(NODE, 60, "v2", 2 * DAY, (segment(0), overlapping))
    with pytest.raises(ValueError, match="ending later"):
        Snapshot(NODE, 60, "v2", DAY, (segment(0), segment(1)))
    with pytest.raises(ValueError, match="ending later"):
        Snapshot(NODE, 60, "v2", 5 * DAY, (segment(0), segment(1)), watermark_s=DAY)
    with pytest.raises(ValueError, match="manifest digests"):
        Snapshot(NODE, 60, "v2", 2 * DAY, (SnapshotSegment(Range(0, DAY), "sha256:x", 1),))


def test_uncovered_names_holes_and_the_part_after_the_watermark() -> None:
    snapshot = Snapshot(NODE, 60, "v2", 9 * DAY, (segment(0), segment(2)))
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
