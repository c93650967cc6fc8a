"""The archive path end to end: a Dagster backfill of Binance 1m candles reads whole days
from the bundled exchange's data.binance.vision tree (verified against `.CHECKSUM` and by
content), REST fills the rest, and every manifest states where its bars came from."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sandbox import SandboxAdmin, SandboxConfig, SandboxExchange, expected_bars
from seamless_assets.cli import run_backfill
from seamless_assets.config import load_config
from seamless_assets.core.frame import Range
from seamless_assets.errors import ConfigError

from .conftest import DAY, tree_digest, write_config
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

SPOT, PERP = "ohlcv:binance:BTC/USDT:1m", "ohlcv:binance:BTC/USDT:USDT:1m"
COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def _config(tmp_path: Path, url: str, symbols: tuple[str, ...] = ("BTC/USDT",)) -> Path:
    path = write_config(tmp_path, url, symbols=symbols)
    config = yaml.safe_load(path.read_text())
    binance = config["exchanges"]["binance"]
    binance["ccxt_config"]["urls"]["api"]["fapiPublic"] = f"{url}/fapi/v1"
    binance["timeframes"] = ["1m"]
    binance["archives"] = {"enabled": True, "base_url": url, "max_concurrent_downloads": 3}
    path.write_text(yaml.safe_dump(config))
    return path


def _manifests(data_dir: Path, node_prefix: str) -> dict[int, dict[str, Any]]:
    """Manifests of one node's segments by window start."""
    out = {}
    for path in (data_dir / "artifacts").rglob("manifest.json"):
        if f"/artifacts/{node_prefix}" in path.as_posix():
            manifest = json.loads(path.read_text())
            out[int(manifest["range"]["start"])] = manifest
    return out


def _backfill(source: Path, node_id: str, start: int, end: int) -> dict[str, dict[str, int]]:
    """Run the backfill; the `bars_by_source` metadata of each partition materialized."""
    project = load_config(source)
    result = run_backfill(
        project,
        [project.node(node_id)],
        datetime.fromtimestamp(start, tz=UTC),
        datetime.fromtimestamp(end, tz=UTC),
    )
    assert result.success
    return {
        str(e.partition): e.materialization.metadata["bars_by_source"].value  # type: ignore[misc]
        for e in result.get_asset_materialization_events()
    }


def _assert_exact(source: Path, node_id: str, symbol: str, start: int, end: int) -> None:
    stored = _hot(load_config(source)).read_range(node_id, Range(start, end))
    expected = expected_bars(symbol, 60, start, end)
    for column in COLUMNS:
        np.testing.assert_array_equal(stored[column].to_numpy(), expected[column])


@pytest.mark.parametrize(
    ("first_day", "last_day"),
    [
        # monthly 2023-03 has the deliberately wrong .CHECKSUM (content sound); the days
        # of February and April come from daily files
        ("2023-02-27", "2023-04-02"),
        # 2025 spot files hold microsecond timestamps
        ("2025-01-30", "2025-03-02"),
    ],
)
def test_whole_days_come_from_the_archives(
    tmp_path: Path,
    sandbox: SandboxExchange,
    dagster_home: Path,
    capsys: pytest.CaptureFixture[str],
    first_day: str,
    last_day: str,
) -> None:
    source = _config(tmp_path, sandbox.url)
    start, end = _ts(first_day), _ts(last_day) + DAY
    SandboxAdmin(sandbox.url).archive_reset()
    in_ui = _backfill(source, SPOT, start, end)

    _assert_exact(source, SPOT, "BTC/USDT", start, end)
    files = SandboxAdmin(sandbox.url).archive_stats()
    assert files["by_bucket"]["archive/zip"]["requests"] == 5  # 2 daily, 1 monthly, 2 daily
    # no kline page over REST: the REST budget was spent on markets and the history start
    assert sandbox.stats()["by_endpoint"].get("klines", {}).get("requests", 0) <= 1

    manifests = _manifests(load_config(source).data_dir, "exchange=binance/symbol=BTC%2fUSDT/")
    assert sorted(manifests) == list(range(start, end, DAY))
    mismatched = set()
    for window_start, manifest in manifests.items():
        bars = manifest["provenance"]["bars"]
        assert manifest["row_count"] == 1440 and bars["rest"] == 0, (window_start, bars)
        assert bars["archive"] + bars["archive_checksum_mismatch"] == 1440
        if bars["archive_checksum_mismatch"]:
            mismatched.add(window_start)
        # the partition's materialization shows the same, nonzero sources only
        key = datetime.fromtimestamp(window_start, tz=UTC).strftime("%Y-%m-%d")
        assert in_ui[key] == {k: n for k, n in bars.items() if n}
    logged = capsys.readouterr().err
    if first_day.startswith("2023-02"):  # every day of March 2023, none else
        assert mismatched == set(range(_ts("2023-03-01"), _ts("2023-04-01"), DAY))
        assert "archive files: 1 checksum_mismatch, 4 verified" in logged
        assert "archive BTCUSDT-1m-2023-03.zip accepted, .CHECKSUM says" in logged
    else:
        assert mismatched == set()
        assert "archive files: 5 verified" in logged
    assert not (load_config(source).data_dir / "quarantine").exists()


def test_rest_fills_what_the_archives_do_not_have_yet(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path
) -> None:
    """Up to the exchange's now: the days whose files are published come from them, the
    newest (their files not published yet) over REST."""
    source = _config(tmp_path, sandbox.url)
    lag = DAY + 600
    SandboxAdmin(sandbox.url).configure_archive(daily_lag_s=lag, monthly_lag_s=lag)
    now = int(datetime.now(UTC).timestamp())  # the sandbox's clock runs on the wall's
    today = now // DAY * DAY
    start = today - 5 * DAY
    _backfill(source, SPOT, start, today)
    _assert_exact(source, SPOT, "BTC/USDT", start, today)
    manifests = _manifests(load_config(source).data_dir, "exchange=binance/symbol=BTC%2fUSDT/")
    assert sorted(manifests) == list(range(start, today, DAY))
    for day, manifest in manifests.items():
        published = day + DAY + lag <= now - 5  # (a second's margin for the run itself)
        bars = manifest["provenance"]["bars"]
        if published:
            assert bars["archive"] == 1440, (day, bars)
        elif day + DAY + lag > now + 60:
            assert bars["rest"] == 1440, (day, bars)
    assert sandbox.stats()["by_endpoint"]["klines"]["requests"] >= 2


def test_a_corrupt_archive_is_quarantined_and_rest_fills_its_day(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path
) -> None:
    source = _config(tmp_path, sandbox.url)
    day = _ts("2024-05-14")
    corrupt = {
        "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-05-14.zip": "misaligned",
        "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-05-16.zip": "truncated",
    }
    SandboxAdmin(sandbox.url).configure_archive(corrupt=corrupt)
    start, end = day - DAY, day + 3 * DAY
    _backfill(source, SPOT, start, end)

    _assert_exact(source, SPOT, "BTC/USDT", start, end)
    manifests = _manifests(load_config(source).data_dir, "exchange=binance/symbol=BTC%2fUSDT/")
    rest_days = {s for s, m in manifests.items() if m["provenance"]["bars"]["rest"] == 1440}
    assert rest_days == {day, day + 2 * DAY}
    assert {s for s, m in manifests.items() if m["provenance"]["bars"]["archive"] == 1440} == {
        day - DAY,
        day + DAY,
    }
    quarantine = load_config(source).data_dir / "quarantine" / "BTCUSDT" / "1m"
    reasons = sorted(quarantine.glob("*.reason.json"))
    assert [p.name for p in reasons] == [
        "BTCUSDT-1m-2024-05-14.zip.reason.json",
        "BTCUSDT-1m-2024-05-16.zip.reason.json",
    ]
    for path in reasons:
        reason = json.loads(path.read_text())
        assert reason["status"] == "quarantined" and reason["reason"]


def test_provenance_survives_a_rebuild_from_the_ledger(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path
) -> None:
    """Segments rebuilt by a rerun that fetches nothing (bars and ledger already stored, as
    after a crash between storing and publishing) state the same provenance, byte for byte."""
    source = _config(tmp_path, sandbox.url, symbols=("BTC/USDT", "BTC/USDT:USDT"))
    start, end = _ts("2024-02-27"), _ts("2024-03-03")
    corrupt = {"/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-28.zip": "truncated"}
    SandboxAdmin(sandbox.url).configure_archive(corrupt=corrupt)  # that day: REST
    _backfill(source, PERP, start, end)  # USDⓈ-M files (with their CSV header)
    _assert_exact(source, PERP, "BTC/USDT:USDT", start, end)
    data = load_config(source).data_dir
    before = tree_digest(data / "artifacts")
    manifests = _manifests(data, "exchange=binance/symbol=BTC%2fUSDT%3aUSDT/")
    assert {m["provenance"]["bars"]["archive"] for m in manifests.values()} == {0, 1440}
    assert _artifacts(load_config(source)).verify_all() == []

    sandbox.reset()
    SandboxAdmin(sandbox.url).archive_reset()

    shutil.rmtree(data / "artifacts")
    _backfill(source, PERP, start, end)
    # one request: the history start, recorded in the artifact store deleted with it
    assert sandbox.stats()["by_endpoint"].get("fapi/klines", {}).get("requests", 0) == 1
    assert SandboxAdmin(sandbox.url).archive_stats()["requests_total"] == 0
    after = tree_digest(data / "artifacts")
    segments = {k: v for k, v in before.items() if "/fingerprint=" in k or "segments" in k}
    assert {k: after.get(k) for k in segments} == segments


def test_archives_are_refused_where_no_archive_exists(tmp_path: Path) -> None:
    path = tmp_path / "seamless.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "seamless": {"data_dir": str(tmp_path / "data")},
                "exchanges": {"bybit": {"symbols": ["BTC/USDT"], "archives": {"enabled": True}}},
            }
        )
    )
    with pytest.raises(ConfigError, match=r"archives\.enabled"):
        load_config(path)


def test_slots_an_archive_lacks_are_asked_over_rest_then_rebuilt_from_trades(
    tmp_path: Path, dagster_home: Path
) -> None:
    """A file proves the bars it has, not that the others are empty: REST is asked for
    its holes, and where REST has none either (a candle outage) the trades fill them."""
    day = _ts("2024-05-14")
    outages = [
        {"start": day + 3 * 3600 + 7, "end": day + 3 * 3600 + 9 * 60},  # 8 bars
        {"start": day + DAY - 120, "end": day + DAY + 180},  # across two daily files
    ]
    with SandboxExchange(SandboxConfig.from_dict({"kline_gaps": {"BTC/USDT": outages}})) as sandbox:
        source = _config(tmp_path, sandbox.url)
        _backfill(source, SPOT, day, day + 2 * DAY)
        klines = sandbox.stats()["by_endpoint"]["klines"]["requests"]
        trades = sandbox.stats()["by_endpoint"]["aggTrades"]["requests"]
    _assert_exact(source, SPOT, "BTC/USDT", day, day + 2 * DAY)  # as if no outage
    assert klines >= 1 + 2 and trades >= 2  # the history start, then each hole; trades
    manifests = _manifests(load_config(source).data_dir, "exchange=binance/symbol=BTC%2fUSDT/")
    assert {s: m["provenance"]["bars"]["trades"] for s, m in manifests.items()} == {
        day: 8 + 2,
        day + DAY: 3,
    }
    for manifest in manifests.values():
        bars = manifest["provenance"]["bars"]
        assert bars["archive"] + bars["trades"] == manifest["row_count"] == 1440
        assert manifest["gaps"] == []  # nothing confirmed empty from a file's holes
