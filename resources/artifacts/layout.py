"""Where an artifact store keeps things: per-node key layout over a `BlobStore`.

Layout under the root, per node prefix (a bar node's `exchange={exchange}/symbol={symbol}/
timeframe={timeframe}` by default, an event node's `kind={kind}/exchange={exchange}/
symbol={symbol}`; slugs escaped):

    {prefix}/segments/sha256-<hex>/data.parquet    zstd Parquet of the canonical frame
                                                   (of an event node: its kind's table)
    {prefix}/segments/sha256-<hex>/manifest.json   written last: its presence seals the segment
    {prefix}/heads/{start}-{end}.json              mutable pointer: partition -> fingerprint

    {prefix}/snapshots/{as_of_s}.json              snapshot manifest (no wall clock), write-once
    {prefix}/snapshot_log/{as_of_s}.json           its publication time, written last: its
                                                   presence publishes the snapshot

as_of_s is zero-padded so keys sort in time order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from seamless_assets.core.fingerprint import fingerprint_dirname
from seamless_assets.core.frame import Range
from seamless_assets.event_nodes import AnyNode, EventNodeId

from .blobs import BlobStore, validate_key

DEFAULT_PARTITION_TEMPLATE = "exchange={exchange}/symbol={symbol}/timeframe={timeframe}"
DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"

_MIN_ITEMS_PER_WORKER = 8

T = TypeVar("T")
R = TypeVar("R")
NodeT = TypeVar("NodeT", bound=AnyNode)  # the kind of node a store keeps

SEGMENT_KEY = re.compile(
    r"^(?P<prefix>.+)/segments/(?P<dirname>sha256-[0-9a-f]{64})/(?P<name>[^/]+)$"
)
HEAD_NAME = re.compile(r"^(?P<start>-?[0-9]+)-(?P<end>-?[0-9]+)\.json$")
SNAPSHOT_LOG_KEY = re.compile(r"^(?P<prefix>.+)/snapshot_log/[0-9]{12}\.json$")
SNAPSHOT_LOG_NAME = re.compile(r"^(?P<as_of>[0-9]{12})\.json$")


class StoreLayout:
    """Keys of a node's segments, heads and snapshots, and a small thread pool helper."""

    def __init__(
        self,
        blobs: BlobStore,
        partition_template: str = DEFAULT_PARTITION_TEMPLATE,
        *,
        max_workers: int | None = None,
    ) -> None:
        fields = set(re.findall(r"{(\w*)}", partition_template))
        if fields != {"exchange", "symbol", "timeframe"}:
            raise ValueError(
                f"partition template {partition_template!r} must use exactly {{exchange}}, "
                "{symbol} and {timeframe} so every node gets its own prefix"
            )
        validate_key(partition_template.format(exchange="x", symbol="y", timeframe="z"))
        self.blobs = blobs
        self.partition_template = partition_template
        # Local reads are CPU-bound (decode, hash), so one thread per core; a backend
        # with network latency (S3) should pass more.
        self.max_workers = max_workers or min(8, os.cpu_count() or 1)
        self._prefixes: dict[AnyNode, str] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.blobs!r}, {self.partition_template!r})"

    # -- keys ---------------------------------------------------------------------------

    def segment_prefix(self, node: AnyNode) -> str:
        """The node's prefix: a bar node's by the partition template, an event node's its
        own (`kind=…` starts no template's prefix, so the two never meet)."""
        prefix = self._prefixes.get(node)
        if prefix is None:
            prefix = self._prefixes[node] = (
                node.partition_prefix()
                if isinstance(node, EventNodeId)
                else node.partition_prefix(self.partition_template)
            )
        return prefix

    def _segment_dir(self, node: AnyNode, fingerprint: str) -> str:
        return f"{self.segment_prefix(node)}/segments/{fingerprint_dirname(fingerprint)}"

    def _head_key(self, node: AnyNode, window: Range) -> str:
        return f"{self.segment_prefix(node)}/heads/{window.start}-{window.end}.json"

    def node_uri(self, node: AnyNode) -> str:
        """URI of everything published for a node."""
        return self.blobs.uri(self.segment_prefix(node))

    def uri_for(self, node: AnyNode, fingerprint: str) -> str:
        """URI of a segment's directory (`file:///…/segments/sha256-<hex>` locally)."""
        return self.blobs.uri(self._segment_dir(node, fingerprint))

    def manifest_key(self, node: AnyNode, fingerprint: str) -> str:
        return f"{self._segment_dir(node, fingerprint)}/{MANIFEST_FILE}"

    def manifest_uri_for(self, node: AnyNode, fingerprint: str) -> str:
        """URI of a segment's `manifest.json` (its presence seals the segment)."""
        return self.blobs.uri(self.manifest_key(node, fingerprint))

    def _snapshot_key(self, node: AnyNode, as_of_s: int) -> str:
        return f"{self.segment_prefix(node)}/snapshots/{as_of_s:012d}.json"

    def _snapshot_log_key(self, node: AnyNode, as_of_s: int) -> str:
        return f"{self.segment_prefix(node)}/snapshot_log/{as_of_s:012d}.json"

    def _is_sealed(self, node: AnyNode, fingerprint: str) -> bool:
        return self.blobs.exists(self.manifest_key(node, fingerprint))

    def _map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`fn` over items, in order, on a thread pool (blob I/O and Parquet decoding
        release the GIL). Items go in contiguous chunks, one per worker, because most are
        tiny and a task per item would cost more than it saves."""
        todo = list(items)
        workers = min(self.max_workers, len(todo) // _MIN_ITEMS_PER_WORKER)
        if workers <= 1:
            return [fn(item) for item in todo]
        size = -(-len(todo) // workers)
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            done = pool.map(lambda chunk: [fn(item) for item in chunk], chunks)
            return [result for chunk in done for result in chunk]


class LazyUri:
    """A blob's URI, computed only if an error message needs it (reads touch many)."""

    def __init__(self, blobs: BlobStore, key: str) -> None:
        self.blobs, self.key = blobs, key

    def __str__(self) -> str:
        return self.blobs.uri(self.key)
