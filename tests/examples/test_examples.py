"""The examples run end to end against the bundled sandbox (each builds its own project)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from examples import backtest_pinned, downstream_asset, live_loop

ROOT = Path(__file__).resolve().parents[2]


def test_backtest_pinned_reproduces_its_fingerprint() -> None:
    result = backtest_pinned.main([])
    assert result["bars"] == 3 * 1440
    assert result["as_of"] == "2024-01-08T00:00:30Z"  # committed at the sandbox's clock
    assert str(result["dataset_fingerprint"]).startswith("sha256:")
    assert result["trades"] > 0


def test_live_loop_acts_on_fresh_reads() -> None:
    steps = live_loop.main(["--steps", "3"])
    assert [s["downgrade"] for s in steps] == [None, None, None]
    assert all(s["action"] in ("long", "flat") for s in steps)
    as_ofs = [s["as_of"] for s in steps]
    assert as_ofs == sorted(as_ofs) and len(set(as_ofs)) == 3


def test_downstream_asset_materializes_with_the_echo() -> None:
    result = downstream_asset.main([])
    assert result.success
    (event,) = result.asset_materializations_for_node("btc_daily_returns")
    metadata = event.metadata
    assert str(metadata["dataset_fingerprint"].value).startswith("sha256:")
    assert metadata["as_of"].value == "2024-01-08T00:00:30Z"
    assert metadata["rows_read"].value == 4 * 1440


def test_an_example_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, "examples/backtest_pinned.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"dataset_fingerprint": "sha256:' in done.stdout
