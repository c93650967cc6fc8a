"""The data.binance.vision-style kline archive (`sandbox/archives.py`), over real HTTP.

Each test builds its own aiohttp app (`web.Application` + `add_archive_routes`, or
`make_app` when it needs the REST API too) and serves it on 127.0.0.1:0 from a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from sandbox import SandboxConfig, SandboxState, expected_bars
from sandbox.archive_files import FUTURES_HEADER, parse_archive_path
from sandbox.archives import (
    ARCHIVE_KEY,
    WRONG_CHECKSUM_PATH,
    ArchiveFaults,
    ArchiveSettings,
    ArchiveStore,
    add_archive_routes,
    archive_url,
    expected_checksum_mismatch_files,
)
from sandbox.server import STATE_KEY, make_app

from .conftest import FakeWall

DAY = 86_400
FEB10 = 1_739_145_600  # 2025-02-10 00:00 UTC (a Monday)
NOW = FEB10 + 12 * 3600  # frozen exchange clock: 2025-02-10 12:00 UTC
JAN2025 = 1_735_689_600  # 2025-01-01 00:00 UTC: spot archives switch to microseconds
DEC2024 = 1_733_011_200  # 2024-12-01 00:00 UTC
MAR2023 = 1_677_628_800  # 2023-03-01 00:00 UTC
COLS = ("open", "high", "low", "close", "volume")
DEC8 = re.compile(rb"\d+\.\d{8}")


# --------------------------------------------------------------------------- harness
@dataclass
class Served:
    url: str
    app: web.Application
    state: SandboxState

    @property
    def store(self) -> ArchiveStore:
        return self.app[ARCHIVE_KEY]

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def ok(self, path: str) -> bytes:
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return body

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def archive_stats(self) -> dict[str, Any]:
        return dict(json.loads(self.ok("/sandbox/archive-stats")))


@contextmanager
def serve(
    config: SandboxConfig | None = None,
    *,
    with_rest: bool = False,
    settings: ArchiveSettings | None = None,
    wall: FakeWall | None = None,
) -> Iterator[Served]:
    """An app with the archive routes (and the REST API when `with_rest`) on a thread."""
    config = config or SandboxConfig(frozen_now_s=NOW)
    state = SandboxState(config, wallclock=wall or FakeWall())
    if with_rest:
        app = make_app(state)
    else:
        app = web.Application()
        app[STATE_KEY] = state
    add_archive_routes(app, STATE_KEY, settings=settings)
    add_archive_routes(app, STATE_KEY)  # a second call (make_app wired it already) is a no-op
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    port = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, name="archive-test", daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{port}", app, state)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def path(market: str, period: str, symbol: str, interval: str, day: str) -> str:
    return archive_url("", market, period, symbol, interval, day)


def unzip(body: bytes) -> tuple[list[str], bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        names = zf.namelist()
        return names, zf.read(names[0])


def rows_of(csv: bytes, *, header: bool) -> list[list[bytes]]:
    lines = csv.split(b"\n")
    assert lines[-1] == b"", "every row ends with a newline"
    lines = lines[:-1]
    if header:
        assert lines[0] + b"\n" == FUTURES_HEADER
        lines = lines[1:]
    else:
        assert not lines or lines[0][:1].isdigit(), "spot archives have no header"
    return [line.split(b",") for line in lines]


def assert_rows_equal_expected(
    rows: list[list[bytes]],
    symbol: str,
    interval_s: int,
    start_s: int,
    end_s: int,
    config: SandboxConfig,
    *,
    per_s: int,
) -> None:
    """Rows equal `expected_bars` bit for bit, times in `per_s` units per second."""
    exp = expected_bars(symbol, interval_s, start_s, end_s, config)
    assert len(rows) == len(exp["ts"]) > 0
    assert all(len(r) == 12 and r[11] == b"0" for r in rows)
    open_t = np.array([int(r[0]) for r in rows], dtype=np.int64)
    close_t = np.array([int(r[6]) for r in rows], dtype=np.int64)
    assert open_t.tolist() == (exp["ts"] * per_s).tolist()
    assert (close_t - open_t).tolist() == [interval_s * per_s - 1] * len(rows)
    for i, col in enumerate(COLS, start=1):
        got = np.array([float(r[i]) for r in rows], dtype=np.float64)
        assert np.array_equal(got, exp[col]), col  # bit-identical floats
    for r in rows[:50]:
        for i in (1, 2, 3, 4, 5, 7, 9, 10):
            assert DEC8.fullmatch(r[i]), r[i]  # 8 decimals, like the REST klines


def fetch_rows(
    sv: Served, market: str, period: str, symbol: str, interval: str, day: str
) -> list[list[bytes]]:
    """The CSV rows of a published archive (futures files: after their header)."""
    body = sv.ok(path(market, period, symbol, interval, day))
    return rows_of(unzip(body)[1], header=market == "um")


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def checksum_of(sv: Served, zip_path: str) -> str:
    text = sv.ok(zip_path + ".CHECKSUM").decode()
    name = zip_path.rsplit("/", 1)[1]
    found = re.fullmatch(r"([0-9a-f]{64})  (\S+)\n", text)
    assert found is not None and found.group(2) == name, text
    return found.group(1)


# --------------------------------------------------------------------------- content
def test_monthly_spot_1m_zip_before_2025_is_milliseconds_and_exact() -> None:
    p = path("spot", "monthly", "BTCUSDT", "1m", "2024-12")
    assert p == "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip"
    with serve() as sv:
        status, headers, body = sv.get(p)
        assert status == 200 and headers["Content-Type"] == "application/zip"
        assert int(headers["Content-Length"]) == len(body)
        names, csv = unzip(body)
        assert names == ["BTCUSDT-1m-2024-12.csv"]
        rows = rows_of(csv, header=False)
        assert len(rows) == 31 * 1440
        assert rows[0][0] == b"1733011200000" and rows[-1][6] == b"1735689599999"
        cfg = sv.state.config
        assert_rows_equal_expected(rows, "BTC/USDT", 60, DEC2024, JAN2025, cfg, per_s=1000)
        assert checksum_of(sv, p) == sha256(body)


def test_spot_files_from_2025_print_microseconds() -> None:
    with serve() as sv:
        cfg = sv.state.config
        monthly = fetch_rows(sv, "spot", "monthly", "ETHUSDT", "1h", "2025-01")
        feb = JAN2025 + 31 * DAY
        assert_rows_equal_expected(monthly, "ETH/USDT", 3600, JAN2025, feb, cfg, per_s=10**6)
        assert monthly[0][0] == b"1735689600000000" and monthly[0][6] == b"1735693199999999"

        day = FEB10 - DAY  # 2025-02-09
        daily = fetch_rows(sv, "spot", "daily", "BTCUSDT", "1m", "2025-02-09")
        assert_rows_equal_expected(daily, "BTC/USDT", 60, day, FEB10, cfg, per_s=10**6)

        # Binance's own example (binance-public-data#386): 1s, 2025-01-01, microseconds
        secs = fetch_rows(sv, "spot", "daily", "BTCUSDT", "1s", "2025-01-01")
        assert secs[0][0] == b"1735689600000000" and secs[0][6] == b"1735689600999999"
        assert_rows_equal_expected(secs, "BTC/USDT", 1, JAN2025, JAN2025 + DAY, cfg, per_s=10**6)

        # the last day of 2024 is still milliseconds
        last = fetch_rows(sv, "spot", "daily", "BTCUSDT", "1m", "2024-12-31")
        assert_rows_equal_expected(last, "BTC/USDT", 60, JAN2025 - DAY, JAN2025, cfg, per_s=1000)
        assert last[-1][6] == b"1735689599999"


def test_futures_zip_has_header_and_stays_in_milliseconds() -> None:
    with serve() as sv:
        cfg = sv.state.config
        p = path("um", "monthly", "BTCUSDT", "1h", "2025-01")
        assert p == "/data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01.zip"
        body = sv.ok(p)
        names, csv = unzip(body)
        assert names == ["BTCUSDT-1h-2025-01.csv"]
        assert csv.startswith(
            b"open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            b"taker_buy_volume,taker_buy_quote_volume,ignore\n1735689600000,"
        )
        rows = rows_of(csv, header=True)
        feb = JAN2025 + 31 * DAY
        assert_rows_equal_expected(rows, "BTC/USDT:USDT", 3600, JAN2025, feb, cfg, per_s=1000)
        spot = expected_bars("BTC/USDT", 3600, JAN2025, feb, cfg)
        assert not np.array_equal(spot["close"], [float(r[4]) for r in rows])  # its own bars
        assert checksum_of(sv, p) == sha256(body)

        daily = fetch_rows(sv, "um", "daily", "SOLUSDT", "5m", "2025-02-09")
        assert_rows_equal_expected(daily, "SOL/USDT:USDT", 300, FEB10 - DAY, FEB10, cfg, per_s=1000)


def test_archive_rows_are_the_rest_klines_byte_for_byte() -> None:
    with serve(with_rest=True) as sv:
        for api, market, day, per_ms in (
            ("/api/v3/klines", "spot", "2024-12-31", 1),
            ("/api/v3/klines", "spot", "2025-02-09", 1000),  # µs file, ms REST
            ("/fapi/v1/klines", "um", "2025-02-09", 1),
        ):
            start = parse_archive_path(path(market, "daily", "ETHUSDT", "1m", day))
            assert start is not None
            start_ms = start[0].start_s * 1000
            rest: list[list[Any]] = []
            for page in range(2):
                query = f"symbol=ETHUSDT&interval=1m&startTime={start_ms + page * 60_000_000}"
                status, _, raw = sv.get(f"{api}?{query}&limit=1000")
                assert status == 200
                rest.extend(json.loads(raw))
            rest = rest[:1440]
            csv = unzip(sv.ok(path(market, "daily", "ETHUSDT", "1m", day)))[1]
            rows = rows_of(csv, header=market == "um")
            assert len(rows) == len(rest) == 1440
            for got, want in zip(rows, rest, strict=True):
                assert int(got[0]) == want[0] * per_ms  # ms, or µs: x 1000
                assert int(got[6]) == want[6] * per_ms + per_ms - 1  # ...59999 -> ...59999999
                want_text = [str(v).encode() for v in want]
                assert got[1:6] + got[7:] == want_text[1:6] + want_text[7:]


# --------------------------------------------------------------------------- checksums
def test_checksums_verify_except_the_deliberately_wrong_one() -> None:
    assert expected_checksum_mismatch_files() == [WRONG_CHECKSUM_PATH]
    assert WRONG_CHECKSUM_PATH == "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-03.zip"
    with serve() as sv:
        wrong_body = sv.ok(WRONG_CHECKSUM_PATH)
        assert checksum_of(sv, WRONG_CHECKSUM_PATH) != sha256(wrong_body)
        # ... while its content is correct
        rows = rows_of(unzip(wrong_body)[1], header=False)
        apr = MAR2023 + 31 * DAY
        assert_rows_equal_expected(rows, "BTC/USDT", 60, MAR2023, apr, sv.state.config, per_s=1000)
        for p in (
            path("spot", "monthly", "BTCUSDT", "1h", "2023-03"),
            path("spot", "monthly", "ETHUSDT", "1m", "2023-03"),
            path("spot", "daily", "BTCUSDT", "1m", "2023-03-01"),
            path("um", "monthly", "BTCUSDT", "1h", "2023-03"),
            path("um", "daily", "BTCUSDT", "1d", "2023-03-31"),
        ):
            assert checksum_of(sv, p) == sha256(sv.ok(p)), p
        headers = sv.get(WRONG_CHECKSUM_PATH + ".CHECKSUM", "HEAD")[1]
        assert headers["Content-Type"].startswith("text/plain")


def test_zips_are_deterministic_and_served_from_the_cache() -> None:
    p = path("spot", "daily", "BNBUSDT", "1m", "2024-06-01")
    with serve() as sv:
        first = sv.ok(p)
        stats = sv.archive_stats()["cache"]
        second = sv.ok(p)
        after = sv.archive_stats()["cache"]
        assert second == first
        assert (after["hits"], after["misses"]) == (stats["hits"] + 1, stats["misses"])
        cfg = sv.state.config
    fresh = ArchiveStore().lookup(cfg, p, NOW)  # another store (or process): same bytes
    assert fresh.status == 200 and fresh.body == first
    with serve(SandboxConfig(frozen_now_s=NOW, seed=7)) as other:
        assert other.ok(p) != first  # a different data seed is different data


# --------------------------------------------------------------------------- availability
def test_current_periods_are_absent_and_files_publish_after_the_lag() -> None:
    with serve() as sv:
        clock = sv.state.clock

        def status(market: str, period: str, day: str, interval: str = "1m") -> int:
            return sv.get(path(market, period, "BTCUSDT", interval, day))[0]

        for market in ("spot", "um"):
            assert status(market, "monthly", "2025-02") == 404  # the month is not over
            assert status(market, "monthly", "2025-01") == 200
            assert status(market, "daily", "2025-02-10") == 404  # today
            assert status(market, "daily", "2025-02-09") == 200
            assert status(market, "daily", "2025-02-11") == 404  # the future
        # daily: published 1 h after the day ends
        clock.freeze(FEB10 + 3600 - 0.001)
        assert status("spot", "daily", "2025-02-09") == 404
        clock.freeze(FEB10 + 3600)
        assert status("spot", "daily", "2025-02-09") == 200
        last_modified = sv.get(path("spot", "daily", "BTCUSDT", "1m", "2025-02-09"))[1]
        assert last_modified["Last-Modified"] == "Mon, 10 Feb 2025 01:00:00 GMT"
        # monthly: 1 h after the month ends (the last day's daily file too)
        feb1 = JAN2025 + 31 * DAY
        clock.freeze(feb1 + 3599)
        assert status("spot", "monthly", "2025-01") == 404
        assert status("um", "monthly", "2025-01") == 404
        assert status("spot", "daily", "2025-01-31") == 404
        assert status("spot", "daily", "2025-01-30") == 200
        clock.freeze(feb1 + 3600)
        assert status("spot", "monthly", "2025-01") == 200
        assert status("spot", "daily", "2025-01-31") == 200
        # a 1w bar opening on Mon 2025-01-27 closes on 2025-02-03: January waits for it
        assert status("spot", "monthly", "2025-01", "1w") == 404
        clock.freeze(feb1 + 2 * DAY + 3600 - 1)
        assert status("spot", "monthly", "2025-01", "1w") == 404
        clock.freeze(feb1 + 2 * DAY + 3600)
        body = sv.ok(path("spot", "monthly", "BTCUSDT", "1w", "2025-01"))
        weeks = rows_of(unzip(body)[1], header=False)
        assert [int(r[0]) // 10**6 for r in weeks] == [
            JAN2025 + d * DAY
            for d in (5, 12, 19, 26)  # Mondays 6, 13, 20, 27 January
        ]
        assert_rows_equal_expected(
            weeks, "BTC/USDT", 7 * DAY, JAN2025, feb1, sv.state.config, per_s=10**6
        )


def test_lags_are_settings_and_rest_publish_delay_holds_files_back() -> None:
    settings = ArchiveSettings(daily_lag_s=0, monthly_lag_s=2 * DAY)
    with serve(SandboxConfig(frozen_now_s=FEB10), settings=settings) as sv:
        assert sv.get(path("spot", "daily", "BTCUSDT", "1m", "2025-02-09"))[0] == 200
        sv.state.clock.freeze(JAN2025 + 33 * DAY - 1)  # 2025-02-02 23:59:59
        assert sv.get(path("spot", "monthly", "BTCUSDT", "1m", "2025-01"))[0] == 404
        sv.state.clock.freeze(JAN2025 + 33 * DAY)
        assert sv.get(path("spot", "monthly", "BTCUSDT", "1m", "2025-01"))[0] == 200
    delayed = SandboxConfig(frozen_now_s=FEB10 + 7200 - 1, publish_delay_s=7200)
    with serve(delayed) as sv:
        assert sv.get(path("spot", "daily", "BTCUSDT", "1m", "2025-02-09"))[0] == 404
        sv.state.clock.freeze(FEB10 + 7200)
        assert sv.get(path("spot", "daily", "BTCUSDT", "1m", "2025-02-09"))[0] == 200


def test_files_before_listing_do_not_exist() -> None:
    mar15 = MAR2023 + 14 * DAY
    listing = mar15 + 12 * 3600  # SOL/USDT lists 2023-03-15 12:00 UTC here
    cfg = SandboxConfig(frozen_now_s=NOW, listing_ts={"SOL/USDT": listing})
    with serve(cfg) as sv:
        assert sv.get(path("spot", "monthly", "SOLUSDT", "1m", "2023-02"))[0] == 404
        assert sv.get(path("spot", "daily", "SOLUSDT", "1m", "2023-03-14"))[0] == 404
        assert sv.get(path("spot", "daily", "SOLUSDT", "1m", "2023-03-14") + ".CHECKSUM")[0] == 404
        first_day = fetch_rows(sv, "spot", "daily", "SOLUSDT", "1m", "2023-03-15")
        assert len(first_day) == 720 and int(first_day[0][0]) == listing * 1000
        assert_rows_equal_expected(first_day, "SOL/USDT", 60, mar15, mar15 + DAY, cfg, per_s=1000)
        month = fetch_rows(sv, "spot", "monthly", "SOLUSDT", "1h", "2023-03")
        assert int(month[0][0]) == listing * 1000 and len(month) == 17 * 24 - 12
        # the perpetual lists at max(spot listing, 2019-09-08) unless configured
        assert sv.get(path("um", "daily", "BTCUSDT", "1d", "2019-09-07"))[0] == 404
        assert sv.get(path("um", "daily", "BTCUSDT", "1d", "2019-09-08"))[0] == 200
        assert sv.get(path("um", "daily", "SOLUSDT", "1m", "2023-03-14"))[0] == 404
        # unknown markets: no symbol, and no perpetual of a non-USDT market
        assert sv.get(path("spot", "daily", "DOGEUSDT", "1m", "2024-01-01"))[0] == 404
        assert sv.get(path("um", "daily", "ETHBTC", "1m", "2024-01-01"))[0] == 404
        assert sv.get(path("spot", "daily", "ETHBTC", "1m", "2024-01-01"))[0] == 200


def test_gaps_are_absent_rows_and_a_fully_gapped_day_has_no_file() -> None:
    dec30, dec31 = JAN2025 - 2 * DAY, JAN2025 - DAY
    gaps = {"BTC/USDT": [[dec30, dec31], [dec31 + 10 * 3600, dec31 + 12 * 3600]]}
    cfg = SandboxConfig(frozen_now_s=NOW, gaps=gaps)
    with serve(cfg) as sv:
        rows = fetch_rows(sv, "spot", "daily", "BTCUSDT", "1m", "2024-12-31")
        assert len(rows) == 1440 - 120
        assert_rows_equal_expected(rows, "BTC/USDT", 60, dec31, JAN2025, cfg, per_s=1000)
        opens = {int(r[0]) // 1000 for r in rows}
        assert dec31 + 10 * 3600 not in opens and dec31 + 12 * 3600 in opens
        assert sv.get(path("spot", "daily", "BTCUSDT", "1m", "2024-12-30"))[0] == 404
        month = fetch_rows(sv, "spot", "monthly", "BTCUSDT", "1m", "2024-12")
        assert len(month) == 31 * 1440 - 1440 - 120
        # spot gaps never touch the perpetual
        perp = fetch_rows(sv, "um", "daily", "BTCUSDT", "1m", "2024-12-30")
        assert len(perp) == 1440


# --------------------------------------------------------------------------- faults
def test_missing_checksum_and_corrupt_files() -> None:
    truncated = path("spot", "daily", "ETHUSDT", "1h", "2024-05-01")
    misaligned = path("um", "daily", "ETHUSDT", "1h", "2024-05-01")
    no_checksum = path("spot", "daily", "BTCUSDT", "1h", "2024-05-01")
    faults = ArchiveFaults(
        corrupt={truncated: "truncated", misaligned.lstrip("/"): "misaligned"},
        missing_checksum=(no_checksum,),
    )
    day = 1_714_521_600  # 2024-05-01
    with serve(settings=ArchiveSettings(faults=faults)) as sv:
        cfg = sv.state.config
        # (3) listed, but its .CHECKSUM is missing
        rows = fetch_rows(sv, "spot", "daily", "BTCUSDT", "1h", "2024-05-01")
        assert_rows_equal_expected(rows, "BTC/USDT", 3600, day, day + DAY, cfg, per_s=1000)
        status, _, err = sv.get(no_checksum + ".CHECKSUM")
        assert status == 404 and b"<Code>NoSuchKey</Code>" in err
        # (2) truncated: half the rows, the last one cut mid-line; the checksum matches
        body = sv.ok(truncated)
        assert checksum_of(sv, truncated) == sha256(body)
        csv = unzip(body)[1]
        assert not csv.endswith(b"\n")
        lines = csv.split(b"\n")
        assert len(lines) == 13 and len(lines[-1].split(b",")) < 12
        exp = expected_bars("ETH/USDT", 3600, day, day + DAY, cfg)
        assert [int(x.split(b",")[0]) for x in lines[:12]] == (exp["ts"][:12] * 1000).tolist()
        # (2) misaligned: the middle row 30 s late; the checksum matches
        body = sv.ok(misaligned)
        assert checksum_of(sv, misaligned) == sha256(body)
        rows = rows_of(unzip(body)[1], header=True)
        exp = expected_bars("ETH/USDT:USDT", 3600, day, day + DAY, cfg)
        shift = [int(r[0]) - t * 1000 for r, t in zip(rows, exp["ts"], strict=True)]
        assert shift == [0] * 12 + [30_000] + [0] * 11
        assert [float(r[4]) for r in rows] == exp["close"].tolist()  # values intact
        # the default wrong checksum stays unless `wrong_checksum` is set
        assert expected_checksum_mismatch_files(faults) == [WRONG_CHECKSUM_PATH]


def test_faults_are_configurable_over_the_admin_route() -> None:
    p = path("spot", "daily", "ETHUSDT", "1d", "2024-05-01")
    with serve() as sv:
        assert json.loads(sv.ok("/sandbox/archive-config")) == ArchiveSettings().to_dict()
        status, body = sv.post("/sandbox/archive-config", {"missing_checksum": [p]})
        assert status == 200 and body["missing_checksum"] == [p]
        assert body["wrong_checksum"] == [WRONG_CHECKSUM_PATH]  # other knobs kept
        assert sv.get(p)[0] == 200 and sv.get(p + ".CHECKSUM")[0] == 404
        status, body = sv.post("/sandbox/archive-config", {"corrupt": {p: "shuffled"}})
        assert status == 400 and "shuffled" in body["error"]
        status, body = sv.post("/sandbox/archive-config", {"nope": 1})
        assert status == 400 and "nope" in body["error"]
        status, body = sv.post("/sandbox/archive-config", {"missing_checksum": []})
        assert status == 200 and sv.get(p + ".CHECKSUM")[0] == 200
        wrong = sv.ok(WRONG_CHECKSUM_PATH)
        assert checksum_of(sv, WRONG_CHECKSUM_PATH) != sha256(wrong)
        status, body = sv.post("/sandbox/archive-config", {"wrong_checksum": []})
        assert status == 200 and body["wrong_checksum"] == []
        assert checksum_of(sv, WRONG_CHECKSUM_PATH) == sha256(wrong)
        assert expected_checksum_mismatch_files(ArchiveFaults(wrong_checksum=())) == []


def test_down_answers_503_and_latency_delays_archive_responses() -> None:
    p = path("spot", "daily", "ETHUSDT", "1h", "2024-05-01")
    with serve() as sv:
        sv.state.configure({"down": True})
        for target in (p, p + ".CHECKSUM"):
            status, headers, body = sv.get(target)
            assert status == 503 and headers["Content-Type"].startswith("application/xml")
            assert b"<Code>ServiceUnavailable</Code>" in body
        sv.state.configure({"down": False, "latency_ms": 300})
        for method in ("GET", "HEAD"):
            started = time.perf_counter()
            assert sv.get(p, method)[0] == 200
            assert time.perf_counter() - started >= 0.3
        assert sv.archive_stats()["by_status"] == {"503": 2, "200": 2}


def test_archive_downloads_spend_no_rest_weight_and_ignore_bans() -> None:
    wall = FakeWall()
    cfg = SandboxConfig(frozen_now_s=NOW, weight_limit_per_minute=2)  # one klines request
    klines = "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5"
    with serve(cfg, with_rest=True, wall=wall) as sv:
        assert sv.get(klines)[0] == 200
        assert sv.get(klines)[0] == 429  # the budget is spent: penalty window open
        before = sv.state.stats()
        zips = [path("spot", "daily", "BTCUSDT", "1h", f"2024-05-{d:02d}") for d in range(1, 6)]
        for p in zips:
            assert sv.get(p)[0] == 200 and sv.get(p + ".CHECKSUM")[0] == 200
        assert sv.get(zips[0], "HEAD")[0] == 200
        assert sv.get("/data/spot/nothing")[0] == 404
        after = sv.state.stats()
        for key in ("requests_total", "by_endpoint", "by_status", "weight_history", "sent_418"):
            assert after[key] == before[key], key
        assert not any(k.startswith("archive") for k in after["by_endpoint"])
        stats = sv.archive_stats()
        assert stats["requests_total"] == 12
        assert stats["by_bucket"]["archive/zip"]["requests"] == 6
        assert stats["by_bucket"]["archive/zip"]["head"] == 1
        assert stats["by_bucket"]["archive/checksum"]["requests"] == 5
        assert stats["by_bucket"]["archive/other"]["requests"] == 1
        assert stats["by_status"] == {"200": 11, "404": 1}
        assert sv.post("/sandbox/archive-reset", {})[0] == 200
        assert sv.archive_stats()["requests_total"] == 0
        wall.advance(1)  # past the in-flight grace
        assert sv.get(klines)[0] == 418  # REST still penalised: the client ignored Retry-After


# --------------------------------------------------------------------------- HTTP surface
def test_head_matches_get_and_unknown_paths_are_s3_no_such_key() -> None:
    p = path("spot", "monthly", "BNBUSDT", "1d", "2024-02")
    with serve() as sv:
        status, get_headers, body = sv.get(p)
        status_h, head_headers, head_body = sv.get(p, "HEAD")
        assert status == status_h == 200 and head_body == b""
        assert head_headers["Content-Length"] == get_headers["Content-Length"] == str(len(body))
        assert head_headers["ETag"] == get_headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        assert len(rows_of(unzip(body)[1], header=False)) == 29  # 2024 is a leap year
        for bad in (
            "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-3.zip",
            "/data/spot/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2023-03.zip",
            "/data/spot/daily/klines/BTCUSDT/1w/BTCUSDT-1w-2023-03-06.zip",
            "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2023-02-30.zip",
            "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2023-03.zip",
            "/data/futures/um/monthly/klines/BTCUSDT/1s/BTCUSDT-1s-2023-03.zip",
            "/data/futures/cm/monthly/klines/BTCUSD_PERP/1m/BTCUSD_PERP-1m-2023-03.zip",
            "/data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2023-03.zip",
            "/data/spot/monthly/klines/ETHUSDT/1m/BTCUSDT-1m-2023-03.zip",
            "/data/spot/monthly/klines/btcusdt/1m/btcusdt-1m-2023-03.zip",
            "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-03.zip.md5",
            "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-03.csv",
            "/data/spot/monthly/klines/BTCUSDT/1m/",
            "/data/",
        ):
            for method in ("GET", "HEAD"):
                status, headers, err = sv.get(bad, method)
                assert status == 404, (bad, method)
                assert headers["Content-Type"].startswith("application/xml")
            assert err == b""  # HEAD
            err = sv.get(bad)[2]
            assert b"<Error><Code>NoSuchKey</Code>" in err
            assert f"<Key>{bad.lstrip('/')}</Key>".encode() in err


def test_archive_url_builds_binance_urls() -> None:
    base = "https://data.binance.vision/"
    assert archive_url(base, "spot", "monthly", "BTCUSDT", "1m", date(2023, 3, 17)) == (
        "https://data.binance.vision/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-03.zip"
    )
    assert archive_url(base, "um", "daily", "ETHUSDT", "4h", "2025-01-02") == (
        "https://data.binance.vision/data/futures/um/daily/klines/ETHUSDT/4h/"
        "ETHUSDT-4h-2025-01-02.zip"
    )
    assert archive_url("", "spot", "monthly", "BTCUSDT", "1m", "2023-03") == WRONG_CHECKSUM_PATH
    for bad in (("cm", "monthly"), ("spot", "weekly")):
        with pytest.raises(ValueError):
            archive_url(base, *bad, "BTCUSDT", "1m", date(2023, 3, 1))
    with pytest.raises(ValueError):
        archive_url(base, "spot", "daily", "BTCUSDT", "1m", "2023/03/01")
