"""The files of the segment cache (`read_segment_cache.py`) and the frames cut out of them:
one uncompressed Arrow IPC file
per verified segment, named `<fingerprint>.<sha256 of the file>.arrow`, so a file proves its
own integrity: whoever opens it hashes the mapped bytes (one pass, no copy) and compares
with its name. A truncated, corrupted or half-written file fails that and is never served.

A file is only ever written from bars that were just verified against the fingerprint the
snapshot lists (and a manifest whose digest the snapshot committed), to a temporary name
then renamed, so its name's digest vouches for verified content. Its schema metadata holds
the fingerprint, the conformance flags of the committed manifest and the stat signature of
the segment's files in the store when it was read (see `SegmentCache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from seamless_assets.core.frame import CANONICAL_COLUMNS, CANONICAL_DTYPES, TS, VALUE_COLUMNS, Range

FORMAT = b"seamless-segment-cache/1"
CANONICAL_SCHEMA = pa.schema(
    [
        pa.field(c, pa.int64() if c == TS else pa.float64(), nullable=False)
        for c in CANONICAL_COLUMNS
    ]
)
SUFFIX = ".arrow"
_DTYPES = {c: np.dtype(CANONICAL_DTYPES[c]) for c in CANONICAL_COLUMNS}
StatSignature = tuple[tuple[int, int, int], ...]  # (size, mtime_ns, inode) per store file


@dataclass(frozen=True)
class CacheFile:
    """An opened cache file whose bytes hash to its name: its columns (read-only views over
    the mapped file) and metadata."""

    path: Path
    columns: dict[str, np.ndarray]
    fingerprint: str
    flags: dict[str, int]
    store_stat: StatSignature | None

    @property
    def rows(self) -> int:
        return len(self.columns[TS])


class CorruptCacheFile(Exception):
    """A cache file that is not what its name vouches for (the message says why)."""


def cache_key(fingerprint: str) -> str:
    """The file-name stem of a segment's cache file (`sha256-<hex>`)."""
    return fingerprint.replace(":", "-", 1)


def index(root: Path) -> dict[str, Path]:
    """Cache files under `root` by key (one directory listing)."""
    out: dict[str, Path] = {}
    with os.scandir(root) as entries:
        for entry in entries:
            name = entry.name
            if name.endswith(SUFFIX) and not name.startswith("."):
                out[name.split(".", 1)[0]] = Path(entry.path)
    return out


def write(
    root: Path,
    fingerprint: str,
    batch: pa.RecordBatch,
    flags: dict[str, int],
    store_stat: StatSignature | None,
) -> Path:
    """Write the cache file of a verified segment's bars (temp file, then rename); its path.
    Raises OSError when the disk refuses."""
    metadata = {
        b"format": FORMAT,
        b"fingerprint": fingerprint.encode(),
        b"flags": json.dumps(flags, sort_keys=True).encode(),
        b"store_stat": json.dumps(store_stat).encode(),
    }
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema.with_metadata(metadata)) as writer:
        writer.write_batch(batch)
    data = sink.getvalue()
    digest = hashlib.sha256(memoryview(data)).hexdigest()
    path = root / f"{cache_key(fingerprint)}.{digest}{SUFFIX}"
    temp = root / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temp, "wb") as file:
            file.write(memoryview(data))
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return path


def open_verified(path: Path, fingerprint: str, *, hashed: bool = True) -> CacheFile:
    """Map `path` and prove it: its bytes hash to its name (`hashed=False`: skipped, for a
    file this process just wrote from the bytes its name was computed from) and it is the
    cache file of `fingerprint`, with the canonical schema. Raises CorruptCacheFile (or
    FileNotFoundError)."""
    stem, _, rest = path.name.partition(".")
    expected = rest.removesuffix(SUFFIX)
    if stem != cache_key(fingerprint):
        raise CorruptCacheFile(f"is not named after segment {fingerprint}")
    source = pa.memory_map(str(path))
    try:
        buffer = source.read_buffer()
        if hashed and hashlib.sha256(memoryview(buffer)).hexdigest() != expected:
            raise CorruptCacheFile(
                "does not hash to the digest in its name (corrupted or truncated)"
            )
        reader = pa.ipc.open_file(buffer)
        schema = reader.schema
        meta: dict[bytes, Any] = schema.metadata or {}
        if meta.get(b"format") != FORMAT or meta.get(b"fingerprint") != fingerprint.encode():
            raise CorruptCacheFile(f"is not a cache file of segment {fingerprint}")
        if not schema.remove_metadata().equals(CANONICAL_SCHEMA):
            raise CorruptCacheFile(f"does not hold canonical columns ({schema.names})")
        # One record batch as `write` makes it: its buffers are viewed in place.
        if reader.num_record_batches == 1:
            batch = reader.get_batch(0)
        else:
            batch = reader.read_all().combine_chunks().to_batches()[0]
        flags = {str(k): int(v) for k, v in json.loads(meta[b"flags"].decode()).items()}
        stat = json.loads(meta[b"store_stat"].decode())
    except (pa.ArrowException, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorruptCacheFile(f"is not a readable cache file ({exc})") from exc
    store_stat = tuple(tuple(item) for item in stat) if stat is not None else None
    return CacheFile(path, column_views(batch), fingerprint, flags, store_stat)  # type: ignore[arg-type]


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def batch_of(columns: dict[str, np.ndarray]) -> pa.RecordBatch:
    """A canonical record batch of verified columns (for `write`)."""
    arrays = [pa.array(columns[c], type=CANONICAL_SCHEMA.field(c).type) for c in CANONICAL_COLUMNS]
    return pa.RecordBatch.from_arrays(arrays, schema=CANONICAL_SCHEMA)


def column_views(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Read-only numpy views over a canonical batch's columns (no copy; contiguous)."""
    columns = {}
    rows = batch.num_rows
    for c, array in zip(CANONICAL_COLUMNS, batch.columns, strict=True):
        dtype = _DTYPES[c]
        data = array.buffers()[1]
        columns[c] = (
            np.frombuffer(data, dtype, count=rows, offset=array.offset * dtype.itemsize)
            if rows
            else np.empty(0, dtype)
        )
    return columns


def assemble(segments: Sequence[dict[str, np.ndarray]], window: Range) -> pd.DataFrame:
    """The bars of segments' columns (in snapshot order) clipped to `window`, one bar per ts
    (the later segment's on overlap, as `SegmentStore._read_segments`), as a new writable
    frame: the only copy of a read through the cache."""
    bounds = []
    for segment in segments:
        ts = segment[TS]
        n = len(ts)
        lo = 0 if not n or ts[0] >= window.start else int(np.searchsorted(ts, window.start))
        hi = n if not n or ts[-1] < window.end else int(np.searchsorted(ts, window.end))
        if hi > lo:
            bounds.append((segment, lo, hi))
    ordered = all(
        a[TS][a_hi - 1] < b[TS][b_lo] for (a, _, a_hi), (b, b_lo, _) in itertools.pairwise(bounds)
    )
    if not ordered:  # overlapping partitions: the later segment's bar per ts
        ts = np.concatenate([s[TS][lo:hi] for s, lo, hi in bounds])
        order = np.argsort(ts, kind="stable")
        sorted_ts = ts[order]
        keep = order[np.append(sorted_ts[1:] != sorted_ts[:-1], True)]
        columns = {c: np.concatenate([s[c][lo:hi] for s, lo, hi in bounds]) for c in VALUE_COLUMNS}
        return _frame(ts[keep], np.stack([columns[c][keep] for c in VALUE_COLUMNS]))
    rows = sum(hi - lo for _, lo, hi in bounds)
    ts = np.empty(rows, _DTYPES[TS])
    values = np.empty((len(VALUE_COLUMNS), rows), np.float64)
    at = 0
    for segment, lo, hi in bounds:
        end = at + hi - lo
        ts[at:end] = segment[TS][lo:hi]
        for i, c in enumerate(VALUE_COLUMNS):
            values[i, at:end] = segment[c][lo:hi]
        at = end
    return _frame(ts, values)


def _frame(ts: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """A canonical frame over `ts` and the value columns' rows of `values` (no copy): one
    block per dtype, so that copying it (the result cache) is one copy per block."""
    frame = pd.DataFrame(values.T, columns=list(VALUE_COLUMNS), copy=False)
    frame.insert(0, TS, ts)
    return frame
