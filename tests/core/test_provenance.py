"""Provenance: events per partition and source, counted in manifests and verified."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.core.flag_ledger import FlagEvent
from seamless_assets.core.frame import VALUE_COLUMNS, Range, frame_from_arrays
from seamless_assets.core.manifest import build_manifest, manifest_problems
from seamless_assets.core.provenance import (
    SOURCES,
    bars_by_source,
    provenance_events,
    source_flag,
)

from .test_manifest import INTERVAL, T0, identity

PARTS = [Range(T0 + i * 10 * INTERVAL, T0 + (i + 1) * 10 * INTERVAL) for i in range(3)]


def test_one_event_per_partition_and_source_at_its_first_bar() -> None:
    ts = T0 + np.array([3, 4, 5, 12, 29], dtype=np.int64) * INTERVAL
    events = provenance_events(ts, "archive", PARTS)
    assert events == [
        FlagEvent(int(ts[0]), "from_archive", 3),
        FlagEvent(int(ts[3]), "from_archive", 1),
        FlagEvent(int(ts[4]), "from_archive", 1),
    ]
    assert provenance_events(ts, "rest", PARTS) == []  # what no event names came over REST
    assert bars_by_source(events, 7) == {
        "rest": 2,
        "archive": 5,
        "archive_checksum_mismatch": 0,
        "archive_checksum_absent": 0,
        "trades": 0,
    }
    with pytest.raises(ValueError, match="unknown bar source"):
        source_flag("carrier_pigeon")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(SOURCES), min_size=10, max_size=10))
def test_a_manifest_states_its_bars_by_source_and_verifies(sources: list[str]) -> None:
    """Any mix of sources over a window: the counts are the bars each gave, provenance
    events are not conformance flags, and a changed count is caught."""
    window = PARTS[0]
    ts = window.start + np.arange(10, dtype=np.int64) * INTERVAL
    frame = frame_from_arrays(ts, {c: np.ones(10) for c in VALUE_COLUMNS})
    events: list[FlagEvent] = []
    for source in set(sources) - {"rest"}:  # runs of one source: one event per run
        picked = ts[[s == source for s in sources]]
        events += provenance_events(picked, source, [window])
    manifest = build_manifest(identity(window), frame, [], events)
    bars = manifest["provenance"]["bars"]
    assert bars == {s: sources.count(s) for s in SOURCES}
    assert not any(f.startswith("from_") for f in manifest["conformance"]["flags"])
    assert manifest_problems(manifest, frame) == []
    if bars["rest"]:
        other = next(s for s in SOURCES if s != "rest")
        bars.update(rest=bars["rest"] - 1, **{other: bars[other] + 1})
        assert any("provenance.bars" in p for p in manifest_problems(manifest, frame))


def test_a_version_2_manifest_without_provenance_still_verifies() -> None:
    window = PARTS[0]
    ts = window.start + np.arange(10, dtype=np.int64) * INTERVAL
    frame = frame_from_arrays(ts, {c: np.ones(10) for c in VALUE_COLUMNS})
    v2 = build_manifest(identity(window), frame, [], [])
    v2 = {k: v for k, v in v2.items() if k != "provenance"} | {"manifest_version": 2}
    assert manifest_problems(v2, frame) == []
    assert manifest_problems(v2 | {"manifest_version": 3}, frame) != []
