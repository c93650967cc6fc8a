"""A downstream Dagster asset consuming a node through the read resource: daily returns of
BTC/USDT from a pinned snapshot, with the governance echo as materialization metadata.

    uv run python examples/downstream_asset.py          # materialize against a sandbox project

In a code location, add the resource once (`resources={"reader": SeamlessReader()}`) and
the asset reads through it; the pinned as_of comes from run config.
"""

# No `from __future__ import annotations`: Dagster resolves the config type at definition.
import sys
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.reader import ComputeContext, SeamlessReader

NODE = "ohlcv:binance:BTC/USDT:1m"


class DailyReturnsConfig(dg.Config):
    as_of: str  # the snapshot to pin (ISO-8601 or epoch seconds)
    start: str
    end: str


@dg.asset(description="Daily close-to-close returns of BTC/USDT, from a pinned snapshot.")
def btc_daily_returns(
    context: dg.AssetExecutionContext, config: DailyReturnsConfig, reader: SeamlessReader
) -> dg.MaterializeResult:
    compute = ComputeContext(
        world_id="example-research", execution_domain="research", as_of=config.as_of
    )
    frame, meta = reader.fetch(NODE, config.start, config.end, compute)
    if meta.partial:  # fail the run rather than materialize returns of part of the data
        raise dg.Failure(f"partial read of {NODE}: {meta.downgrade_reason}")
    closes = frame.assign(day=frame["ts"] // 86_400).groupby("day")["close"].last()
    returns = closes.pct_change().dropna()
    context.log.info(f"{len(returns)} daily returns from {meta.dataset_fingerprint}")
    return dg.MaterializeResult(
        metadata={
            "dataset_fingerprint": meta.dataset_fingerprint,
            "as_of": meta.as_of,
            "snapshot_fingerprint": meta.snapshot_fingerprint,
            "rows_read": len(frame),
            "returns": dg.MetadataValue.md(_table(returns)),
        },
        data_version=dg.DataVersion(meta.dataset_fingerprint or ""),
    )


def _table(returns: pd.Series) -> str:
    rows = [
        f"| {pd.Timestamp(int(day) * 86_400, unit='s').date()} | {value:+.4%} |"
        for day, value in returns.items()
    ]
    return "\n".join(["| day | return |", "| --- | --- |", *rows])


def main(argv: Sequence[str] | None = None) -> dg.ExecuteInProcessResult:
    from examples.sandbox_project import DAY, START, demo_project

    with demo_project(days=4) as project:
        assert project.as_of_s is not None
        run_config = dg.RunConfig(
            {
                "btc_daily_returns": DailyReturnsConfig(
                    as_of=str(project.as_of_s), start=str(START), end=str(START + 4 * DAY)
                )
            }
        )
        result = dg.materialize(
            [btc_daily_returns],
            resources={"reader": SeamlessReader(config_path=str(project.config_path))},
            run_config=run_config,
        )
        event = result.asset_materializations_for_node("btc_daily_returns")[0]
        print({k: v.value for k, v in event.metadata.items() if k != "returns"})
        return result


if __name__ == "__main__":
    main()
