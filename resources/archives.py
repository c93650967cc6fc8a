"""Bulk kline history from Binance's public archives (data.binance.vision): whole months
from monthly files, the edges from daily files, each verified against its `.CHECKSUM` AND
judged by its content (`core.archive_check`), so neither is trusted blindly:

* checksum matches, content sound: `verified`;
* checksum mismatches (or is absent), content sound: `checksum_mismatch` / `checksum_absent`,
  accepted with the mismatch recorded (Binance's own checksums are wrong for some files);
* content unsound, whatever the checksum: `quarantined` with the problems as the reason,
  the file kept under the quarantine directory beside a `reason.json`;
* no file (not published yet, before listing): `absent`; REST fills those windows.

Downloads do not spend the REST request budget (the archive is a separate host) but have
their own concurrency limit (`ArchiveSource.max_concurrent_downloads`). A run reads them
through `seamless_assets.sources.ArchiveRun`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import zipfile
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from seamless_assets.core.archive_check import parse_kline_csv
from seamless_assets.core.frame import Range

if TYPE_CHECKING:
    import aiohttp
    import pandas as pd

log = logging.getLogger(__name__)
ARCHIVE_BASE_URL = "https://data.binance.vision"
MARKET_PATHS = {"spot": "data/spot", "linear": "data/futures/um"}
Status = Literal["verified", "checksum_mismatch", "checksum_absent", "quarantined", "absent"]
#: the kline intervals the archives publish (besides `1mo`, which has no fixed length)
ARCHIVE_INTERVALS = frozenset(
    {"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w"}
)


@dataclass(frozen=True)
class ArchiveSource:
    """Where a run reads archives from (`exchanges.<id>.archives` in the config)."""

    base_url: str = ARCHIVE_BASE_URL
    max_concurrent_downloads: int = 4
    quarantine_dir: Path | None = None  # rejected files and their reason.json


@dataclass(frozen=True)
class ArchiveFile:
    """One archive zip: `{base}/{market path}/{period}/klines/{SYMBOL}/{interval}/…`."""

    kind: str  # spot | linear
    period: Literal["monthly", "daily"]
    symbol_id: str  # the exchange's id, e.g. BTCUSDT
    interval: str
    day: date  # first day of the period

    @property
    def name(self) -> str:
        stamp = self.day.strftime("%Y-%m" if self.period == "monthly" else "%Y-%m-%d")
        return f"{self.symbol_id}-{self.interval}-{stamp}.zip"

    def url(self, base_url: str = ARCHIVE_BASE_URL) -> str:
        prefix = MARKET_PATHS[self.kind]
        return (
            f"{base_url}/{prefix}/{self.period}/klines/{self.symbol_id}/{self.interval}/{self.name}"
        )

    @property
    def range(self) -> Range:
        start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
        if self.period == "daily":
            end = start + timedelta(days=1)
        else:
            end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
        return Range(int(start.timestamp()), int(end.timestamp()))


def archive_files(kind: str, symbol_id: str, interval: str, window: Range) -> list[ArchiveFile]:
    """The files covering the whole days of `window`: a monthly file for each whole month,
    daily files for the days at its edges. Parts of days are left to REST."""
    first = datetime.fromtimestamp(-(-window.start // 86_400) * 86_400, tz=UTC).date()
    stop = datetime.fromtimestamp(window.end // 86_400 * 86_400, tz=UTC).date()
    files: list[ArchiveFile] = []
    day = first
    while day < stop:
        month = ArchiveFile(kind, "monthly", symbol_id, interval, day.replace(day=1))
        month_end = datetime.fromtimestamp(month.range.end, tz=UTC).date()
        if day.day == 1 and month_end <= stop:
            files.append(month)
            day = month_end
        else:
            files.append(ArchiveFile(kind, "daily", symbol_id, interval, day))
            day += timedelta(days=1)
    return files


@dataclass
class ArchiveVerdict:
    """What one file gave: its status, why, its digests, and its bars (none unless used)."""

    file: ArchiveFile
    status: Status
    reason: str = ""
    sha256: str | None = None
    published_sha256: str | None = None
    bars: pd.DataFrame | None = field(default=None, repr=False)

    def provenance(self) -> dict[str, str | None]:
        """What a manifest records of this file."""
        return {
            "source": "archive",
            "file": self.file.name,
            "status": self.status,
            "sha256": self.sha256,
            "published_sha256": self.published_sha256,
            "reason": self.reason or None,
        }


async def _get(session: aiohttp.ClientSession, url: str) -> bytes | None:
    async with session.get(url) as resp:
        if resp.status == 404:
            return None
        resp.raise_for_status()
        return await resp.read()


async def fetch_archive(
    session: aiohttp.ClientSession,
    file: ArchiveFile,
    interval_s: int,
    *,
    base_url: str = ARCHIVE_BASE_URL,
    downloads: asyncio.Semaphore,
    quarantine_dir: Path | None = None,
    judging: Executor | None = None,
) -> ArchiveVerdict:
    """Download, verify and judge one file (see the module docstring). The file and its
    `.CHECKSUM` are asked for together; hashing, unzipping and parsing run on `judging`
    (else the loop's default executor): they release the GIL, so the event loop keeps
    downloading."""
    url = file.url(base_url)
    async with downloads:
        body, checksum = await asyncio.gather(_get(session, url), _get(session, url + ".CHECKSUM"))
    if body is None:
        return ArchiveVerdict(file, "absent", "not published")
    return await asyncio.get_running_loop().run_in_executor(
        judging, judge_archive, file, body, checksum, interval_s, quarantine_dir
    )


def judge_archive(
    file: ArchiveFile,
    body: bytes,
    checksum: bytes | None,
    interval_s: int,
    quarantine_dir: Path | None = None,
) -> ArchiveVerdict:
    """The verdict on a downloaded file: its checksum and its content."""
    digest = hashlib.sha256(body).hexdigest()
    published = checksum.decode(errors="replace").split()[0] if checksum else None
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            content = archive.read(archive.namelist()[0])
        bars, problems = parse_kline_csv(content, interval_s, file.range)
    except (zipfile.BadZipFile, IndexError, KeyError) as exc:
        bars, problems = None, [f"unreadable zip: {exc}"]
    verdict = ArchiveVerdict(file, "verified", "", digest, published, bars)
    if problems:
        verdict.status, verdict.reason, verdict.bars = "quarantined", "; ".join(problems), None
        _quarantine(verdict, body, quarantine_dir)
    elif published is None:
        verdict.status, verdict.reason = "checksum_absent", "no .CHECKSUM published"
    elif published != digest:
        verdict.status = "checksum_mismatch"
        verdict.reason = f".CHECKSUM says {published}, the file is {digest}; content sound"
    if verdict.status != "verified":
        log.info("archive %s: %s (%s)", file.name, verdict.status, verdict.reason)
    return verdict


def _quarantine(verdict: ArchiveVerdict, body: bytes, directory: Path | None) -> None:
    if directory is None:
        return
    where = directory / verdict.file.symbol_id / verdict.file.interval
    where.mkdir(parents=True, exist_ok=True)
    (where / verdict.file.name).write_bytes(body)
    reason = {k: v for k, v in verdict.provenance().items() if k != "source"}
    (where / (verdict.file.name + ".reason.json")).write_text(json.dumps(reason, indent=2))
