"""A backtest pinned to an as_of: the same as_of gives the same bars and fingerprint forever,
however the exchange restates candles later.

    uv run python examples/backtest_pinned.py                     # a bundled sandbox project
    uv run python examples/backtest_pinned.py --config seamless.yaml \\
        --as-of 2024-03-01T00:00:00Z --start 2024-02-01 --end 2024-03-01

Record the printed `{dataset_fingerprint, as_of}` with the results: rerunning with that
as_of reproduces the run bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.reader import ComputeContext, SeamlessReader

NODE = "ohlcv:binance:BTC/USDT:1m"


def sma_crossover(frame: pd.DataFrame, fast: int = 15, slow: int = 60) -> pd.Series:
    """+1 while the fast moving average is above the slow one, else 0 (long only)."""
    close = frame["close"]
    signal = (close.rolling(fast).mean() > close.rolling(slow).mean()).astype(float)
    return signal.shift(1).fillna(0.0)  # act on the next bar: no look-ahead


def backtest(reader: SeamlessReader, node: str, start: Any, end: Any, as_of: Any) -> dict[str, Any]:
    context = ComputeContext(world_id="example-backtest", execution_domain="backtest", as_of=as_of)
    frame, meta = reader.fetch(node, start, end, context)
    if meta.partial:
        # Never backtest on part of the data. Backtest reads have no latency budget by
        # default, so this only happens when a configured budget ran out; the reason says
        # which, and what the frame lacks.
        raise SystemExit(f"partial read of {node}: {meta.downgrade_reason}")
    position = sma_crossover(frame)
    returns = frame["close"].pct_change().fillna(0.0)
    equity = float(np.prod(1.0 + position * returns))
    return {
        "node_id": meta.node_id,
        "as_of": meta.as_of,
        "dataset_fingerprint": meta.dataset_fingerprint,
        "snapshot_fingerprint": meta.snapshot_fingerprint,
        "bars": len(frame),
        "trades": int((position.diff().abs() > 0).sum()),
        "return_pct": round((equity - 1.0) * 100, 4),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="seamless.yaml (default: a bundled sandbox project)")
    parser.add_argument("--node", default=NODE)
    parser.add_argument("--as-of", help="ISO-8601 or epoch seconds (required with --config)")
    parser.add_argument("--start")
    parser.add_argument("--end")
    args = parser.parse_args(argv)
    if args.config:
        if not (args.as_of and args.start and args.end):
            parser.error("--config needs --as-of, --start and --end")
        with SeamlessReader.from_config(args.config) as reader:
            result = backtest(reader, args.node, args.start, args.end, args.as_of)
    else:
        from examples.sandbox_project import DAY, START, demo_project

        with (
            demo_project(days=3) as project,
            SeamlessReader.from_config(project.config_path) as reader,
        ):
            result = backtest(reader, args.node, START, START + 3 * DAY, project.as_of_s)
            again = backtest(reader, args.node, START, START + 3 * DAY, project.as_of_s)
            assert again == result, "a pinned as_of must reproduce the run"
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
