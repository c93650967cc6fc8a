"""Dataset fingerprint: sha256 over canonical bytes of a conformed frame and its identity.

The canonical serialization is fixed so the same bars always give the same fingerprint,
whatever produced them: a header line of identity metadata as sorted-key compact JSON,
then each canonical column in fixed order as a little-endian buffer. Float columns have
every NaN replaced by one quiet-NaN bit pattern and -0.0 by 0.0. Wall-clock values never
enter the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .frame import CANONICAL_COLUMNS, CANONICAL_DTYPES, Range

ALGO = "sha256"
_CANONICAL_NAN = np.frombuffer(np.uint64(0x7FF8000000000000).tobytes(), dtype="<f8")[0]


@dataclass(frozen=True)
class FingerprintIdentity:
    """What, besides the bars, makes a dataset distinct."""

    node_id: str
    interval_s: int
    range: Range
    conformance_version: str

    def header(self) -> bytes:
        meta = {
            "columns": [[c, CANONICAL_DTYPES[c]] for c in CANONICAL_COLUMNS],
            "conformance_version": self.conformance_version,
            "interval_s": self.interval_s,
            "node_id": self.node_id,
            "range": [self.range.start, self.range.end],
        }
        return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode() + b"\n"


_CHUNK = 32_768  # values per hashed chunk: screened while the chunk sits in the CPU cache


def _canonical_column(frame: pd.DataFrame, column: str, dtype: str | None = None) -> np.ndarray:
    """One column as a contiguous little-endian array of `dtype` (a canonical column's
    own by default), not yet normalised."""
    dtype = dtype or CANONICAL_DTYPES[column]
    values = np.ascontiguousarray(frame[column].to_numpy(dtype=dtype))
    return values.astype("<" + values.dtype.str[1:], copy=False)


def _normalised(values: np.ndarray) -> np.ndarray:
    """Float values with every NaN as the canonical bit pattern and -0.0 as 0.0; the same
    array, uncopied, when it holds neither: all positive (prices; `min` propagates NaN),
    or else a NaN-free sum and no zero."""
    if values.size and np.min(values) > 0:
        return values
    with np.errstate(over="ignore", invalid="ignore"):  # the sum only screens
        screened = np.sum(values)
    if np.isnan(screened):  # a NaN (or +inf and -inf): the full normalisation
        return np.where(np.isnan(values), _CANONICAL_NAN, values + 0.0)
    if (values == 0.0).any():
        return values + 0.0  # folds -0.0 into 0.0
    return values


def canonical_column_bytes(frame: pd.DataFrame, column: str) -> bytes:
    """Little-endian bytes of one canonical column, with NaN and -0.0 normalised."""
    values = _canonical_column(frame, column)
    return (_normalised(values) if values.dtype.kind == "f" else values).tobytes()


def dataset_fingerprint(frame: pd.DataFrame, identity: FingerprintIdentity) -> str:
    """`sha256:<hex>` of the canonical serialization of `frame` under `identity`."""
    missing = [c for c in CANONICAL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"cannot fingerprint a frame without canonical columns {missing}")
    return hash_columns(frame, identity.header(), CANONICAL_DTYPES)


def hash_columns(frame: pd.DataFrame, header: bytes, dtypes: Mapping[str, str]) -> str:
    """`sha256:<hex>` of `header`, the row count (8 bytes LE), then each column of `dtypes`
    in its order as little-endian bytes of its dtype, floats normalised (`_normalised`):
    the serialization of every table the project fingerprints."""
    digest = hashlib.sha256(header)
    digest.update(len(frame).to_bytes(8, "little"))
    for column, dtype in dtypes.items():
        values = _canonical_column(frame, column, dtype)
        if values.dtype.kind != "f":
            digest.update(values.data)
            continue
        for start in range(0, len(values), _CHUNK):
            digest.update(_normalised(values[start : start + _CHUNK]).data)
    return f"{ALGO}:{digest.hexdigest()}"


def combine_fingerprints(fingerprints: list[str]) -> str:
    """Fingerprint of an ordered list of fingerprints (runs, snapshots)."""
    digest = hashlib.sha256("\n".join(fingerprints).encode())
    return f"{ALGO}:{digest.hexdigest()}"


def run_fingerprint(partitions: Iterable[tuple[int, str | None]]) -> str:
    """The data version of a run: its partitions' segment fingerprints in order, a
    partition not published standing as `unpublished:{its start}`."""
    return combine_fingerprints([fp or f"unpublished:{start}" for start, fp in partitions])


def fingerprint_dirname(fingerprint: str) -> str:
    """Filesystem/object-key form of a fingerprint: `sha256-<hex>` (no colon)."""
    algo, _, hexdigest = fingerprint.partition(":")
    if algo != ALGO or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"not a {ALGO} fingerprint: {fingerprint!r}")
    return f"{algo}-{hexdigest}"
