"""Inline asset checks of an OHLCV node, evaluated on the bars read back from the store."""

from __future__ import annotations

import dagster as dg
import numpy as np

from .core.frame import TS
from .pipeline import RunOutcome

COVERAGE = "coverage_ratio"
NO_DUPLICATES = "no_duplicate_ts"
MONOTONIC = "monotonic_ts"
OHLC_SANITY = "ohlc_sanity"


def check_specs(asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            COVERAGE,
            asset=asset_key,
            description="Stored bars / expected bars in the materialized window ≥ threshold; "
            "known exchange gaps are listed with their reasons.",
        ),
        dg.AssetCheckSpec(NO_DUPLICATES, asset=asset_key, description="One bar per ts."),
        dg.AssetCheckSpec(MONOTONIC, asset=asset_key, description="ts strictly increasing."),
        dg.AssetCheckSpec(
            OHLC_SANITY,
            asset=asset_key,
            description="high ≥ max(open, close, low), low ≤ min(open, close), volume ≥ 0, "
            "all values finite.",
        ),
    ]


def check_results(outcome: RunOutcome, threshold: float) -> list[dg.AssetCheckResult]:
    frame = outcome.frame
    ts = frame[TS].to_numpy()
    o, h, lo, c, v = (frame[col].to_numpy() for col in ("open", "high", "low", "close", "volume"))
    diffs = np.diff(ts)
    duplicates = int((diffs == 0).sum())
    out_of_order = int((diffs < 0).sum())
    finite = np.isfinite(frame[["open", "high", "low", "close", "volume"]].to_numpy()).all(axis=1)
    insane = ~finite | (h < np.maximum(np.maximum(o, c), lo)) | (lo > np.minimum(o, c)) | (v < 0)
    gaps = [g for p in outcome.partitions for g in p.gaps]
    missing = [m for p in outcome.partitions for m in p.missing]
    ratio = outcome.coverage_ratio
    return [
        dg.AssetCheckResult(
            check_name=COVERAGE,
            passed=ratio >= threshold,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "coverage_ratio": round(ratio, 6),
                "threshold": threshold,
                "known_gaps": [f"{g.range} {g.reason}" for g in gaps[:50]],
                "missing_ranges": [str(m) for m in missing[:50]],
            },
        ),
        dg.AssetCheckResult(
            check_name=NO_DUPLICATES,
            passed=duplicates == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"duplicate_ts": duplicates},
        ),
        dg.AssetCheckResult(
            check_name=MONOTONIC,
            passed=out_of_order == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"out_of_order": out_of_order},
        ),
        dg.AssetCheckResult(
            check_name=OHLC_SANITY,
            passed=int(insane.sum()) == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"bad_rows": int(insane.sum())},
        ),
    ]
