"""Manifests are a function of bars, the window's ledger and identity: properties.

Same bars + ledger => same bytes, whatever the history that recorded them (events split
over several fetches, ledger entries recorded in pieces, the whole node's ledger or just
the window's, another frame object); every derived field recomputes from the manifest and
the segment; any edit of a derivable field is caught.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.core.conformance import FLAGS, GAP
from seamless_assets.core.coverage import (
    REASON_BEFORE_LISTING,
    REASON_NO_BARS,
    LedgerGap,
    merge_ranges,
)
from seamless_assets.core.flag_ledger import FlagEvent, merge_events
from seamless_assets.core.frame import VALUE_COLUMNS, Range, frame_from_arrays
from seamless_assets.core.manifest import (
    ManifestIdentity,
    build_manifest,
    manifest_problems,
)

INTERVAL = 60
T0 = 1_704_067_200
ROW_FLAGS = [f for f in FLAGS if f != GAP]


def identity(window: Range) -> ManifestIdentity:
    return ManifestIdentity(
        node_id="ohlcv:binance:BTC/USDT:1m",
        exchange="binance",
        symbol="BTC/USDT",
        timeframe="1m",
        interval_s=INTERVAL,
        origin_s=0,
        window=window,
        conformance_version="v2",
        stabilization_bars=2,
        producer="seamless@test",
    )


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=2, allow_nan=False).encode()


@st.composite
def segments(draw: st.DrawFn) -> tuple[Range, pd.DataFrame, list[LedgerGap], list[FlagEvent]]:
    """A window of n bars, some present; ledger gaps over absent slots; flag events."""
    n = draw(st.integers(1, 48))
    window = Range(T0, T0 + n * INTERVAL)
    present = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    slots = np.flatnonzero(present)
    ts = T0 + slots.astype(np.int64) * INTERVAL
    price = draw(st.floats(1.0, 1e6))
    values = {c: np.full(len(ts), price) for c in VALUE_COLUMNS}
    values["volume"] = np.arange(len(ts), dtype=np.float64)
    frame = frame_from_arrays(ts, values)
    absent = [int(i) for i in np.flatnonzero(~np.asarray(present, dtype=bool))]
    gaps = []
    for i in draw(st.lists(st.sampled_from(absent), unique=True)) if absent else []:
        reason = REASON_BEFORE_LISTING if i < (slots[0] if len(slots) else n) else REASON_NO_BARS
        gaps.append(LedgerGap(Range(T0 + i * INTERVAL, T0 + (i + 1) * INTERVAL), reason))
    events = [
        FlagEvent(T0 + i * INTERVAL, flag, count)
        for i, flag, count in draw(
            st.lists(
                st.tuples(st.integers(0, n - 1), st.sampled_from(ROW_FLAGS), st.integers(1, 3)),
                max_size=12,
            )
        )
    ]
    return window, frame, gaps, merge_events(events)


def _split(events: list[FlagEvent], rng: random.Random) -> list[FlagEvent]:
    """The same findings as several fetches could have reported them: counts split."""
    out = []
    for e in events:
        parts = rng.randint(1, e.count)
        cuts = sorted(rng.sample(range(1, e.count), parts - 1)) if parts > 1 else []
        bounds = [0, *cuts, e.count]
        out += [FlagEvent(e.ts, e.flag, b - a) for a, b in itertools.pairwise(bounds)]
    rng.shuffle(out)
    return out


@settings(max_examples=150, deadline=None)
@given(segments(), st.randoms(use_true_random=False))
def test_same_bars_and_ledger_give_the_same_bytes_whatever_the_history(
    segment: tuple[Range, pd.DataFrame, list[LedgerGap], list[FlagEvent]], rng: random.Random
) -> None:
    window, frame, gaps, events = segment
    # The ledger as a store holds it: same-reason entries that touch are one entry.
    stored = [
        LedgerGap(r, reason)
        for reason in {g.reason for g in gaps}
        for r in merge_ranges(g.range for g in gaps if g.reason == reason)
    ]
    reference = encode(build_manifest(identity(window), frame, stored, events))
    # Another history of the same state: events reported in pieces and out of order,
    # ledger recorded as one-bar fragments in another order plus entries of neighbouring
    # windows, events of other windows in the node's ledger, another (equal) frame object.
    pieces = list(gaps)
    rng.shuffle(pieces)
    neighbours = [
        LedgerGap(Range(window.start - 600, window.start), REASON_BEFORE_LISTING),
        LedgerGap(Range(window.end, window.end + 600), REASON_NO_BARS),
    ]
    outside = [FlagEvent(window.end, "duplicate_ts", 2), FlagEvent(window.start - 60, "ts_cast")]
    copy = frame.iloc[::-1].sort_values("ts").copy()
    copy.index = np.arange(len(copy)) + 7
    again = build_manifest(
        identity(window), copy, [*pieces, *neighbours], [*_split(events, rng), *outside]
    )
    assert encode(again) == reference


@settings(max_examples=150, deadline=None)
@given(segments())
def test_every_derived_field_recomputes_from_the_segment_and_its_ledger_section(
    segment: tuple[Range, pd.DataFrame, list[LedgerGap], list[FlagEvent]],
) -> None:
    window, frame, gaps, events = segment
    manifest = json.loads(encode(build_manifest(identity(window), frame, gaps, events)))
    assert manifest_problems(manifest, frame) == []
    # The counts mean what the module says, checked slot by slot.
    n = window.bars(INTERVAL)
    present = set((frame["ts"].to_numpy() - T0) // INTERVAL)
    before_listing = {
        (s - T0) // INTERVAL
        for g in gaps
        if g.reason == REASON_BEFORE_LISTING
        for s in range(g.range.start, g.range.end, INTERVAL)
    }
    flags = manifest["conformance"]["flags"]
    assert flags[GAP] == sum(1 for i in range(n) if i not in present and i not in before_listing)
    for flag in ROW_FLAGS:
        assert flags[flag] == sum(e.count for e in events if e.flag == flag)
    assert manifest["row_count"] == len(frame)
    assert manifest["coverage"]["expected_bars"] == n
    known = present | {(s - T0) // INTERVAL for g in gaps for s in range(*_span(g))}
    assert manifest["coverage"]["completeness"] == round(len(known) / n, 6)


def _span(gap: LedgerGap) -> tuple[int, int, int]:
    return gap.range.start, gap.range.end, INTERVAL


EDITS = [
    ("row_count", lambda m: m.__setitem__("row_count", m["row_count"] + 1)),
    ("coverage.ratio", lambda m: m["coverage"].__setitem__("ratio", m["coverage"]["ratio"] / 2)),
    (
        "coverage.expected_bars",
        lambda m: m["coverage"].__setitem__("expected_bars", m["coverage"]["expected_bars"] + 1),
    ),
    ("flag", lambda m: m["conformance"]["flags"].__setitem__("non_finite", 99)),
    (
        "gap",
        lambda m: m["conformance"]["flags"].__setitem__(GAP, m["conformance"]["flags"][GAP] + 1),
    ),
    ("event", lambda m: m["conformance"]["events"].append([m["range"]["start"], "ts_cast", 1])),
    ("range", lambda m: m["range"].__setitem__("end", m["range"]["end"] + INTERVAL)),
    ("missing", lambda m: m["coverage"].__setitem__("missing", [m["range"]])),
]


@settings(max_examples=100, deadline=None)
@given(segments(), st.sampled_from(EDITS))
def test_any_edit_of_a_derivable_field_is_a_problem(
    segment: tuple[Range, pd.DataFrame, list[LedgerGap], list[FlagEvent]], edit: Any
) -> None:
    window, frame, gaps, events = segment
    manifest = json.loads(encode(build_manifest(identity(window), frame, gaps, events)))
    name, change = edit
    before = encode(manifest)
    change(manifest)
    if encode(manifest) == before:  # e.g. a ratio of 0 halved, missing already [range]
        return
    assert manifest_problems(manifest, frame), name


def test_a_version_1_manifest_is_judged_on_what_it_states() -> None:
    window = Range(T0, T0 + 10 * INTERVAL)
    ts = T0 + np.arange(10, dtype=np.int64) * INTERVAL
    frame = frame_from_arrays(ts, {c: np.ones(10) for c in VALUE_COLUMNS})
    v2 = build_manifest(identity(window), frame, [], [])
    v1 = {k: v for k, v in v2.items() if k not in ("origin_s", "manifest_version")}
    v1["conformance"] = {"version": "v2", "flags": {"gap": 3, "duplicate_ts": 7}}  # unprovable
    assert manifest_problems(v1, frame) == []
    assert manifest_problems({**v1, "row_count": 9}, frame) != []
    minimal = {k: v1[k] for k in ("node_id", "interval_s", "range", "conformance", "fingerprint")}
    assert manifest_problems(minimal, frame) == []
    assert manifest_problems({**minimal, "manifest_version": 3}, frame) != []
    assert any("missing" in p for p in manifest_problems({**v2, "coverage": {}}, frame))


@st.composite
def coverage_cases(draw: Any) -> tuple[np.ndarray, Range, int, int, list[Any]]:
    """Bars of a window, most often one in every slot (the fast path), with the near
    misses around it: a slot short, one extra, off the grid, shifted, a window off the
    origin, a ledger gap over bars."""
    from seamless_assets.core.coverage import REASON_BEFORE_LISTING, REASON_NO_BARS, LedgerGap

    interval = draw(st.sampled_from([60, 300, 3600, 86_400]))
    origin = draw(st.sampled_from([0, 0, 4 * 86_400, 30]))
    slots = draw(st.integers(1, 30))
    start = T0 + draw(st.integers(-3, 3)) * interval + draw(st.sampled_from([0, 0, 0, 7]))
    window = Range(start, start + slots * interval + draw(st.sampled_from([0, 0, 1, -1, 29])))
    first = -(-(window.start - origin) // interval) * interval + origin
    grid = np.arange(first, window.end, interval, dtype=np.int64)
    ts = grid.copy()
    edit = draw(st.sampled_from(["none", "none", "drop", "shift", "off_grid", "extra"]))
    if edit == "drop" and len(ts):
        ts = np.delete(ts, draw(st.integers(0, len(ts) - 1)))
    elif edit == "shift":
        ts = ts + interval
    elif edit == "off_grid" and len(ts):
        ts[draw(st.integers(0, len(ts) - 1))] += 1
        ts = np.unique(ts)
    elif edit == "extra":
        ts = np.append(ts, ts[-1] + interval) if len(ts) else ts
    gaps = []
    lo = window.start + draw(st.integers(0, slots)) * interval
    if draw(st.booleans()) and lo < window.end:
        reason = draw(st.sampled_from([REASON_BEFORE_LISTING, REASON_NO_BARS]))
        gaps.append(LedgerGap(Range(lo, min(window.end, lo + 2 * interval)), reason))
    return ts, window, interval, origin, gaps


@settings(max_examples=400, deadline=None)
@given(coverage_cases())
def test_a_window_with_a_bar_in_every_slot_is_reckoned_as_the_general_path_does(
    case: tuple[np.ndarray, Range, int, int, list[Any]],
) -> None:
    """`segment_coverage`'s shortcut for a bar in every slot gives exactly what the general
    reckoning gives, and is not taken for anything else."""
    from unittest import mock

    import seamless_assets.core.manifest as manifest

    ts, window, interval, origin, gaps = case
    got = manifest.segment_coverage(ts, window, interval, origin, gaps)
    with mock.patch.object(manifest, "_every_slot", return_value=False):
        general = manifest.segment_coverage(ts, window, interval, origin, gaps)
    assert got == general
