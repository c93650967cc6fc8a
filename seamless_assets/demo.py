"""The offline demo: replay exchange + a Dagster backfill of 2 symbols × N days of 1m."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from .cli import ensure_dagster_home, run_backfill
from .config import SeamlessConfig, load_config
from .nodes import NodeId

DEMO_NODES = ("ohlcv:binance:BTC/USDT:1m", "ohlcv:binance:ETH/USDT:1m")


def _pin_and_read(config: SeamlessConfig, node: NodeId, start: datetime, end: datetime) -> None:
    """Advance the snapshots (the as_of sensor's job) and read a backtest pinned to one."""
    from resources.reader import ComputeContext, SeamlessReader

    from .cli import advance_snapshots

    snapshots = advance_snapshots(config, [node])
    snapshot = snapshots[0]
    if snapshot is None:
        return
    print(f"snapshot:   {node} as_of {snapshot.as_of_iso} {snapshot.fingerprint}")
    context = ComputeContext(world_id="demo", execution_domain="backtest", as_of=snapshot.as_of_s)
    with SeamlessReader.open(config) as reader:
        frame, meta = reader.fetch(str(node), start, end, context)
    print(
        f"backtest:   read {len(frame)} bars pinned to as_of {meta.as_of}: "
        f"dataset_fingerprint {meta.dataset_fingerprint}"
    )


def run_demo(days: int = 7) -> int:
    from sandbox import spawn_sandbox_process  # the demo is one of the sandbox's users

    process, url = spawn_sandbox_process(port=0)
    try:
        os.environ["SEAMLESS_SANDBOX_URL"] = url
        config = load_config()
        home = ensure_dagster_home(config)
        nodes = [config.node(n) for n in DEMO_NODES]
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=days)
        print(f"replay exchange at {url}; backfilling {days} days of {len(nodes)} nodes")
        started = time.perf_counter()
        result = run_backfill(config, nodes, start, today)
        elapsed = time.perf_counter() - started
        from .cli import _print_run

        status = _print_run(result)
        print(f"took {elapsed:.1f}s")
        if status == 0:
            _pin_and_read(config, nodes[0], start, today)
        print(f"hot rows:   {config.hot_store_path} (DuckDB, table ohlcv)")
        print(f"artifacts:  {config.artifact_uri}")
        print(f"dagster:    DAGSTER_HOME={home}; open the UI with")
        print(
            f"            DAGSTER_HOME={home} DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1 "
            "DAGSTER_EVENT_BATCH_SIZE=1000 uv run dagster dev -w workspace.yaml"
        )
        print(
            f"            (this run belongs to code location "
            f"{config.dagster.code_location!r}: Overview timeline, Runs, the assets)"
        )
        print(
            "inspect:    uv run seamless coverage ohlcv:binance:BTC/USDT:1m; uv run seamless verify"
        )
        print("snapshots:  uv run seamless snapshots ohlcv:binance:BTC/USDT:1m")
        return status
    finally:
        process.terminate()
        process.wait(timeout=10)
