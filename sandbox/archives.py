"""A data.binance.vision-compatible public kline archive, served next to the REST API.

What files exist and what they hold (layout, CSV format, µs timestamps from 2025 for spot,
futures header, publication lag, listing, gaps and kline gaps) is in `archive_files.py`;
this module serves them over aiohttp, caches the zips and injects the archive's
deliberate faults.

Wiring: `add_archive_routes(app, STATE_KEY)` registers (GET, and HEAD with the same
headers and no body)

* `/data/{key}`: the zips and their `.CHECKSUM` files; any path that is not a published
  file answers 404 with S3's `<Error><Code>NoSuchKey</Code>...` XML body;
* `GET /sandbox/archive-stats`: the archive's own counters (JSON);
* `POST /sandbox/archive-reset`: zero those counters;
* `GET|POST /sandbox/archive-config`: the `ArchiveSettings` as JSON; a POST replaces the
  knobs it names (`daily_lag_s`, `monthly_lag_s`, `wrong_checksum`, `corrupt`,
  `missing_checksum`).

Shared knobs: `down` answers 503 (S3's `ServiceUnavailable` XML) and `latency_ms` delays
every archive response, like the REST API. Archive downloads never touch the REST weight
budget, penalties, bans, `force_429`, `error_rate_5xx` or `corruptions` (the archive is a
separate host on Binance): they are counted here, per bucket (`archive/zip`,
`archive/checksum`, `archive/other`), not in `SandboxState.stats()`.

Deliberate faults (`ArchiveFaults`, deterministic):

* `wrong_checksum`: by default ONE file, `WRONG_CHECKSUM_PATH` (BTCUSDT 1m spot monthly
  2023-03), whose content is correct but whose `.CHECKSUM` names a wrong sha256
  (`expected_checksum_mismatch_files()` lists them);
* `corrupt`: `{zip path: kind}` (`CORRUPT_KINDS`: `truncated`, `misaligned`) serves a
  corrupted CSV whose `.CHECKSUM` matches the corrupted zip (off by default);
* `missing_checksum`: zips served normally whose `.CHECKSUM` is 404 (off by default).

Cache: built zips are kept in an LRU (`MAX_CACHE_BYTES`) keyed by (path, data knobs of the
config, corruption kind); a change of the data knobs empties it. Builds run in a worker
thread (the event loop keeps serving REST), one build per key at a time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from email.utils import formatdate
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from .archive_files import (
    ARCHIVE_ROOT,
    CORRUPT_KINDS,
    PUBLISH_LAG_S,
    ArchiveFile,
    BuiltArchive,
    build_archive,
    checksum_text,
    market_of,
    parse_archive_path,
    parse_date,
    published_at_s,
    wrong_digest,
)
from .config import SandboxConfig
from .http import add_admin_routes
from .pages import DATA_KNOBS
from .state import SandboxState

ADMIN_PREFIX = "/sandbox"
#: the file whose `.CHECKSUM` is deliberately wrong by default (its content is correct)
WRONG_CHECKSUM_PATH = "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-03.zip"
#: bytes of built zips kept (a monthly 1m file is ~2.5 MB)
MAX_CACHE_BYTES = 256 * 2**20
BUCKETS = ("archive/zip", "archive/checksum", "archive/other")

__all__ = [
    "ARCHIVE_KEY",
    "CORRUPT_KINDS",
    "PUBLISH_LAG_S",
    "WRONG_CHECKSUM_PATH",
    "ArchiveFaults",
    "ArchiveSettings",
    "ArchiveStore",
    "add_archive_routes",
    "archive_url",
    "expected_checksum_mismatch_files",
]


def _zip_path(path: str) -> str:
    """`data/...zip[.CHECKSUM]` or `/data/...` -> the zip's URL path `/data/...zip`."""
    return "/" + path.strip().lstrip("/").removesuffix(".CHECKSUM")


def _paths(paths: Iterable[str], knob: str) -> tuple[str, ...]:
    if isinstance(paths, str):
        raise ValueError(f"archive {knob} must be a list of paths, got a string")
    return tuple(sorted({_zip_path(p) for p in paths}))


@dataclass(frozen=True)
class ArchiveFaults:
    """Deliberate archive faults, keyed by zip URL path (`/data/spot/...zip`; a leading
    `/` or a `.CHECKSUM` suffix is normalised away)."""

    wrong_checksum: tuple[str, ...] = (WRONG_CHECKSUM_PATH,)
    corrupt: Mapping[str, str] = field(default_factory=dict)  # zip path -> CORRUPT_KINDS
    missing_checksum: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        corrupt = {_zip_path(p): str(kind) for p, kind in dict(self.corrupt).items()}
        bad = sorted({k for k in corrupt.values() if k not in CORRUPT_KINDS})
        if bad:
            raise ValueError(f"archive corrupt kinds {bad}: choose from {list(CORRUPT_KINDS)}")
        object.__setattr__(self, "corrupt", corrupt)
        object.__setattr__(self, "wrong_checksum", _paths(self.wrong_checksum, "wrong_checksum"))
        object.__setattr__(
            self, "missing_checksum", _paths(self.missing_checksum, "missing_checksum")
        )


@dataclass(frozen=True)
class ArchiveSettings:
    """Publication lags (seconds after a period ends and its last bar closed) and faults."""

    daily_lag_s: float = PUBLISH_LAG_S
    monthly_lag_s: float = PUBLISH_LAG_S
    faults: ArchiveFaults = field(default_factory=ArchiveFaults)

    def __post_init__(self) -> None:
        for name in ("daily_lag_s", "monthly_lag_s"):
            value = float(getattr(self, name))
            if not 0.0 <= value < 366 * 86_400:
                raise ValueError(f"archive {name} must be >= 0 s and under a year, got {value}")
            object.__setattr__(self, name, value)

    def lag_s(self, period: str) -> float:
        return self.daily_lag_s if period == "daily" else self.monthly_lag_s

    def to_dict(self) -> dict[str, Any]:
        f = self.faults
        return {
            "daily_lag_s": self.daily_lag_s,
            "monthly_lag_s": self.monthly_lag_s,
            "wrong_checksum": list(f.wrong_checksum),
            "corrupt": dict(f.corrupt),
            "missing_checksum": list(f.missing_checksum),
        }

    def updated(self, knobs: Mapping[str, Any]) -> ArchiveSettings:
        """A copy with the named knobs of `to_dict()` replaced (each wholesale)."""
        unknown = sorted(set(knobs) - set(self.to_dict()))
        if unknown:
            raise ValueError(f"unknown archive knob(s) {unknown}; known: {sorted(self.to_dict())}")
        merged = {**self.to_dict(), **knobs}
        if not isinstance(merged["corrupt"], Mapping):
            raise ValueError("archive corrupt must be an object {zip path: kind}")
        return ArchiveSettings(
            daily_lag_s=float(merged["daily_lag_s"]),
            monthly_lag_s=float(merged["monthly_lag_s"]),
            faults=ArchiveFaults(
                wrong_checksum=tuple(merged["wrong_checksum"]),
                corrupt=dict(merged["corrupt"]),
                missing_checksum=tuple(merged["missing_checksum"]),
            ),
        )


@dataclass(frozen=True)
class ArchiveReply:
    """An archive answer before HTTP: status, body and content headers."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def _s3_error(status: int, code: str, message: str, key: str) -> ArchiveReply:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Key>{escape(key.lstrip('/'))}</Key><RequestId>SANDBOX</RequestId>"
        "<HostId>sandbox</HostId></Error>"
    )
    return ArchiveReply(status, body.encode(), "application/xml")


def no_such_key(path: str) -> ArchiveReply:
    return _s3_error(404, "NoSuchKey", "The specified key does not exist.", path)


def unavailable(path: str) -> ArchiveReply:
    return _s3_error(503, "ServiceUnavailable", "Please reduce your request rate.", path)


CacheKey = tuple[str, str, str]


class ArchiveStore:
    """Archive settings, the LRU of built zips and the archive counters; thread-safe."""

    def __init__(
        self, settings: ArchiveSettings | None = None, *, max_cache_bytes: int = MAX_CACHE_BYTES
    ) -> None:
        self._lock = threading.Lock()
        self._settings = settings or ArchiveSettings()
        self.max_cache_bytes = max_cache_bytes
        self._cache: OrderedDict[CacheKey, BuiltArchive] = OrderedDict()
        self._cache_bytes = 0
        self._building: dict[CacheKey, threading.Lock] = {}
        self._config: SandboxConfig | None = None
        self._data_key = ""
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._requests: dict[str, dict[str, int]] = {
            b: {"requests": 0, "head": 0, "bytes": 0} for b in BUCKETS
        }
        self._by_status: Counter[str] = Counter()
        self._hits = self._misses = 0
        self._build_s_total = self._build_s_last = 0.0
        self._build_last = ""

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> ArchiveSettings:
        with self._lock:
            return self._settings

    @settings.setter
    def settings(self, settings: ArchiveSettings) -> None:
        with self._lock:
            self._settings = settings

    def configure(self, knobs: Mapping[str, Any]) -> ArchiveSettings:
        """Replace the named knobs (see `ArchiveSettings.to_dict`); returns the settings."""
        with self._lock:
            self._settings = self._settings.updated(knobs)
            return self._settings

    # ------------------------------------------------------------------ files
    def lookup(self, config: SandboxConfig, path: str, now_s: float) -> ArchiveReply:
        """The answer to a GET of `path` at exchange time `now_s` (builds on a cache miss)."""
        parsed = parse_archive_path(path)
        if parsed is None:
            return no_such_key(path)
        file, is_checksum = parsed
        market = market_of(file, config)
        settings = self.settings
        if market is None:
            return no_such_key(path)
        published = published_at_s(file, market, config, settings.lag_s(file.period))
        if now_s < published:
            return no_such_key(path)
        faults = settings.faults
        if is_checksum and file.path in faults.missing_checksum:
            return no_such_key(path)
        built = self.built(config, file, faults.corrupt.get(file.path))
        if built.rows == 0:
            return no_such_key(path)
        headers = {"Last-Modified": formatdate(published, usegmt=True)}
        if not is_checksum:
            headers["ETag"] = f'"{built.md5}"'
            return ArchiveReply(200, built.body, "application/zip", headers)
        wrong = file.path in faults.wrong_checksum
        text = checksum_text(wrong_digest(built.body) if wrong else built.sha256, file)
        return ArchiveReply(200, text, "text/plain", headers)

    def built(
        self, config: SandboxConfig, file: ArchiveFile, corrupt: str | None = None
    ) -> BuiltArchive:
        """The built zip of a file (rows 0: the market has no bar in its period), cached."""
        with self._lock:
            key = (file.path, self._data_key_of(config), corrupt or "")
            hit = self._cached(key)
            if hit is not None:
                return hit
            lock = self._building.setdefault(key, threading.Lock())
        with lock:  # one build per key; concurrent requests for it wait and hit the cache
            with self._lock:
                hit = self._cached(key)
                if hit is not None:
                    return hit
            market = market_of(file, config)
            if market is None:
                raise KeyError(f"{file.symbol} is not listed as a {file.market} market")
            started = time.perf_counter()
            built = build_archive(file, market, config, corrupt)
            took = time.perf_counter() - started
            with self._lock:
                self._misses += 1
                self._build_s_total += took
                self._build_s_last, self._build_last = took, file.path
                self._put(key, built)
                self._building.pop(key, None)
            return built

    def _data_key_of(self, config: SandboxConfig) -> str:
        if config is not self._config:
            self._config = config
            data_key = json.dumps([getattr(config, k) for k in DATA_KNOBS], sort_keys=True)
            if data_key != self._data_key:
                self._data_key, self._cache, self._cache_bytes = data_key, OrderedDict(), 0
        return self._data_key

    def _cached(self, key: CacheKey) -> BuiltArchive | None:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self._hits += 1
        return hit

    def _put(self, key: CacheKey, built: BuiltArchive) -> None:
        if key in self._cache or len(built.body) > self.max_cache_bytes:
            return
        self._cache[key] = built
        self._cache_bytes += len(built.body)
        while self._cache_bytes > self.max_cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old.body)

    # ------------------------------------------------------------------ counters
    def count(self, bucket: str, status: int, sent_bytes: int, *, head: bool) -> None:
        with self._lock:
            entry = self._requests[bucket]
            entry["requests"] += 1
            entry["head"] += int(head)
            entry["bytes"] += sent_bytes
            self._by_status[str(status)] += 1

    def reset(self) -> None:
        """Zero the counters (the cache and the settings stay)."""
        with self._lock:
            self._reset_counters()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": sum(e["requests"] for e in self._requests.values()),
                "by_bucket": {k: dict(v) for k, v in self._requests.items()},
                "by_status": dict(self._by_status),
                "cache": {
                    "hits": self._hits,
                    "misses": self._misses,
                    "entries": len(self._cache),
                    "bytes": self._cache_bytes,
                },
                "builds": {
                    "seconds_total": round(self._build_s_total, 6),
                    "last_seconds": round(self._build_s_last, 6),
                    "last_path": self._build_last,
                },
            }


ARCHIVE_KEY = web.AppKey("sandbox_archive", ArchiveStore)


def _bucket(path: str) -> str:
    parsed = parse_archive_path(path)
    if parsed is None:
        return "archive/other"
    return "archive/checksum" if parsed[1] else "archive/zip"


def add_archive_routes(
    app: web.Application,
    state_key: web.AppKey[SandboxState],
    *,
    settings: ArchiveSettings | None = None,
) -> None:
    """Serve the kline archive (and its admin routes) on `app`, whose `SandboxState` is
    `app[state_key]`; the `ArchiveStore` goes to `app[ARCHIVE_KEY]`. A second call on the
    same app does nothing (so callers need not know whether `make_app` already did it)."""
    if ARCHIVE_KEY in app:
        return
    app[ARCHIVE_KEY] = ArchiveStore(settings)

    async def serve(request: web.Request) -> web.Response:
        state = request.app[state_key]
        store = request.app[ARCHIVE_KEY]
        cfg = state.config
        if cfg.latency_ms > 0:
            await asyncio.sleep(cfg.latency_ms / 1000.0)
        path = f"{ARCHIVE_ROOT}/{request.match_info['key']}"
        if cfg.down:
            reply = unavailable(path)
        else:
            reply = await asyncio.to_thread(store.lookup, cfg, path, state.clock.now_s())
        head = request.method == "HEAD"
        store.count(_bucket(path), reply.status, 0 if head else len(reply.body), head=head)
        resp = web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        resp.content_type = reply.content_type
        return resp

    app.router.add_get(ARCHIVE_ROOT + "/{key:.*}", serve)
    add_admin_routes(
        app,
        ARCHIVE_KEY,
        stats=ADMIN_PREFIX + "/archive-stats",
        reset=ADMIN_PREFIX + "/archive-reset",
        config=ADMIN_PREFIX + "/archive-config",
    )


def archive_url(
    base_url: str, market: str, period: str, symbol_id: str, interval: str, day: date | str
) -> str:
    """URL of an archive zip: `market` `"spot"` | `"um"`, `period` `"monthly"` |
    `"daily"`, `day` a date (a monthly file uses its month) or `YYYY-MM` / `YYYY-MM-DD`;
    append `.CHECKSUM` for its checksum."""
    if isinstance(day, str):
        parsed = parse_date(day, period) or parse_date(day, "daily")
        if parsed is None:
            raise ValueError(f"archive date must look like YYYY-MM or YYYY-MM-DD: {day!r}")
        day = parsed
    if period == "monthly":
        day = day.replace(day=1)
    return base_url.rstrip("/") + ArchiveFile(market, period, symbol_id, interval, day).path


def expected_checksum_mismatch_files(faults: ArchiveFaults | None = None) -> list[str]:
    """URL paths of the zips whose `.CHECKSUM` is deliberately wrong (content correct):
    by default `[WRONG_CHECKSUM_PATH]`."""
    return list((faults or ArchiveFaults()).wrong_checksum)
