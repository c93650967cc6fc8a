"""Event segment encoding: deterministic zstd Parquet bytes of an event kind's table
(`seamless_assets.event_nodes.EventKind`), written and read as bar segments are
(`codec.py`)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pyarrow as pa

from seamless_assets.event_nodes import EVENT_KINDS, EventKind

from .codec import frame_from_table, parquet_bytes, read_parquet_table

_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "int8": pa.int8()}
# Delta-encoded integers (times, ids, sides) and byte-stream-split floats, as bar segments.
_ENCODINGS = {"int64": "DELTA_BINARY_PACKED", "int8": "DELTA_BINARY_PACKED"}
_FLOAT_ENCODING = "BYTE_STREAM_SPLIT"
_CANONICAL_NAN = np.frombuffer(np.uint64(0x7FF8000000000000).tobytes(), dtype="<f8")[0]


@functools.cache
def arrow_schema(kind: str) -> pa.Schema:
    """The Arrow schema of a kind's segment table: its columns, in order, none nullable."""
    return pa.schema(
        [
            pa.field(c, _ARROW_TYPES[dtype], nullable=False)
            for c, dtype in EVENT_KINDS[kind].dtypes.items()
        ]
    )


def _canonical_values(frame: pd.DataFrame, column: str, dtype: str) -> np.ndarray:
    """One column as contiguous little-endian values of `dtype`, floats with every NaN as
    one bit pattern and -0.0 as 0.0 (the fingerprint's rule: equal fingerprints, equal
    bytes)."""
    values = np.ascontiguousarray(frame[column].to_numpy(dtype=dtype))
    values = values.astype("<" + values.dtype.str[1:], copy=False)
    if values.dtype.kind == "f":
        return np.where(np.isnan(values), _CANONICAL_NAN, values + 0.0)
    return values


def encode_event_segment(spec: EventKind, frame: pd.DataFrame) -> bytes:
    """Deterministic zstd Parquet bytes of a segment table of `spec` (`parquet_bytes`), so
    the same rows give byte-identical files (under one pyarrow version, whose `created_by`
    they carry; republishing compares content)."""
    arrays = [
        pa.array(_canonical_values(frame, c, dtype), type=_ARROW_TYPES[dtype])
        for c, dtype in spec.dtypes.items()
    ]
    table = pa.Table.from_arrays(arrays, schema=arrow_schema(spec.name))
    encodings = {c: _ENCODINGS.get(d, _FLOAT_ENCODING) for c, d in spec.dtypes.items()}
    return parquet_bytes(table, encodings)


def read_event_table(spec: EventKind, data: bytes, uri: object) -> pa.Table:
    """The Arrow table stored in segment bytes; ArtifactIntegrityError if unreadable or
    not the kind's schema."""
    return read_parquet_table(data, uri, arrow_schema(spec.name), f"{spec.name} table's")


def event_frame_from_table(spec: EventKind, table: pa.Table) -> pd.DataFrame:
    """A writable frame of the kind's columns and dtypes from a table of its schema."""
    return frame_from_table(table, spec.columns)
