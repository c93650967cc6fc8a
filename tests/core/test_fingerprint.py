"""Dataset fingerprints: same bars and identity give the same hash; anything else does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamless_assets.core.fingerprint import (
    FingerprintIdentity,
    canonical_column_bytes,
    combine_fingerprints,
    dataset_fingerprint,
    fingerprint_dirname,
)
from seamless_assets.core.frame import Range, frame_from_arrays

IDENTITY = FingerprintIdentity("ohlcv:binance:BTC/USDT:1m", 60, Range(0, 300), "v2")


def bars(n: int = 5) -> pd.DataFrame:
    ts = np.arange(n, dtype=np.int64) * 60
    base = 100.0 + np.arange(n)
    values = {
        "open": base,
        "high": base + 2,
        "low": base - 1,
        "close": base + 1,
        "volume": np.full(n, 3.5),
    }
    return frame_from_arrays(ts, values)


def test_same_bars_same_fingerprint() -> None:
    fp = dataset_fingerprint(bars(), IDENTITY)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    assert dataset_fingerprint(bars(), IDENTITY) == fp
    # Index, memory layout and extra-column order do not enter the hash.
    shuffled = bars().set_index(pd.Index([9, 8, 7, 6, 5]))
    assert dataset_fingerprint(shuffled, IDENTITY) == fp
    assert (
        dataset_fingerprint(bars()[["volume", "ts", "open", "high", "low", "close"]], IDENTITY)
        == fp
    )


@pytest.mark.parametrize("column", ["ts", "open", "high", "low", "close", "volume"])
def test_any_value_change_changes_the_fingerprint(column: str) -> None:
    frame = bars()
    changed = frame.copy()
    changed.loc[2, column] = changed.loc[2, column] + 1
    assert dataset_fingerprint(changed, IDENTITY) != dataset_fingerprint(frame, IDENTITY)


@pytest.mark.parametrize(
    "identity",
    [
        FingerprintIdentity("ohlcv:binance:ETH/USDT:1m", 60, Range(0, 300), "v2"),
        FingerprintIdentity("ohlcv:binance:BTC/USDT:1m", 300, Range(0, 300), "v2"),
        FingerprintIdentity("ohlcv:binance:BTC/USDT:1m", 60, Range(0, 360), "v2"),
        FingerprintIdentity("ohlcv:binance:BTC/USDT:1m", 60, Range(0, 300), "v3"),
    ],
)
def test_any_identity_change_changes_the_fingerprint(identity: FingerprintIdentity) -> None:
    assert dataset_fingerprint(bars(), identity) != dataset_fingerprint(bars(), IDENTITY)


def test_row_order_and_row_count_matter() -> None:
    frame = bars()
    reversed_rows = frame.iloc[::-1].reset_index(drop=True)
    assert dataset_fingerprint(reversed_rows, IDENTITY) != dataset_fingerprint(frame, IDENTITY)
    assert dataset_fingerprint(frame.iloc[:4], IDENTITY) != dataset_fingerprint(frame, IDENTITY)
    empty = bars(0)
    assert dataset_fingerprint(empty, IDENTITY) == dataset_fingerprint(bars(0), IDENTITY)
    assert dataset_fingerprint(empty, IDENTITY) != dataset_fingerprint(frame, IDENTITY)


def test_nan_bit_patterns_and_negative_zero_are_normalised() -> None:
    quiet = np.float64(np.nan)
    other_nan = np.frombuffer(np.uint64(0xFFF8000000000123).tobytes(), dtype=np.float64)[0]
    assert np.isnan(other_nan) and other_nan.tobytes() != quiet.tobytes()
    a, b = bars(), bars()
    a.loc[1, "volume"] = quiet
    b.loc[1, "volume"] = other_nan
    assert canonical_column_bytes(a, "volume") == canonical_column_bytes(b, "volume")
    assert dataset_fingerprint(a, IDENTITY) == dataset_fingerprint(b, IDENTITY)
    c, d = bars(), bars()
    c.loc[0, "volume"] = 0.0
    d.loc[0, "volume"] = -0.0
    assert dataset_fingerprint(c, IDENTITY) == dataset_fingerprint(d, IDENTITY)


def test_dtype_is_canonicalised_before_hashing() -> None:
    frame = bars()
    assert dataset_fingerprint(frame.astype({"ts": "int32"}), IDENTITY) == dataset_fingerprint(
        frame, IDENTITY
    )


def test_missing_column_is_an_error() -> None:
    with pytest.raises(ValueError, match="volume"):
        dataset_fingerprint(bars().drop(columns=["volume"]), IDENTITY)


OTHER_NAN = np.frombuffer(np.uint64(0x7FF8DEADBEEF0001).tobytes(), dtype=np.float64)[0]


def frame_of(column: np.ndarray) -> pd.DataFrame:
    names = ("open", "high", "low", "close", "volume")
    return frame_from_arrays(np.arange(column.size) * 60, {c: column for c in names})


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_fingerprint_is_a_function_of_normalised_values(values: list[float]) -> None:
    column = np.array(values, dtype=np.float64)
    variant = column.copy()
    variant[np.isnan(variant)] = OTHER_NAN
    variant[variant == 0] = -0.0
    assert dataset_fingerprint(frame_of(variant), IDENTITY) == dataset_fingerprint(
        frame_of(column), IDENTITY
    )
    changed = column.copy()
    first = changed[0]
    changed[0] = 1.0 if not np.isfinite(first) else np.nextafter(first + 0.0, 0.0 if first else 1.0)
    assert dataset_fingerprint(frame_of(changed), IDENTITY) != dataset_fingerprint(
        frame_of(column), IDENTITY
    )


def _reference_fingerprint(frame: pd.DataFrame, identity: FingerprintIdentity) -> str:
    """The canonical serialization spelled out: every float column always normalised."""
    import hashlib

    nan = np.frombuffer(np.uint64(0x7FF8000000000000).tobytes(), dtype="<f8")[0]
    digest = hashlib.sha256(identity.header() + len(frame).to_bytes(8, "little"))
    digest.update(frame["ts"].to_numpy(dtype="<i8").tobytes())
    for column in ("open", "high", "low", "close", "volume"):
        values = frame[column].to_numpy(dtype=np.float64)
        digest.update(np.where(np.isnan(values), nan, values + 0.0).astype("<f8").tobytes())
    return f"sha256:{digest.hexdigest()}"


@given(
    st.lists(
        st.sampled_from([0.0, -0.0, 1.5, -2.25, float("nan"), OTHER_NAN, float("inf"), -1e308]),
        min_size=0,
        max_size=12,
    )
)
def test_fast_paths_hash_the_canonical_bytes(values: list[float]) -> None:
    """Columns with nothing to normalise are hashed without a copy: same digest as the
    always-normalising reference, whatever mix of zeros, NaNs and infinities."""
    column = np.array(values, dtype=np.float64)
    frame = frame_from_arrays(
        np.arange(column.size) * 60,
        {
            "open": column,
            "high": column + 1,
            "low": np.abs(column),
            "close": column,
            "volume": column,
        },
    )
    assert dataset_fingerprint(frame, IDENTITY) == _reference_fingerprint(frame, IDENTITY)


def test_combine_and_dirname() -> None:
    a, b = dataset_fingerprint(bars(), IDENTITY), dataset_fingerprint(bars(4), IDENTITY)
    assert combine_fingerprints([a, b]) != combine_fingerprints([b, a])
    assert combine_fingerprints([a, b]) == combine_fingerprints([a, b])
    assert fingerprint_dirname(a) == "sha256-" + a.split(":")[1]
    for bad in ("md5:abc", "sha256:xyz", "sha256:" + "A" * 64):
        with pytest.raises(ValueError, match="not a sha256 fingerprint"):
            fingerprint_dirname(bad)
