"""The read resource's TTL LRU cache of immutable fetch results, keyed so that no entry is
ever served across worlds, `as_of` values or conformance versions."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

import pandas as pd

from .read_context import SeamlessFetchMetadata

CacheKey = tuple[str, int, int, int, str, str, int | None]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    purges: int = 0
    resident: int = 0


class FetchCache:
    """TTL LRU of fetch results keyed by `(node_id, interval, start, end,
    conformance_version, world_id, as_of)`; holds only immutable (snapshot) reads."""

    def __init__(self, *, enabled: bool, ttl_ms: int, max_entries: int) -> None:
        self.enabled, self.ttl_s, self.max_entries = enabled, ttl_ms / 1000, max_entries
        self._entries: OrderedDict[CacheKey, tuple[float, pd.DataFrame, SeamlessFetchMetadata]]
        self._entries = OrderedDict()
        self._lock = threading.Lock()
        self._stats = CacheStats()

    def get(self, key: CacheKey) -> tuple[pd.DataFrame, SeamlessFetchMetadata] | None:
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] < time.monotonic():
                del self._entries[key]
                self._stats.expirations += 1
                entry = None
            if entry is None:
                self._stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self._stats.hits += 1
            return entry[1].copy(), entry[2]

    def put(self, key: CacheKey, frame: pd.DataFrame, meta: SeamlessFetchMetadata) -> None:
        if not self.enabled or self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic() + self.ttl_s, frame.copy(), meta)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._stats.evictions += 1

    def purge(self, world_id: str | None = None) -> int:
        """Drop every entry (of one world); returns how many went."""
        with self._lock:
            doomed = [k for k in self._entries if world_id is None or k[5] == world_id]
            for key in doomed:
                del self._entries[key]
            self._stats.purges += 1
            return len(doomed)

    def stats(self) -> CacheStats:
        with self._lock:
            return replace(self._stats, resident=len(self._entries))
