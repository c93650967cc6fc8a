"""The segment cache: verified, memory-mapped copies of snapshot segments, so a repeated
backtest read of a pinned snapshot (any window) costs little more than the copy into pandas.

Segments are content-addressed and snapshots immutable, so verified bars can be kept in a
faster form. A read that finds a segment of its window missing reads the window's segments
as an uncached read does (`read_snapshot_range`, verified: sealed, each manifest the
committed one, bars hashing to the listed fingerprints) and writes each under
`<data_dir>/cache/segments` as an uncompressed Arrow IPC file named after its own sha256
(`read_segment_files.py`), with its committed manifest's flags. Later reads, in any
process, map those files and slice the window by binary search on `ts`; the only copy is
the one into the returned frame.

An entry never serves bytes that are not the verified content:

* a process hashes each file the first time it opens it and compares with the digest in
  its name; a truncated, corrupted or half-written file fails, is logged (warning),
  deleted and rebuilt from the segments (`CacheCounts.rebuilt`);
* with a local store, the segment's files (data and manifest) are `stat`ed on every read:
  if size, mtime or inode differ from when the entry was built (the store was altered or
  restored since), the entry is dropped and the read goes to the segments again, which
  raise `ArtifactIntegrityError` for a tampered file exactly as an uncached read does.
  With a remote store (S3) no per-read check is made (it would cost a request per
  segment): an entry serves the content verified when it was built, and `seamless
  verify` is what finds a later alteration of the store.

A snapshot's first read in a process also maps its other cached segments (`map_snapshot`,
≈0.25 ms of CPU a file, once): later windows of a pinned snapshot open no file. At most
`cache.segments.max_bytes` on disk; a build beyond it deletes the least recently opened
files (mtime, touched on a process's first open). Mapped files are page cache, not heap.
Version 1 snapshots (no manifest digests) are read from the segments, uncached.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resources.artifacts.base import ArtifactStore
from resources.artifacts.filesystem import LocalDirectoryBlobStore
from seamless_assets.core.frame import CANONICAL_COLUMNS, Range, empty_frame
from seamless_assets.core.snapshot import Snapshot, SnapshotSegment
from seamless_assets.nodes import NodeId

from . import read_segment_files as files
from .read_segment_files import CacheCounts, CacheFile, CorruptCacheFile, StatSignature
from .read_storage import StorageExecutor

log = logging.getLogger(__name__)

#: A read that maps at least this many files for the first time opens them in parallel.
OPEN_MIN_PARALLEL = 4
CPUS = os.cpu_count() or 1  # ... on at most this many threads


@dataclass(frozen=True)
class CachedSegment:
    """One verified segment as this process serves it: columns over its mapped file."""

    fingerprint: str
    columns: dict[str, np.ndarray]
    flags: dict[str, int]  # conformance flags of its committed manifest
    store_files: tuple[str, ...]  # local paths of its data and manifest in the store
    store_stat: StatSignature | None


class SegmentCache:
    """The segment cache of one reader (thread-safe; shared on disk between processes)."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        artifacts: ArtifactStore,
        pool: StorageExecutor | None = None,
        *,
        map_snapshot: bool = False,
    ) -> None:
        self.root, self.max_bytes, self.artifacts = root, max_bytes, artifacts
        self._pool = pool  # opens files in parallel (the reader's I/O fan-out)
        self.map_snapshot = map_snapshot
        self._snapshots_mapped: set[str] = set()  # fingerprints of snapshots mapped whole
        self.root.mkdir(parents=True, exist_ok=True)
        blobs = artifacts.blobs
        self._local_root = str(blobs.root) if isinstance(blobs, LocalDirectoryBlobStore) else None
        self._mapped: dict[str, CachedSegment] = {}
        self._index: dict[str, Path] | None = None  # cache files on disk, by key
        self._lock = threading.Lock()

    def read(
        self,
        node: NodeId,
        snapshot: Snapshot,
        listed: Sequence[SnapshotSegment],
        window: Range,
        counts: CacheCounts,
        manifest_flags: Callable[[Sequence[str]], dict[str, dict[str, int]]],
    ) -> tuple[pd.DataFrame, list[CachedSegment]]:
        """The bars of `listed` (`snapshot`'s segments overlapping `window`, in its order)
        clipped to `window`: equal to `read_snapshot_range(node, snapshot, window,
        verify=True)`, with the same errors. Also the segments this call mapped (opened or
        built: their manifests' flags are known)."""
        if not listed:
            return empty_frame(), []
        segments = self._mapped_entries(listed, counts)
        unmapped = [i for i, segment in enumerate(segments) if segment is None]
        opened = []
        results = self._open_all(node, listed, unmapped)
        for i, (segment, rebuilt) in zip(unmapped, results, strict=True):
            counts.rebuilt += rebuilt
            if segment is not None:
                counts.opened += 1
                segments[i] = segment
                opened.append(segment)
        if any(segment is None for segment in segments):
            built = self._build(node, snapshot, listed, manifest_flags)
            if built is None:  # overlapping partitions: served from the store, uncached
                return self.artifacts.read_snapshot_range(node, snapshot, window), []
            counts.built += sum(1 for segment in segments if segment is None)
            segments, opened = list(built), list(built)
        ready = [segment for segment in segments if segment is not None]
        frame = files.assemble([s.columns for s in ready], window)
        if self.map_snapshot:
            opened += self._map_rest(node, snapshot, counts)
        return frame, opened

    def _map_rest(
        self, node: NodeId, snapshot: Snapshot, counts: CacheCounts
    ) -> list[CachedSegment]:
        """On `snapshot`'s first read here, open its cached segments not mapped yet (a
        corrupt or stale file is deleted, as in `_open`, and built when a window needs it)."""
        with self._lock:
            if snapshot.fingerprint in self._snapshots_mapped:
                return []
            self._snapshots_mapped.add(snapshot.fingerprint)
            rest = [entry for entry in snapshot.segments if entry.fingerprint not in self._mapped]
        results = self._open_all(node, rest, range(len(rest)))
        mapped = [segment for segment, _ in results if segment is not None]
        counts.opened += len(mapped)
        return mapped

    # -- lookups ------------------------------------------------------------------------

    def _mapped_entries(
        self, listed: Sequence[SnapshotSegment], counts: CacheCounts
    ) -> list[CachedSegment | None]:
        """This process's mapping of each of `listed` (None: not mapped), if the store's
        files are unchanged since the entry was built; a changed store drops it (the read
        goes to the store again)."""
        with self._lock:
            found = [self._mapped.get(entry.fingerprint) for entry in listed]
        for i, segment in enumerate(found):
            if segment is None:
                continue
            if segment.store_stat == self._stat(segment.store_files):
                counts.hit += 1
                continue
            log.info("segment %s changed in the store since it was cached", segment.fingerprint)
            self._forget(segment.fingerprint)
            counts.rebuilt += 1
            found[i] = None
        return found

    def _open_all(
        self, node: NodeId, listed: Sequence[SnapshotSegment], indices: Sequence[int]
    ) -> list[tuple[CachedSegment | None, bool]]:
        """`_open` of `listed[i]` for each of `indices`, in order; several at once on the
        pool (hashing and mapping release the GIL) when there is one."""

        def open_some(chunk: Sequence[int]) -> list[tuple[CachedSegment | None, bool]]:
            return [self._open(node, listed[i]) for i in chunk]

        ways = min(self._pool.workers if self._pool else 1, CPUS, (len(indices) + 1) // 2)
        if self._pool is None or ways < 2 or len(indices) < OPEN_MIN_PARALLEL:
            return open_some(indices)
        chunks = [indices[k::ways] for k in range(ways)]
        others = [self._pool.submit(functools.partial(open_some, c)) for c in chunks[1:]]
        out: list[tuple[CachedSegment | None, bool]] = [(None, False)] * len(indices)
        out[0::ways] = open_some(chunks[0])  # this thread takes a share too
        for k, future in enumerate(others, start=1):
            out[k::ways] = future.result()
        return out

    def _open(self, node: NodeId, entry: SnapshotSegment) -> tuple[CachedSegment | None, bool]:
        """The verified file of `entry` mapped for this process (its first use here); None
        when there is none, or it was corrupt or stale (then it is deleted, and the flag
        says it is rebuilt)."""
        key = files.cache_key(entry.fingerprint)
        with self._lock:
            if self._index is None:
                self._index = files.index(self.root)
            path = self._index.get(key)
        if path is None:
            return None, False
        try:
            opened = files.open_verified(path, entry.fingerprint)
            if opened.rows != entry.row_count:
                raise CorruptCacheFile(f"holds {opened.rows} rows, not {entry.row_count}")
        except FileNotFoundError:  # evicted by another process meanwhile
            self._forget(entry.fingerprint)
            return None, False
        except CorruptCacheFile as exc:
            log.warning(
                "segment cache file %s %s: deleted, rebuilding it from the segment", path, exc
            )
            self._forget(entry.fingerprint)
            return None, True
        store_files = self._store_files(node, entry.fingerprint)
        if opened.store_stat != self._stat(store_files):
            log.info("segment %s changed in the store since %s was built", entry.fingerprint, path)
            self._forget(entry.fingerprint)
            return None, True
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile: still mapped
            os.utime(path)  # least recently opened is evicted first
        return self._keep(opened, store_files), False

    def _keep(self, opened: CacheFile, store_files: tuple[str, ...]) -> CachedSegment:
        segment = CachedSegment(
            opened.fingerprint,
            opened.columns,
            opened.flags,
            store_files,
            opened.store_stat,
        )
        with self._lock:
            self._mapped[opened.fingerprint] = segment
            if self._index is not None:
                self._index[files.cache_key(opened.fingerprint)] = opened.path
        return segment

    def _forget(self, fingerprint: str) -> None:
        with self._lock:
            self._mapped.pop(fingerprint, None)
            path = (self._index or {}).pop(files.cache_key(fingerprint), None)
        if path is not None:
            files.unlink(path)

    # -- building -----------------------------------------------------------------------

    def _build(
        self,
        node: NodeId,
        snapshot: Snapshot,
        listed: Sequence[SnapshotSegment],
        manifest_flags: Callable[[Sequence[str]], dict[str, dict[str, int]]],
    ) -> list[CachedSegment] | None:
        """Read `listed` from the store as an uncached read does (verified; the store's
        typed errors pass through), write each segment as a cache file and map it. None
        when the segments overlap (one bar per ts was kept: they cannot be told apart)."""
        span = Range(listed[0].range.start, listed[-1].range.end)
        store_files = [self._store_files(node, entry.fingerprint) for entry in listed]
        stats = [self._stat(paths) for paths in store_files]  # before the read: a change shows
        frame = self.artifacts.read_snapshot_range(node, snapshot, span, verify=True)
        if snapshot.segments_overlapping(span) != list(listed) or len(frame) != sum(
            entry.row_count for entry in listed
        ):
            return None
        ends = np.cumsum([entry.row_count for entry in listed])
        flags_of = manifest_flags([entry.fingerprint for entry in listed])
        out = []
        for entry, end, paths, stat in zip(listed, ends, store_files, stats, strict=True):
            rows = slice(end - entry.row_count, end)
            batch = files.batch_of({c: frame[c].to_numpy()[rows] for c in CANONICAL_COLUMNS})
            flags = flags_of[entry.fingerprint]
            opened = CacheFile(Path(), files.column_views(batch), entry.fingerprint, flags, stat)
            try:
                path = files.write(self.root, entry.fingerprint, batch, flags, stat)
                opened = files.open_verified(path, entry.fingerprint, hashed=False)
            except (OSError, CorruptCacheFile) as exc:  # a full or read-only disk
                log.warning("could not cache segment %s: %s", entry.fingerprint, exc)
            out.append(self._keep(opened, paths))
        self._evict()
        return out

    def _evict(self) -> None:
        """Delete the least recently opened files while the cache holds more than max_bytes."""
        for path in files.evict(self.root, self.max_bytes):
            with self._lock:
                if self._index is not None:
                    self._index.pop(path.name.split(".", 1)[0], None)
            log.info("segment cache over %d bytes: evicted %s", self.max_bytes, path)

    # -- the store's files --------------------------------------------------------------

    def _store_files(self, node: NodeId, fingerprint: str) -> tuple[str, ...]:
        if self._local_root is None:
            return ()
        prefix = self.artifacts.segment_prefix(node)
        return files.store_files(self._local_root, prefix, fingerprint)

    def _stat(self, paths: tuple[str, ...]) -> StatSignature | None:
        return files.stat_signature(paths) if self._local_root is not None else None
