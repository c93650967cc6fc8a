"""Encoded kline pages kept for the next identical request (the sandbox's hot path).

Why: generating and encoding a 1000-bar page costs about a millisecond of the sandbox's
CPU, and benchmarks ask for the same pages run after run on a machine whose cores the
clients need too. A page is a pure function of the config and the bars it holds, so a
page whose bars are all closed is cached under `(market, interval, first open time,
last open time, rows)`: `select_open_times` picks every existing bar between the first and
the last one, so those values determine the rows for a given config. A forming bar
depends on the clock and is never cached; corruptions bypass the cache (they count
responses). A config change that can change bars (`DATA_KNOBS`) empties it; the others
(rate limits, latency, faults, clock) keep it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from .config import SandboxConfig

PageKey = tuple[str, str, int, int, int]

#: the knobs bars depend on (besides the clock, which only decides which bars are closed)
DATA_KNOBS = (
    "extra_symbols",
    "listing_ts",
    "gaps",
    "kline_gaps",
    "restatements",
    "seed",
    "week_origin_s",
)

#: bytes of encoded pages kept (a year of 1m bars in 1000-bar pages is ~85 MB)
MAX_BYTES = 256 * 2**20


class PageCache:
    """LRU of encoded pages for one set of data knobs; thread-safe."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._config: SandboxConfig | None = None
        self._data_key = ""
        self._pages: OrderedDict[PageKey, bytes] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.hits = 0

    def _same_config(self, config: SandboxConfig) -> None:
        if config is self._config:
            return
        self._config = config
        data_key = json.dumps([getattr(config, k) for k in DATA_KNOBS], sort_keys=True)
        if data_key != self._data_key:
            self._data_key, self._pages, self._bytes = data_key, OrderedDict(), 0

    def get(self, config: SandboxConfig, key: PageKey) -> bytes | None:
        with self._lock:
            self._same_config(config)
            body = self._pages.get(key)
            if body is not None:
                self._pages.move_to_end(key)
                self.hits += 1
            return body

    def put(self, config: SandboxConfig, key: PageKey, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            self._same_config(config)
            if key in self._pages:
                return
            self._pages[key] = body
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                _, old = self._pages.popitem(last=False)
                self._bytes -= len(old)
