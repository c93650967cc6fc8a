"""A live strategy loop: read the newest bars on each bar boundary, act only when the read
is fresh (no HOLD), and let the reader recover by itself when the exchange comes back.

    uv run python examples/live_loop.py                 # a bundled sandbox, 3 fast steps
    uv run python examples/live_loop.py --config seamless.yaml --steps 60

Against a real config the loop sleeps until the next 1m bar closes; against the sandbox
it moves the exchange clock forward instead, so the demo runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.reader import ComputeContext, SeamlessReader

NODE = "ohlcv:binance:BTC/USDT:1m"
LOOKBACK_S = 2 * 3600


def step(reader: SeamlessReader, node: str, now_s: float) -> dict[str, Any]:
    context = ComputeContext(world_id="example-live", execution_domain="live")
    frame, meta = reader.fetch(node, now_s - LOOKBACK_S, now_s + 60, context)
    action = "hold"
    if meta.downgrade is None and len(frame) >= 30:
        recent = frame["close"].iloc[-30:]
        action = "long" if recent.iloc[-1] > recent.mean() else "flat"
    return {
        "as_of": meta.as_of,
        "bars": len(frame),
        "staleness_s": meta.staleness_s,
        "downgrade": meta.downgrade,
        "reason": meta.downgrade_reason,
        "action": action,
    }


def loop(
    reader: SeamlessReader,
    node: str,
    steps: int,
    now: Callable[[], float],
    wait: Callable[[], None],
) -> list[dict[str, Any]]:
    out = []
    for _ in range(steps):
        out.append(step(reader, node, now()))
        print(json.dumps(out[-1]))
        wait()
    return out


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="seamless.yaml (default: a bundled sandbox project)")
    parser.add_argument("--node", default=NODE)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.config:

        def next_bar() -> None:
            time.sleep(60 - time.time() % 60 + 1)  # one second into the next bar

        with SeamlessReader.from_config(args.config) as reader:
            return loop(reader, args.node, args.steps, time.time, next_bar)

    from examples.sandbox_project import demo_project

    with demo_project(days=0, live=True) as project:
        clock = project.sandbox.state.clock
        with SeamlessReader.from_config(project.config_path) as reader:
            return loop(reader, args.node, args.steps, clock.now_s, lambda: clock.advance(60))


if __name__ == "__main__":
    main()
