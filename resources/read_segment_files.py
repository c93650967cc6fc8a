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

from seamless_assets.core.frame import CANONICAL_COLUMNS, CANONICAL_DTYPES, TS, Range

FORMAT = b"seamless-segment-cache/1"
CANONICAL_SCHEMA = pa.schema(
    [
        pa.field(c, pa.int64() if c == TS else pa.float64(), nullable=False)
        for c in CANONICAL_COLUMNS
    ]
)
SUFFIX = ".arrow"
StatSignature = tuple[tuple[int, int, int], ...]  # (size, mtime_ns, inode) per store file


@dataclass(frozen=True)
class CacheFile:
    """An opened cache file whose bytes hash to its name: its table (mapped) and metadata."""

    path: Path
    table: pa.Table
    fingerprint: str
    flags: dict[str, int]
    store_stat: StatSignature | None


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
    table: pa.Table,
    flags: dict[str, int],
    store_stat: StatSignature | None,
) -> Path:
    """Write the cache file of a verified segment table (temp file, then rename); its path.
    Raises OSError when the disk refuses."""
    metadata = {
        b"format": FORMAT,
        b"fingerprint": fingerprint.encode(),
        b"flags": json.dumps(flags, sort_keys=True).encode(),
        b"store_stat": json.dumps(store_stat).encode(),
    }
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema.with_metadata(metadata)) as writer:
        writer.write_table(table)
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
    cache file of `fingerprint`. Raises CorruptCacheFile (or FileNotFoundError)."""
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
        table = pa.ipc.open_file(buffer).read_all()
        meta: dict[bytes, Any] = table.schema.metadata or {}
        if meta.get(b"format") != FORMAT or meta.get(b"fingerprint") != fingerprint.encode():
            raise CorruptCacheFile(f"is not a cache file of segment {fingerprint}")
        flags = {str(k): int(v) for k, v in json.loads(meta[b"flags"]).items()}
        stat = json.loads(meta[b"store_stat"])
    except (pa.ArrowException, ValueError, KeyError, TypeError) as exc:
        raise CorruptCacheFile(f"is not a readable cache file ({exc})") from exc
    store_stat = tuple(tuple(item) for item in stat) if stat is not None else None
    return CacheFile(path, table, fingerprint, flags, store_stat)  # type: ignore[arg-type]


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def table_of(columns: dict[str, np.ndarray]) -> pa.Table:
    """A canonical table of verified columns (for `write`)."""
    arrays = [pa.array(columns[c], type=CANONICAL_SCHEMA.field(c).type) for c in CANONICAL_COLUMNS]
    return pa.Table.from_arrays(arrays, schema=CANONICAL_SCHEMA)


def column_views(table: pa.Table) -> dict[str, np.ndarray]:
    """Read-only numpy views over a canonical table's columns (no copy; contiguous)."""
    columns = {}
    for c in CANONICAL_COLUMNS:
        chunked = table.column(c)
        array = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
        dtype = np.dtype(CANONICAL_DTYPES[c])
        buffer = array.buffers()[1]
        columns[c] = np.frombuffer(
            buffer, dtype, count=len(array), offset=array.offset * dtype.itemsize
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
    if not bounds:
        return pd.DataFrame({c: segments[0][c][:0].copy() for c in CANONICAL_COLUMNS})
    columns = {c: np.concatenate([s[c][lo:hi] for s, lo, hi in bounds]) for c in CANONICAL_COLUMNS}
    ordered = all(
        a[TS][a_hi - 1] < b[TS][b_lo] for (a, _, a_hi), (b, b_lo, _) in itertools.pairwise(bounds)
    )
    if not ordered:  # overlapping partitions: the later segment's bar per ts
        ts = columns[TS]
        order = np.argsort(ts, kind="stable")
        sorted_ts = ts[order]
        index = order[np.append(sorted_ts[1:] != sorted_ts[:-1], True)]
        columns = {c: values[index] for c, values in columns.items()}
    return pd.DataFrame(columns, copy=False)
