"""What ccxt offers (exchange ids, each exchange's timeframes) without importing ccxt.

Config validation needs these at every definitions load, but `import ccxt` loads every
exchange module (0.4-2.5 s) in each process that loads the definitions: code server, run
worker, step processes. The catalog of the installed ccxt version is computed once and
cached as JSON (`$SEAMLESS_CACHE_DIR`, else `$XDG_CACHE_HOME/seamless`, else
`~/.cache/seamless`), keyed by ccxt's version, so an upgrade recomputes it. A cache that
cannot be read or written only costs the import: the catalog is then computed in process.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

CACHE_ENV = "SEAMLESS_CACHE_DIR"


@dataclass(frozen=True)
class ExchangeCatalog:
    """`timeframes[exchange_id]`: ccxt's timeframe codes of that exchange (empty: no OHLCV)."""

    ccxt_version: str
    timeframes: dict[str, dict[str, Any]]

    @property
    def exchanges(self) -> list[str]:
        return list(self.timeframes)


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "seamless"


def _ccxt_version() -> str:
    try:
        return version("ccxt")
    except PackageNotFoundError:  # e.g. a vendored copy: ask the module itself
        import ccxt

        return str(ccxt.__version__)


def _compute(ccxt_version: str) -> ExchangeCatalog:
    import ccxt  # heavy: only when the cache has no catalog of this version

    timeframes = {
        exchange_id: dict(getattr(ccxt, exchange_id)().timeframes or {})
        for exchange_id in ccxt.exchanges
    }
    return ExchangeCatalog(ccxt_version, timeframes)


def _read(path: Path, ccxt_version: str) -> ExchangeCatalog | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("ccxt_version") != ccxt_version:
        return None
    timeframes = data.get("timeframes")
    if not isinstance(timeframes, dict):
        return None
    if not all(isinstance(v, dict) for v in timeframes.values()):
        return None
    return ExchangeCatalog(ccxt_version, timeframes)


def _write(path: Path, catalog: ExchangeCatalog) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ccxt-catalog-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"ccxt_version": catalog.ccxt_version, "timeframes": catalog.timeframes}, out)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass  # read-only or full disk: every load computes the catalog, nothing else changes


@cache
def exchange_catalog() -> ExchangeCatalog:
    """The catalog of the installed ccxt, from the cache when it has this version."""
    ccxt_version = _ccxt_version()
    path = cache_dir() / f"ccxt-catalog-{ccxt_version}.json"
    cached = _read(path, ccxt_version)
    if cached is not None:
        return cached
    catalog = _compute(ccxt_version)
    _write(path, catalog)
    return catalog
