"""freqtrade with its Binance archive download pointed at another host (the sandbox).

    bench/.peers/freqtrade/bin/python bench/peers/freqtrade_archive.py BASE_URL REPORT.json \
        download-data ...   # the arguments `freqtrade` takes

Run by freqtrade's own interpreter (bench/.peers/freqtrade). freqtrade (2026.9) builds
every archive URL in `freqtrade.exchange.binance_public_data` from the fixed prefix
`https://data.binance.vision`; this wrapper replaces that prefix with BASE_URL in the
module's two URL builders (looked up by name at each call, so the download code itself
runs unchanged), then calls `freqtrade.main.main` with the remaining arguments, exactly
as the `freqtrade` console script does. Nothing installed is modified.

It also writes REPORT.json when freqtrade exits: every archive URL freqtrade asked for
(as sent, in order) and, per `download_archive_ohlcv` call, the rows the archive path
returned and their first/last date. Its log lines are freqtrade's own: the archive path
logs at DEBUG only (its "Downloaded data for ... from https://data.binance.vision" text
is a constant), so the wrapper adds one INFO line per archive download.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

VISION = "https://data.binance.vision"


def install(base_url: str, report: dict[str, Any]) -> None:
    from freqtrade.exchange import binance, binance_public_data

    base = base_url.rstrip("/")
    logger = logging.getLogger("bench.freqtrade_archive")

    def redirect(build):  # type: ignore[no-untyped-def]
        def url(*args: Any, **kwargs: Any) -> str:
            original = build(*args, **kwargs)
            if not original.startswith(VISION + "/"):
                raise RuntimeError(f"unexpected archive URL {original!r}")
            sent = base + original[len(VISION) :]
            report["urls"].append(sent)
            return sent

        return url

    for name in ("binance_vision_ohlcv_zip_url", "binance_vision_trades_zip_url"):
        setattr(binance_public_data, name, redirect(getattr(binance_public_data, name)))

    download = binance.download_archive_ohlcv

    async def counted(*args: Any, **kwargs: Any) -> Any:
        df = await download(*args, **kwargs)
        entry: dict[str, Any] = {"pair": kwargs.get("pair"), "rows": len(df)}
        if len(df):
            entry["first"] = str(df["date"].iloc[0])
            entry["last"] = str(df["date"].iloc[-1])
        report["archive_calls"].append(entry)
        logger.info("archive download for %s from %s: %d rows", entry["pair"], base, len(df))
        return df

    binance.download_archive_ohlcv = counted


def main() -> None:
    base_url, report_path, *argv = sys.argv[1:]
    report: dict[str, Any] = {"base_url": base_url, "urls": [], "archive_calls": []}
    install(base_url, report)
    from freqtrade.main import main as freqtrade_main

    try:
        freqtrade_main(argv)
    finally:
        with open(report_path, "w") as fh:
            json.dump(report, fh)


if __name__ == "__main__":
    main()
