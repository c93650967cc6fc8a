"""What the sandbox's data.binance.vision-style kline archive holds: pure functions of
(config, file path, settings) that `archives.py` serves over HTTP.

Why separate from the routes: which archive files exist and their exact bytes depend only
on the config, the path, the publication lag and the clock, so tests and tools can compute
them without a server (and the server can build them off the event loop).

Layout (Binance's), `{date}` being `YYYY-MM` (monthly) or `YYYY-MM-DD` (daily)::

    /data/spot/{monthly|daily}/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{date}.zip
    /data/futures/um/{monthly|daily}/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{date}.zip

plus a sibling `<zip>.CHECKSUM` holding `<sha256 hex>  <zip name>\\n` (`sha256sum` output).
Each zip holds one deflated CSV named like the zip with `.csv`: one row per bar opening in
the file's period (UTC), columns `CSV_COLUMNS`, values printed exactly like the REST klines
(same bar generator and encoder: 8 decimals, the ignore column `0`), `\\n` after every row.

Rules (Binance's where Binance has one):

* Spot files carry no header; USDⓈ-M futures files start with the header line
  `FUTURES_HEADER` (Binance added headers to its futures CSVs).
* Spot files of dates from 2025-01-01 (`MICROSECONDS_FROM_S`; the month's first day for a
  monthly file) print `open_time` and `close_time` in microseconds
  (`close_time = open_time + interval - 1 µs`, e.g. `1735689600000000 .. 1735689659999999`
  for a 1m bar); earlier spot files and every futures file print milliseconds.
* Intervals: monthly files for every REST interval (spot `INTERVALS` with 1s, futures
  without 1s; `1mo` has no fixed length and is not served), daily files for the
  intervals up to 1d (`DAILY_INTERVALS`; no daily 3d/1w files, as on Binance).
* A file is published `lag_s` after its period has ended and every bar opening in it has
  closed (a 1w bar opening in a month's last days closes in the next month), and never
  before REST would serve those bars (`publish_delay_s`): see `published_at_s`.
* A file exists once published if it has at least one bar: periods before listing (and
  periods entirely inside a maintenance gap or a kline gap) have none and do not exist;
  gaps and kline gaps (`SandboxConfig.kline_outages_for`) are simply absent rows, exactly
  as on REST; restatements change values exactly as on REST. The file holding the bar
  that contains the listing instant is the first one (for 3d/1w bars that bar can open
  in the month before the listing, exactly as REST serves it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import numpy.typing as npt

from .bars import generate_bars, interval_origin, select_open_times
from .config import INTERVALS, MarketSpec, SandboxConfig
from .encode import encode_klines
from .futures import FAPI_INTERVALS

I64 = npt.NDArray[np.int64]

ARCHIVE_ROOT = "/data"
#: archive market -> its directory under /data
MARKET_DIRS: dict[str, str] = {"spot": "spot", "um": "futures/um"}
PERIODS = ("monthly", "daily")
#: 2025-01-01 00:00 UTC: spot files of this date and later print microsecond timestamps
MICROSECONDS_FROM_S = 1_735_689_600
#: default publication lag after a period ends (Binance publishes the next day; here 1 h)
PUBLISH_LAG_S = 3_600
CSV_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
FUTURES_HEADER = (",".join(CSV_COLUMNS) + "\n").encode()
#: archive market -> period -> intervals served
ARCHIVE_INTERVALS: dict[str, dict[str, dict[str, int]]] = {
    market: {
        "monthly": dict(table),
        "daily": {k: v for k, v in table.items() if v <= 86_400},
    }
    for market, table in (("spot", INTERVALS), ("um", FAPI_INTERVALS))
}
DAILY_INTERVALS = tuple(ARCHIVE_INTERVALS["spot"]["daily"])
#: deliberate corruptions of a file's CSV (its checksum still matches the bytes served)
CORRUPT_KINDS = (
    "truncated",  # the second half of the rows dropped and the last row kept cut mid-line
    "misaligned",  # the middle row's open_time and close_time shifted by +MISALIGN_S
)
MISALIGN_S = 30
#: deflate level of the zips: 1 builds a monthly 1m file ~4x faster than zlib's default 6
#: for a ~20% larger file (what matters on a local replay exchange is the build time)
ZIP_LEVEL = 1
_CHUNK_ROWS = 50_000  # rows generated and encoded at a time (bounds memory for 1s files)
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


@dataclass(frozen=True)
class ArchiveFile:
    """One archive zip: `market` `"spot"` | `"um"`, `period` `"monthly"` | `"daily"`,
    the Binance `symbol` id (`BTCUSDT`), the interval name and the period's first day."""

    market: str
    period: str
    symbol: str
    interval: str
    day: date

    def __post_init__(self) -> None:
        if self.market not in MARKET_DIRS:
            raise ValueError(f"archive market must be one of {list(MARKET_DIRS)}: {self.market!r}")
        if self.period not in PERIODS:
            raise ValueError(f"archive period must be one of {list(PERIODS)}: {self.period!r}")
        if self.period == "monthly" and self.day.day != 1:
            raise ValueError(f"a monthly archive starts on the 1st, got {self.day}")

    @property
    def date_text(self) -> str:
        return self.day.strftime("%Y-%m" if self.period == "monthly" else "%Y-%m-%d")

    @property
    def name(self) -> str:
        """The zip's file name, `BTCUSDT-1m-2023-03.zip`."""
        return f"{self.symbol}-{self.interval}-{self.date_text}.zip"

    @property
    def csv_name(self) -> str:
        return self.name.removesuffix(".zip") + ".csv"

    @property
    def path(self) -> str:
        """The URL path of the zip (`.CHECKSUM` appended: its checksum's)."""
        return (
            f"{ARCHIVE_ROOT}/{MARKET_DIRS[self.market]}/{self.period}/klines/"
            f"{self.symbol}/{self.interval}/{self.name}"
        )

    @property
    def start_s(self) -> int:
        return int(datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC).timestamp())

    @property
    def end_s(self) -> int:
        if self.period == "daily":
            return self.start_s + 86_400
        year, month = divmod(self.day.year * 12 + self.day.month, 12)  # the next month
        return int(datetime(year, month + 1, 1, tzinfo=UTC).timestamp())

    @property
    def interval_s(self) -> int:
        return ARCHIVE_INTERVALS[self.market][self.period][self.interval]

    @property
    def microseconds(self) -> bool:
        """Whether open/close times are printed in µs (spot files from 2025-01-01)."""
        return self.market == "spot" and self.start_s >= MICROSECONDS_FROM_S


def parse_date(text: str, period: str) -> date | None:
    """`YYYY-MM` (monthly: its first day) or `YYYY-MM-DD` (daily); None when malformed."""
    found = (_MONTH if period == "monthly" else _DAY).fullmatch(text)
    if found is None:
        return None
    parts = [int(g) for g in found.groups()]
    try:
        return date(parts[0], parts[1], parts[2] if len(parts) > 2 else 1)
    except ValueError:
        return None


def parse_archive_path(path: str) -> tuple[ArchiveFile, bool] | None:
    """`(file, is_checksum)` of a URL path (with or without the leading `/`), or None when
    it names no kline archive in Binance's layout (unknown market, period, data type or
    interval, a file name not matching its directories, a malformed date)."""
    parts = path.lstrip("/").split("/")
    if parts[:2] == ["data", "spot"]:
        market, rest = "spot", parts[2:]
    elif parts[:3] == ["data", "futures", "um"]:
        market, rest = "um", parts[3:]
    else:
        return None
    if len(rest) != 5:
        return None
    period, data_type, symbol, interval, filename = rest
    if period not in PERIODS or data_type != "klines":
        return None
    if interval not in ARCHIVE_INTERVALS[market][period]:
        return None
    is_checksum = filename.endswith(".zip.CHECKSUM")
    stem = filename.removesuffix(".CHECKSUM")
    prefix = f"{symbol}-{interval}-"
    if not (stem.startswith(prefix) and stem.endswith(".zip")):
        return None
    day = parse_date(stem[len(prefix) : -len(".zip")], period)
    if day is None:
        return None
    file = ArchiveFile(market, period, symbol, interval, day)
    return (file, is_checksum) if file.name == stem else None


def market_of(file: ArchiveFile, config: SandboxConfig) -> MarketSpec | None:
    """The listed market an archive file belongs to (spot market or USDⓈ-M perpetual)."""
    markets = config.markets() if file.market == "spot" else config.perpetuals()
    return markets.get(file.symbol)


def open_times(file: ArchiveFile, market: MarketSpec, config: SandboxConfig) -> I64:
    """Open times (s) of the bars in the file: every existing bar opening in its period."""
    return select_open_times(
        market,
        file.interval_s,
        config,
        lo_s=file.start_s,
        hi_s=file.end_s - 1,
        limit=None,
        from_end=False,
    )


def published_at_s(
    file: ArchiveFile, market: MarketSpec, config: SandboxConfig, lag_s: float
) -> float:
    """When the file appears: `lag_s` (but at least the market's REST `publish_delay_s`)
    after both the period's end and the close of the last bar slot opening in it."""
    interval_s = file.interval_s
    origin = interval_origin(interval_s, config)
    last_open = origin + (file.end_s - 1 - origin) // interval_s * interval_s
    closed = max(file.end_s, last_open + interval_s)
    return closed + max(float(lag_s), config.publish_delay_for(market.key))


def klines_json_to_csv(body: bytes) -> bytes:
    """REST kline JSON (`[[1,"2",...,"0"],[...]]`) -> CSV rows, each ending in `\\n`."""
    if body == b"[]":
        return b""
    return body[2:-2].replace(b"],[", b"\n").translate(None, b'"') + b"\n"


def csv_chunks(
    file: ArchiveFile, market: MarketSpec, config: SandboxConfig, corrupt: str | None = None
) -> Iterator[bytes]:
    """The file's CSV in pieces (header for futures, then the rows), optionally corrupted
    (`CORRUPT_KINDS`)."""
    if corrupt is not None and corrupt not in CORRUPT_KINDS:
        raise ValueError(f"archive corruption must be one of {list(CORRUPT_KINDS)}: {corrupt!r}")
    interval_s = file.interval_s
    ts = open_times(file, market, config)
    mid = len(ts) // 2
    if corrupt == "truncated":
        ts = ts[: mid + 1]  # the rows before the middle one, and the middle one cut below
    per_s = 1_000_000 if file.microseconds else 1_000
    if file.market == "um":
        yield FUTURES_HEADER
    for lo in range(0, len(ts), _CHUNK_ROWS):
        part = ts[lo : lo + _CHUNK_ROWS]
        bars = generate_bars(market, interval_s, part, config)
        open_t = part * np.int64(per_s)
        close_t = open_t + np.int64(interval_s * per_s - 1)  # == bars.close_ms in ms files
        if corrupt == "misaligned" and lo <= mid < lo + len(part):
            open_t[mid - lo] += MISALIGN_S * per_s
            close_t[mid - lo] += MISALIGN_S * per_s
        rows = klines_json_to_csv(
            encode_klines(dataclasses.replace(bars, open_ms=open_t, close_ms=close_t))
        )
        if corrupt == "truncated" and lo + len(part) == len(ts):
            last = rows.rfind(b"\n", 0, len(rows) - 1) + 1
            rows = rows[: last + (len(rows) - last) // 2]
        yield rows


@dataclass(frozen=True)
class BuiltArchive:
    """A built zip: its bytes, sha256 and md5 (hex), and its row count (0: no file)."""

    body: bytes
    sha256: str
    md5: str
    rows: int


def build_archive(
    file: ArchiveFile, market: MarketSpec, config: SandboxConfig, corrupt: str | None = None
) -> BuiltArchive:
    """The zip of a file, deterministic byte for byte (fixed entry time: the period's end),
    so its checksum is stable across builds and processes."""
    rows = len(open_times(file, market, config))
    if rows == 0:
        return BuiltArchive(b"", "", "", 0)
    stamp = datetime.fromtimestamp(min(file.end_s, 4_102_444_799), UTC)  # zip: years < 2108
    info = zipfile.ZipInfo(file.csv_name, date_time=stamp.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info._compresslevel = ZIP_LEVEL  # type: ignore[attr-defined]  # (compress_level, 3.13)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open(info, "w") as out:
        for chunk in csv_chunks(file, market, config, corrupt):
            out.write(chunk)
    body = buf.getvalue()
    return BuiltArchive(body, hashlib.sha256(body).hexdigest(), hashlib.md5(body).hexdigest(), rows)


def checksum_text(digest: str, file: ArchiveFile) -> bytes:
    """The `.CHECKSUM` body: `sha256sum` output, two spaces between digest and name."""
    return f"{digest}  {file.name}\n".encode()


def wrong_digest(body: bytes) -> str:
    """The deliberately wrong (but deterministic and well-formed) sha256 of a zip."""
    return hashlib.sha256(b"sandbox: deliberately wrong checksum\0" + body).hexdigest()
