"""ccxt's catalog (exchange ids, timeframes) for config validation, cached per ccxt version
so loading the definitions does not import ccxt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seamless_assets import exchange_catalog as catalog_module
from seamless_assets.config import load_config_dict
from seamless_assets.errors import ConfigError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(catalog_module.CACHE_ENV, str(tmp_path / "cache"))
    catalog_module.exchange_catalog.cache_clear()
    yield tmp_path / "cache"
    catalog_module.exchange_catalog.cache_clear()


def test_the_catalog_is_computed_once_per_ccxt_version_then_read(cache: Path) -> None:
    import ccxt

    first = catalog_module.exchange_catalog()
    [path] = cache.glob("ccxt-catalog-*.json")
    assert path.name == f"ccxt-catalog-{ccxt.__version__}.json"
    assert first.timeframes["binance"] == dict(ccxt.binance().timeframes)
    assert set(first.exchanges) == set(ccxt.exchanges)
    # A file of another version is never trusted: it is recomputed and replaced.
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "ccxt_version": "0.0.1", "timeframes": {}}))
    catalog_module.exchange_catalog.cache_clear()
    assert catalog_module.exchange_catalog().timeframes == first.timeframes
    assert json.loads(path.read_text())["ccxt_version"] == ccxt.__version__


def test_validation_reads_the_cache_without_importing_ccxt(cache: Path) -> None:
    catalog_module.exchange_catalog()  # fills the cache
    probe = (
        "import sys; from seamless_assets.config import load_config_dict as load; "
        "load({'exchanges': {'binance': {'symbols': ['BTC/USDT'], 'timeframes': ['1m']}}}); "
        "print('ccxt' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, catalog_module.CACHE_ENV: str(cache)},
    )
    assert out.stdout.strip() == "False"


def test_an_unwritable_cache_still_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(catalog_module.CACHE_ENV, str(blocker / "cache"))
    catalog_module.exchange_catalog.cache_clear()
    try:
        with pytest.raises(ConfigError, match="did you mean 'binance'"):
            load_config_dict({"exchanges": {"binanse": {}}})
        with pytest.raises(ConfigError, match="no timeframe '7m'"):
            load_config_dict({"exchanges": {"binance": {"timeframes": ["7m"]}}})
    finally:
        catalog_module.exchange_catalog.cache_clear()
