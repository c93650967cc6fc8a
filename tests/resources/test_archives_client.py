"""Bulk history from the archive tree the sandbox serves (data.binance.vision layout):
files chosen for a window, verified against .CHECKSUM and judged by content; a wrong
checksum on a sound file is accepted and recorded, corrupt content is quarantined."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from resources.archives import ArchiveFile, ArchiveVerdict, archive_files, fetch_archive
from sandbox import SandboxConfig, SandboxExchange, expected_bars
from seamless_assets.core.frame import Range

NOW = 1_741_564_800  # 2025-03-10: Jan and Feb 2025 published, March's days up to the 9th
JAN_2025 = 1_735_689_600


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=NOW)) as sx:
        yield sx


def _configure_archive(sx: SandboxExchange, **knobs: object) -> None:
    request = urllib.request.Request(
        f"{sx.url}/sandbox/archive-config", data=json.dumps(knobs).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def _fetch(
    sx: SandboxExchange, files: list[ArchiveFile], quarantine: Path | None = None
) -> list[ArchiveVerdict]:
    async def run() -> list[ArchiveVerdict]:
        downloads = asyncio.Semaphore(2)
        async with aiohttp.ClientSession() as session:
            return list(
                await asyncio.gather(
                    *(
                        fetch_archive(
                            session,
                            f,
                            60,
                            base_url=sx.url,
                            downloads=downloads,
                            quarantine_dir=quarantine,
                        )
                        for f in files
                    )
                )
            )

    return asyncio.run(run())


def _assert_bars(verdict: ArchiveVerdict, symbol: str) -> None:
    assert verdict.bars is not None
    window = verdict.file.range
    expected = expected_bars(symbol, 60, window.start, window.end)
    for column in ("ts", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(verdict.bars[column].to_numpy(), expected[column])


def test_whole_months_then_days_at_the_edges() -> None:
    files = archive_files("spot", "BTCUSDT", "1m", Range(JAN_2025 - 3600, JAN_2025 + 61 * 86_400))
    names = [f.name for f in files]
    # 2024-12-31 is not whole (REST's part), January and February whole, March 1-2 daily
    assert names == [
        "BTCUSDT-1m-2025-01.zip",
        "BTCUSDT-1m-2025-02.zip",
        "BTCUSDT-1m-2025-03-01.zip",
        "BTCUSDT-1m-2025-03-02.zip",
    ]
    assert files[1].range == Range(JAN_2025 + 31 * 86_400, JAN_2025 + 59 * 86_400)


def test_months_and_days_verified_exact_in_micro_and_milliseconds(sandbox: SandboxExchange) -> None:
    files = [
        ArchiveFile("spot", "monthly", "BTCUSDT", "1m", date(2025, 1, 1)),  # µs timestamps
        ArchiveFile("spot", "daily", "BTCUSDT", "1m", date(2025, 3, 3)),
        ArchiveFile("spot", "monthly", "BTCUSDT", "1m", date(2024, 12, 1)),  # ms
        ArchiveFile("linear", "monthly", "BTCUSDT", "1m", date(2025, 2, 1)),  # header line
    ]
    verdicts = _fetch(sandbox, files)
    assert [v.status for v in verdicts] == ["verified"] * 4
    for verdict in verdicts[:3]:
        _assert_bars(verdict, "BTC/USDT")
    _assert_bars(verdicts[3], "BTC/USDT:USDT")
    assert sandbox.stats()["requests_total"] == 0  # no REST budget spent


def test_a_wrong_checksum_on_sound_content_is_accepted_and_recorded(
    sandbox: SandboxExchange,
) -> None:
    file = ArchiveFile("spot", "monthly", "BTCUSDT", "1m", date(2023, 3, 1))
    (verdict,) = _fetch(sandbox, [file])
    assert verdict.status == "checksum_mismatch"
    assert verdict.published_sha256 != verdict.sha256 and verdict.published_sha256
    _assert_bars(verdict, "BTC/USDT")
    provenance = verdict.provenance()
    assert provenance["status"] == "checksum_mismatch" and provenance["sha256"] == verdict.sha256


@pytest.mark.parametrize("kind", ["truncated", "misaligned"])
def test_corrupt_content_is_quarantined_with_its_reason(
    sandbox: SandboxExchange, tmp_path: Path, kind: str
) -> None:
    file = ArchiveFile("spot", "daily", "ETHUSDT", "1m", date(2025, 3, 4))
    _configure_archive(sandbox, corrupt={file.url(""): kind})
    (verdict,) = _fetch(sandbox, [file], tmp_path)
    assert verdict.status == "quarantined" and verdict.bars is None
    assert ("not a kline row" if kind == "truncated" else "off the 60 s grid") in verdict.reason
    kept = tmp_path / "ETHUSDT" / "1m"
    assert (kept / file.name).read_bytes()[:2] == b"PK"
    assert json.loads((kept / (file.name + ".reason.json")).read_text())["reason"] == verdict.reason


def test_absent_files_and_absent_checksums(sandbox: SandboxExchange) -> None:
    unpublished = ArchiveFile("spot", "monthly", "BTCUSDT", "1m", date(2025, 3, 1))
    no_checksum = ArchiveFile("spot", "daily", "BTCUSDT", "1m", date(2025, 3, 5))
    _configure_archive(sandbox, missing_checksum=[no_checksum.url("")])
    first, second = _fetch(sandbox, [unpublished, no_checksum])
    assert (first.status, first.bars) == ("absent", None)
    assert second.status == "checksum_absent"
    _assert_bars(second, "BTC/USDT")
