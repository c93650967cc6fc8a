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

from resources.artifacts.base import DATA_FILE, MANIFEST_FILE
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


@dataclass
class CacheCounts:
    """What the cache did during one read (reported in the read's metadata)."""

    hit: int = 0  # served from this process's mapping (store files unchanged)
    opened: int = 0  # a file mapped and verified (its first use in this process)
    built: int = 0  # read from the store (verified) and written
    rebuilt: int = 0  # a corrupt file, or a changed store: dropped (then built again)

    def as_dict(self) -> dict[str, int]:
        return {
            "hit": self.hit,
            "opened": self.opened,
            "built": self.built,
            "rebuilt": self.rebuilt,
        }

    def add_to(self, metrics: dict[str, float]) -> None:
        for name, value in self.as_dict().items():
            metrics[f"segment_cache_{name}_total"] += value


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


def evict(root: Path, max_bytes: int) -> list[Path]:
    """Delete the least recently opened (mtime) files under `root` while they hold more than
    `max_bytes`; the deleted ones."""
    found = []
    with os.scandir(root) as entries:
        for entry in entries:
            try:
                info = entry.stat()
            except FileNotFoundError:
                continue
            found.append((info.st_mtime_ns, info.st_size, Path(entry.path)))
    total = sum(size for _, size, _ in found)
    evicted = []
    for _, size, path in sorted(found):
        if total <= max_bytes:
            break
        unlink(path)
        total -= size
        evicted.append(path)
    return evicted


def store_files(local_root: str, segment_prefix: str, fingerprint: str) -> tuple[str, str]:
    """Local paths of a segment's data and manifest in a directory store (the store's
    layout: the segment's directory is named after its fingerprint, as `cache_key`)."""
    segment_dir = os.path.join(
        local_root, *segment_prefix.split("/"), "segments", cache_key(fingerprint)
    )
    return os.path.join(segment_dir, DATA_FILE), os.path.join(segment_dir, MANIFEST_FILE)


def stat_signature(paths: Sequence[str]) -> StatSignature:
    """(size, mtime_ns, inode) of each of `paths` ((-1, -1, -1) for a missing one)."""
    out = []
    for path in paths:
        try:
            info = os.stat(path)
            out.append((info.st_size, info.st_mtime_ns, info.st_ino))
        except FileNotFoundError:
            out.append((-1, -1, -1))
    return tuple(out)


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
    ordered, last = True, None  # ordered: each segment's bars after the previous one's
    for segment in segments:
        ts = segment[TS]
        n = len(ts)
        lo = 0 if not n or ts[0] >= window.start else int(np.searchsorted(ts, window.start))
        hi = n if not n or ts[-1] < window.end else int(np.searchsorted(ts, window.end))
        if hi > lo:
            ordered = ordered and (last is None or last < ts[lo])
            last = ts[hi - 1]
            bounds.append((segment, lo, hi))
    if not bounds:
        return _frame(np.empty(0, _DTYPES[TS]), np.empty((len(VALUE_COLUMNS), 0)))
    ts = np.concatenate([s[TS][lo:hi] for s, lo, hi in bounds])
    if not ordered:  # overlapping partitions: the later segment's bar per ts
        order = np.argsort(ts, kind="stable")
        sorted_ts = ts[order]
        keep = order[np.append(sorted_ts[1:] != sorted_ts[:-1], True)]
        values = np.stack(
            [np.concatenate([s[c][lo:hi] for s, lo, hi in bounds])[keep] for c in VALUE_COLUMNS]
        )
        return _frame(ts[keep], values)
    values = np.empty((len(VALUE_COLUMNS), len(ts)), np.float64)
    for i, c in enumerate(VALUE_COLUMNS):
        np.concatenate([s[c][lo:hi] for s, lo, hi in bounds], out=values[i])
    return _frame(ts, values)


def _frame(ts: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """A canonical frame over `ts` and the value columns' rows of `values` (no copy): one
    block per dtype, so that copying it (the result cache) is one copy per block."""
    bars = pd.DataFrame(values.T, columns=list(VALUE_COLUMNS), copy=False)
    # pandas-stubs lack concat's `copy` (pandas 2 copies both blocks without it)
    return pd.concat([pd.DataFrame({TS: ts}, copy=False), bars], axis=1, copy=False)  # type: ignore[call-overload]
