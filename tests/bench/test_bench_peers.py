"""Smoke test of bench/bench_peers.py's pieces that need no peer environment: the configs it
writes still load through the public config loader, and freqtrade's log is parsed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from seamless_assets.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from peers import jobs

LOG = """\
2026-12-04 15:19:32,185 - freqtrade.exchange.exchange - INFO - Markets were not loaded.
2026-12-04 15:19:32,252 - freqtrade.data.history.history_utils - INFO - Download history data \
for "BTC/USDT", 1m, spot and store in dd. From 2024-01-01T00:00:00 to 2024-01-10T00:00:00
2026-12-04 15:19:32,782 - freqtrade.data.history.history_utils - INFO - Downloaded data for \
BTC/USDT, 1m, spot with length 12999.
"""


@pytest.mark.parametrize("lifted", [False, True])
def test_seamless_bench_config_loads(tmp_path: Path, lifted: bool) -> None:
    work = jobs.seamless_workdir(tmp_path / "w", "http://127.0.0.1:9", lifted=lifted)
    config = load_config(work / "seamless.yaml")
    assert str(config.node(jobs.NODE)) == jobs.NODE
    assert (work / "dagster_home" / "dagster.yaml").is_file()


def test_freqtrade_download_time_from_its_log() -> None:
    assert jobs._freqtrade_download_s(LOG) == pytest.approx(0.530)
    assert jobs._freqtrade_download_s("no download lines") is None
