"""Event segment manifests: a pure, deterministic function of rows, identity and account;
no wall clock; the identity they declare round-trips; every derivable field is checked."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from seamless_assets.core.event_manifest import (
    EVENT_MANIFEST_VERSION,
    EventIdentity,
    build_event_manifest,
    event_fingerprint,
    event_frame_problems,
    event_identity,
    event_manifest_problems,
    identity_from_event_manifest,
    is_event_manifest,
)
from seamless_assets.core.event_rows import table_fingerprint
from seamless_assets.core.frame import Range
from seamless_assets.core.funding import conform_funding
from seamless_assets.event_nodes import EventNodeId

T0 = 1_569_888_000  # 2019-10-01T00:00Z
DAY = 86_400
H = 3600
WINDOW = Range(T0, T0 + DAY)
FUNDING = EventNodeId.parse("funding:binance:BTC/USDT:USDT")
TRADES = EventNodeId.parse("trades:binance:BTC/USDT")


def funding() -> pd.DataFrame:
    rows = [
        {"timestamp": (T0 + 8 * H * i) * 1000 + i, "fundingRate": 0.0001 * (i + 1), "info": {}}
        for i in range(3)
    ]
    rows[1]["info"] = {"markPrice": "8300.5"}
    return conform_funding(rows, WINDOW).frame


def trades() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.array([7, 5, 9], dtype=np.int64),
            "ts": np.array([T0 * 1000 + 1, T0 * 1000 + 2, T0 * 1000 + 2], dtype=np.int64),
            "price": [100.0, 100.5, 99.5],
            "amount": [0.5, 0.0, 2.0],
            "side": np.array([1, -1, 0], dtype=np.int8),
        }
    )


def build(node: EventNodeId = FUNDING, frame: pd.DataFrame | None = None, **kw: Any) -> dict:
    frame = (funding() if node.kind == "funding" else trades()) if frame is None else frame
    return build_event_manifest(
        node,
        kw.pop("window", WINDOW),
        frame,
        conformance_version=kw.pop("conformance_version", "v1"),
        flags=kw.pop("flags", {"duplicate_ts": 1, "dtype_cast": 0}),
        answered=kw.pop("answered", [WINDOW]),
        sources=kw.pop("sources", None),
    )


def encoded(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=2, allow_nan=False).encode()


def test_fields() -> None:
    manifest = build()
    assert manifest["manifest_version"] == EVENT_MANIFEST_VERSION
    assert manifest["node_id"] == str(FUNDING) and manifest["kind"] == "funding"
    assert manifest["range"] == WINDOW.to_json()
    assert manifest["columns"] == [
        ["ts", "int64"],
        ["funding_rate", "float64"],
        ["mark_price", "float64"],
    ]
    assert manifest["row_count"] == 3
    assert manifest["first_ts"] == T0 * 1000 and manifest["last_ts"] == (T0 + 16 * H) * 1000 + 2
    assert manifest["conformance"] == {
        "version": "v1",
        "flags": {"dtype_cast": 0, "duplicate_ts": 1},
    }
    assert manifest["coverage"] == {"answered": [[T0, T0 + DAY]], "ratio": 1.0}
    assert manifest["provenance"] == {"rows_by_source": {"rest": 3}}
    assert manifest["fingerprint"] == event_fingerprint(FUNDING, funding(), WINDOW, "v1")
    assert is_event_manifest(manifest) and not is_event_manifest({"node_id": "x"})


def test_fingerprint_is_the_table_fingerprint_of_the_identity() -> None:
    frame = trades()
    identity = {
        "node_id": str(TRADES),
        "kind": "trades",
        "range": WINDOW,
        "conformance_version": "v1",
    }
    assert event_identity(TRADES, WINDOW, "v1") == identity
    spec = TRADES.spec
    assert event_fingerprint(TRADES, frame, WINDOW, "v1") == table_fingerprint(
        frame, spec.columns, spec.dtypes, identity
    )
    others = {
        event_fingerprint(TRADES, frame, WINDOW, "v2"),
        event_fingerprint(EventNodeId.parse("trades:bybit:BTC/USDT"), frame, WINDOW, "v1"),
        event_fingerprint(TRADES, frame, Range(T0, T0 + 2 * DAY), "v1"),
        event_fingerprint(TRADES, frame.assign(side=np.int8(0)), WINDOW, "v1"),
    }
    assert event_fingerprint(TRADES, frame, WINDOW, "v1") not in others and len(others) == 4


def test_deterministic_whatever_order_the_inputs_come_in() -> None:
    first = build(
        flags={"b": 2, "a": 1},
        answered=[Range(T0 + 12 * H, T0 + DAY + H), Range(T0 - H, T0 + 6 * H), Range(T0, T0 + H)],
        sources={"rest": 2, "archive": 1},
    )
    second = build(
        flags={"a": 1, "b": 2},
        answered=[Range(T0 - H, T0 + H), Range(T0 + H, T0 + 6 * H), Range(T0 + 12 * H, T0 + DAY)],
        sources={"archive": 1, "rest": 2},
    )
    assert first == second and encoded(first) == encoded(second)
    assert list(first["conformance"]["flags"]) == ["a", "b"]
    assert first["coverage"] == {
        "answered": [[T0, T0 + 6 * H], [T0 + 12 * H, T0 + DAY]],
        "ratio": 0.75,
    }
    assert build(frame=funding().copy()) == build()


def test_no_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    before = encoded(build())
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)
    assert encoded(build()) == before
    today = datetime.now(tz=UTC).strftime("%Y-%m-%d")
    assert today.encode() not in before
    stamps = set(re.findall(rb"\d{4}-\d{2}-\d{2}T[0-9:]+Z", before))
    assert stamps == {b"2019-10-01T00:00:00Z", b"2019-10-02T00:00:00Z"}  # the range, no more


@pytest.mark.parametrize("node", [FUNDING, TRADES], ids=["funding", "trades"])
def test_identity_round_trip(node: EventNodeId) -> None:
    manifest = build(node, conformance_version="v7")
    identity = identity_from_event_manifest(json.loads(encoded(manifest)))
    assert identity == EventIdentity(str(node), WINDOW, "v7")
    node_id, window, version = identity
    frame = funding() if node.kind == "funding" else trades()
    rebuilt = event_fingerprint(EventNodeId.parse(node_id), frame, window, version)
    assert rebuilt == manifest["fingerprint"]
    assert event_manifest_problems(manifest, frame) == []


@pytest.mark.parametrize(
    "change",
    [
        {"node_id": None},
        {"node_id": "ohlcv:binance:BTC/USDT:1h"},
        {"kind": "trades"},
        {"range": {"start": T0}},
        {"range": {"start": T0 + 1, "end": T0}},
        {"conformance": {"flags": {}}},
        {"conformance": {"version": 1}},
        {"manifest_version": 99},
        {"manifest_version": None},
    ],
)
def test_malformed_identity_is_a_value_error(change: dict[str, Any]) -> None:
    manifest = {k: v for k, v in {**build(), **change}.items() if v is not None}
    with pytest.raises(ValueError, match="event manifest needs"):
        identity_from_event_manifest(manifest)
    problems = event_manifest_problems(manifest, funding())
    assert len(problems) == 1 and problems[0].startswith("manifest is malformed")


def test_an_empty_partition() -> None:
    manifest = build(TRADES, TRADES.spec.empty(), answered=[Range(T0, T0 + 6 * H)])
    assert manifest["row_count"] == 0
    assert manifest["first_ts"] is None and manifest["last_ts"] is None
    assert manifest["provenance"] == {"rows_by_source": {"rest": 0}}
    assert manifest["coverage"] == {"answered": [[T0, T0 + 6 * H]], "ratio": 0.25}
    assert event_manifest_problems(manifest, TRADES.spec.empty()) == []


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="sources count 2 rows"):
        build(sources={"rest": 2})
    with pytest.raises(ValueError, match="negative"):
        build(flags={"gap": -1})
    with pytest.raises(ValueError, match="integer counts"):
        build(flags={"gap": True})
    late = funding()
    late.loc[2, "ts"] = WINDOW.end * 1000
    with pytest.raises(ValueError, match="outside"):
        build(frame=late)
    with pytest.raises(ValueError, match="exactly"):
        build(frame=funding().astype({"ts": "int32"}))


def test_frame_problems() -> None:
    spec = TRADES.spec
    assert event_frame_problems(spec, trades(), WINDOW) == []
    unsorted = trades().iloc[[1, 0, 2]].reset_index(drop=True)
    assert any("sorted" in p for p in event_frame_problems(spec, unsorted, WINDOW))
    repeated = trades().assign(id=np.array([5, 5, 9], dtype=np.int64))
    assert any("repeat" in p for p in event_frame_problems(spec, repeated, WINDOW))
    # Sorted by (ts, id): equal instants order by id; ids need not be sorted overall.
    assert event_frame_problems(spec, trades().assign(id=np.array([9, 1, 2])), WINDOW) == []
    swapped = trades().assign(id=np.array([9, 2, 1]))
    assert any("sorted" in p for p in event_frame_problems(spec, swapped, WINDOW))
    early = trades().assign(ts=trades()["ts"] - 2)
    assert any("outside" in p for p in event_frame_problems(spec, early, WINDOW))
    retyped = trades().astype({"side": "int64"})
    assert event_frame_problems(spec, retyped, WINDOW)[0].startswith("columns")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("row_count", 4),
        ("first_ts", 0),
        ("last_ts", None),
        ("fingerprint", "sha256:" + "0" * 64),
        ("columns", [["ts", "int64"]]),
        ("coverage", {"answered": [[T0, T0 + DAY]], "ratio": 0.5}),
        ("coverage", {"answered": [[T0 - H, T0 + DAY]], "ratio": 1.0}),
        ("coverage", {"answered": "all"}),
        ("provenance", {"rows_by_source": {"rest": 2}}),
        ("provenance", {"rows_by_source": {"rest": -3, "archive": 6}}),
        ("provenance", None),
        ("conformance", {"version": "v1", "flags": {"gap": "many"}}),
    ],
)
def test_every_derivable_field_is_checked(field: str, value: object) -> None:
    manifest = {**build(), field: value}
    problems = event_manifest_problems(manifest, funding())
    assert problems, f"{field}={value!r} went unnoticed"


def test_problems_of_other_rows() -> None:
    manifest = build()
    other = funding().assign(funding_rate=0.0)
    assert any(p.startswith("fingerprint") for p in event_manifest_problems(manifest, other))
    assert event_manifest_problems(manifest, other, check_fingerprint=False) == []
