"""`seamless verify` checks every manifest field derivable from the segment and its ledger
section, on every artifact backend (`artifact_store` runs the directory and S3 stores)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from resources.artifacts import ArtifactStore
from seamless_assets.core.coverage import LedgerGap
from seamless_assets.core.flag_ledger import FlagEvent
from seamless_assets.core.frame import Range
from seamless_assets.core.manifest import ManifestIdentity, build_manifest
from seamless_assets.nodes import NodeId

from .conftest import DAY, T0, BarsFactory

NODE = NodeId.parse("ohlcv:binance:BTC/USDT:1h")
HOUR = 3600
DAY1 = Range(T0, T0 + DAY)


def identity(window: Range = DAY1) -> ManifestIdentity:
    return ManifestIdentity(
        node_id=str(NODE),
        exchange=NODE.exchange,
        symbol=NODE.symbol,
        timeframe=NODE.timeframe.code,
        interval_s=NODE.interval_s,
        origin_s=NODE.timeframe.origin_s,
        window=window,
        conformance_version="v2",
        stabilization_bars=2,
        producer="seamless@test",
    )


def publish(store: ArtifactStore, bars: BarsFactory) -> tuple[pd.DataFrame, dict[str, Any], str]:
    """A day with a confirmed-empty hole, a bar missing and flag events; its manifest key."""
    frame = bars(T0, 24, interval_s=HOUR)
    frame = frame[~frame["ts"].isin([T0 + 3 * HOUR, T0 + 4 * HOUR, T0 + 9 * HOUR])]
    frame = frame.reset_index(drop=True)
    gaps = [LedgerGap(Range(T0 + 3 * HOUR, T0 + 5 * HOUR), "exchange_returned_no_bars")]
    events = [FlagEvent(T0 + HOUR, "duplicate_ts", 2), FlagEvent(T0 + 9 * HOUR, "non_finite")]
    manifest = build_manifest(identity(), frame, gaps, events)
    store.publish(NODE, frame, manifest)
    directory = f"{store.segment_prefix(NODE)}/segments/sha256-{manifest['fingerprint'][7:]}"
    return frame, manifest, f"{directory}/manifest.json"


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(manifest: dict[str, Any]) -> None:
        node = manifest
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


TAMPERINGS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "row_count": (_set("row_count", 24), "row_count"),
    "coverage.ratio": (_set("coverage.ratio", 1.0), "coverage.ratio"),
    "coverage.completeness": (_set("coverage.completeness", 1.0), "coverage.completeness"),
    "coverage.expected_bars": (_set("coverage.expected_bars", 23), "coverage.expected_bars"),
    "coverage.bounds": (_set("coverage.bounds", [T0 + HOUR, T0 + DAY]), "coverage.bounds"),
    "coverage.missing": (_set("coverage.missing", []), "coverage.missing"),
    "flag count": (_set("conformance.flags.duplicate_ts", 0), "conformance.flags.duplicate_ts"),
    "gap count": (_set("conformance.flags.gap", 0), "conformance.flags.gap"),
    "new flag": (_set("conformance.flags.ohlc_inconsistent", 5), "ohlc_inconsistent"),
    "event count": (
        _set(
            "conformance.events", [[T0 + HOUR, "duplicate_ts", 3], [T0 + 9 * HOUR, "non_finite", 1]]
        ),
        "conformance.flags.duplicate_ts",
    ),
    "ledger gap widened": (
        _set(
            "gaps",
            [
                {
                    "start": T0 + 3 * HOUR,
                    "end": T0 + 10 * HOUR,
                    "reason": "exchange_returned_no_bars",
                }
            ],
        ),
        "coverage.completeness",
    ),
    "as_of": (_set("as_of", "2030-01-01T00:00:00Z"), "as_of"),
    "symbol": (_set("symbol", "ETH/USDT"), "node_id"),
    "fingerprint-free field dropped": (lambda m: m.pop("coverage"), "coverage.ratio"),
    "provenance claimed": (
        lambda m: m["provenance"]["bars"].update(rest=0, archive=21),
        "provenance.bars",
    ),
    "provenance dropped": (lambda m: m.pop("provenance"), "provenance.bars"),
}


def test_an_honest_manifest_verifies_and_states_its_ledger(
    artifact_store: ArtifactStore, bars: BarsFactory
) -> None:
    _, manifest, _ = publish(artifact_store, bars)
    assert artifact_store.verify_all() == []
    assert manifest["manifest_version"] == 3
    assert manifest["row_count"] == 21
    assert manifest["provenance"]["bars"]["rest"] == 21  # no other source's events
    assert manifest["conformance"]["flags"]["duplicate_ts"] == 2
    assert manifest["conformance"]["flags"]["non_finite"] == 1
    assert manifest["conformance"]["flags"]["gap"] == 3  # two confirmed empty + one missing
    assert manifest["coverage"]["completeness"] == round(23 / 24, 6)
    assert [m["start"] for m in manifest["coverage"]["missing"]] == [T0 + 9 * HOUR]


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_an_edited_manifest_field_is_reported_with_its_path(
    artifact_store: ArtifactStore, bars: BarsFactory, tampering: str
) -> None:
    _, manifest, key = publish(artifact_store, bars)
    edit, field = TAMPERINGS[tampering]
    edited = json.loads(json.dumps(manifest))
    edit(edited)
    artifact_store.blobs.put(key, json.dumps(edited, sort_keys=True, indent=2).encode())
    problems = artifact_store.verify_all()
    assert [(p.kind, p.uri) for p in problems] == [
        ("manifest_mismatch", artifact_store.blobs.uri(key))
    ]
    assert field in problems[0].detail


# The manifest the pipeline wrote before manifest_version 2 (flags from the producing run).
V1_MANIFEST = {
    "as_of": "2024-01-02T00:00:00Z",
    "columns": [
        ["ts", "int64"],
        ["open", "float64"],
        ["high", "float64"],
        ["low", "float64"],
        ["close", "float64"],
        ["volume", "float64"],
    ],
    "conformance": {"flags": {"duplicate_ts": 1, "gap": 0}, "version": "v2"},
    "exchange": "binance",
    "format": {"compression": "zstd", "file": "data.parquet", "type": "parquet"},
    "gaps": [],
    "interval_s": 3600,
    "manifest_version": 1,
    "node_id": "ohlcv:binance:BTC/USDT:1h",
    "producer": {"exchange": "binance", "identity": "seamless@0.1.0", "source": "ccxt"},
    "stabilization_bars": 2,
    "symbol": "BTC/USDT",
    "timeframe": "1h",
}


def _v1(frame: pd.DataFrame) -> dict[str, Any]:
    manifest = build_manifest(identity(), frame, [], [])
    ts = frame["ts"].to_numpy()
    return {
        **V1_MANIFEST,
        "fingerprint": manifest["fingerprint"],
        "range": DAY1.to_json(),
        "row_count": len(frame),
        "coverage": {
            "bounds": [int(ts[0]), int(ts[-1]) + HOUR],
            "completeness": round(len(ts) / 24, 6),
            "expected_bars": 24,
            "missing": manifest["coverage"]["missing"],
            "ratio": round(len(ts) / 24, 6),
        },
    }


@pytest.mark.parametrize("drop", [(), (5,), (0, 23)])
def test_version_1_manifests_still_verify_on_what_they_can_prove(
    artifact_store: ArtifactStore, bars: BarsFactory, drop: tuple[int, ...]
) -> None:
    frame = bars(T0, 24, interval_s=HOUR)
    frame = frame.drop(index=list(drop)).reset_index(drop=True)
    manifest = _v1(frame)
    artifact_store.publish(NODE, frame, manifest)
    assert manifest["as_of"] == "2024-01-02T00:00:00Z"
    assert artifact_store.verify_all() == []  # v1 flag counts are not judged
    pd.testing.assert_frame_equal(artifact_store.read_range(NODE, DAY1), frame)
    key = next(k for k in artifact_store.blobs.list("") if k.endswith("manifest.json"))
    artifact_store.blobs.put(
        key, json.dumps({**manifest, "row_count": 24 - len(drop) + 1}).encode()
    )
    assert [p.kind for p in artifact_store.verify_all()] == ["manifest_mismatch"]


def test_flags_of_version_2_require_their_events(bars: BarsFactory) -> None:
    from seamless_assets.core.manifest import manifest_problems

    frame = bars(T0, 24, interval_s=HOUR)
    manifest = build_manifest(identity(), frame, [], [FlagEvent(T0, "ts_cast", 4)])
    assert manifest_problems(manifest, frame) == []
    del manifest["conformance"]["events"]
    assert any("ts_cast" in p for p in manifest_problems(manifest, frame))
    assert manifest_problems(manifest, frame.iloc[1:].reset_index(drop=True))  # other bars
    shifted = frame.assign(ts=frame["ts"] + 1)
    assert any(
        "grid" in p for p in manifest_problems(build_manifest(identity(), frame, [], []), shifted)
    )
    assert np.all(frame["ts"].to_numpy() % HOUR == 0)
