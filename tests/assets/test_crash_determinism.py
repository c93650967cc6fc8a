"""Any sequence of SIGKILLs and reruns ends byte-identical to one clean run.

The real CLI (`python -m seamless_assets.cli backfill`) runs in a child process against
the sandbox exchange, with confirmed gaps and corrupted rows in the data so manifests
carry non-zero flags. One project is killed ten times, at moments spread over the
stages of a run (start-up, fetch, hot-store write, publish: the stage is read from the
run's log and the files appearing) and rerun after each kill; a last rerun completes.
Another project runs once, uninterrupted, against its own sandbox with the same data.
Every artifact file (sha256), the hot-store bars, the gap ledger and the conformance
events must then be equal, and no temp file may remain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.config import load_config
from seamless_assets.core.frame import Range

from .conftest import DAY, open_artifacts, open_hot, tree_digest, write_config

ROOT = Path(__file__).resolve().parents[2]
NODE = "ohlcv:binance:BTC/USDT:1m"
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
DAYS = 12
WINDOW = Range(T0, T0 + DAYS * DAY)
HOUR = 3600
GAPS = [[T0 + 2 * DAY + HOUR, T0 + 2 * DAY + 3 * HOUR], [T0 + 7 * DAY + 600, T0 + 7 * DAY + 2400]]
CORRUPTIONS = [
    {"symbol": "BTC/USDT", "ts": T0 + 4 * DAY + 10 * HOUR, "kind": "duplicate"},
    {"symbol": "BTC/USDT", "ts": T0 + 5 * DAY + 12 * HOUR, "kind": "high_below_low"},
    {"symbol": "BTC/USDT", "ts": T0 + 9 * DAY + 8 * HOUR, "kind": "nan"},
    {"symbol": "BTC/USDT", "ts": T0 + 10 * DAY + 60, "kind": "duplicate"},
]
STAGES = ("startup", "fetch", "store", "publish")


def sandbox_config() -> SandboxConfig:
    # Latency stretches the fetch (about 20 pages) so kills can land inside it.
    return SandboxConfig(gaps={"BTC/USDT": GAPS}, corruptions=CORRUPTIONS, latency_ms=60)


@dataclass
class Observed:
    """What a running backfill has done so far."""

    seconds: float
    klines: int  # kline requests this run made
    stage: str  # the last stage its log announced
    data_files: int  # data.parquet files written by this run
    manifests: int  # manifests written by this run
    unpublished: int  # partitions without a manifest when the run started

    def reached(self, stage: str) -> bool:
        """The run announced `stage` or a later one (a fast stage may pass between polls)."""
        return STAGES.index(self.stage) >= STAGES.index(stage)

    def published(self, count: int) -> bool:
        """`count` more manifests, or all but one when fewer remain (still mid-publish)."""
        return self.manifests >= max(1, min(count, self.unpublished - 1))


class Run:
    """One `seamless backfill` child process of a project (output in files)."""

    def __init__(self, base: Path, sandbox: SandboxExchange, name: str) -> None:
        self.base, self.sandbox = base, sandbox
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEAMLESS_")}
        env.update(
            DAGSTER_HOME=str(base / "dagster_home"),
            SEAMLESS_CONFIG=str(base / "seamless.yaml"),
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        )
        self.log = base / f"{name}.log"
        cmd = [sys.executable, "-m", "seamless_assets.cli", "backfill", NODE]
        cmd += ["--start", "2024-01-01", "--end", f"2024-01-{DAYS + 1:02d}"]
        self.klines0 = klines(sandbox)
        self.files0 = segment_files(base)
        self.started = time.monotonic()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)

    def observe(self) -> Observed:
        text = self.log.read_text(errors="replace")
        stage = "startup"
        for marker, name in (
            (": fetching ", "fetch"),
            (": storing ", "store"),
            (": settling ", "publish"),
        ):
            if marker in text:
                stage = name
        data, manifests = segment_files(self.base)
        return Observed(
            seconds=time.monotonic() - self.started,
            klines=klines(self.sandbox) - self.klines0,
            stage=stage,
            data_files=data - self.files0[0],
            manifests=manifests - self.files0[1],
            unpublished=DAYS - self.files0[1],
        )

    def kill_when(self, reached: Callable[[Observed], bool], timeout_s: float = 120) -> Observed:
        """SIGKILL the run as soon as `reached` holds; what it had done by then."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.observe()
            assert self.proc.poll() is None, f"run ended before its kill point:\n{self.output}"
            if reached(seen):
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=30)
                return seen
            assert time.monotonic() < deadline, f"kill point not reached:\n{self.output}"
            time.sleep(0.003)

    def finish(self, timeout_s: float = 180) -> None:
        code = self.proc.wait(timeout=timeout_s)
        assert code == 0, self.output

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def klines(sandbox: SandboxExchange) -> int:
    return int(sandbox.stats()["by_endpoint"].get("klines", {}).get("requests", 0))


def segment_files(base: Path) -> tuple[int, int]:
    root = base / "data" / "artifacts"
    if not root.exists():
        return 0, 0
    return len(list(root.rglob("data.parquet"))), len(list(root.rglob("manifest.json")))


def project(base: Path, sandbox: SandboxExchange) -> Path:
    base.mkdir(parents=True)
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster_home" / "dagster.yaml").read_text())
    return write_config(base, sandbox.url)


# Ten kill points, in order, on one project: each rerun starts from what the kills left.
# Triggers are monotone (a stage "or later"), so a stage that passes between two polls
# cannot leave a run unkilled; the test then checks that the kills did spread.
KILLS: list[tuple[str, Callable[[Observed], bool]]] = [
    ("during start-up", lambda o: o.seconds >= 0.4),
    ("as the fetch starts", lambda o: o.reached("fetch")),
    ("mid-fetch", lambda o: o.klines >= 8 or o.reached("store")),
    ("as the hot-store write starts", lambda o: o.reached("store")),
    ("as publishing starts", lambda o: o.reached("publish")),
    ("after the first segment file", lambda o: o.data_files >= 1),
    ("after four more manifests", lambda o: o.published(4)),
    ("as the refetch of holes starts", lambda o: o.reached("fetch")),
    ("as the refetched bars are stored", lambda o: o.reached("store")),
    ("after two more manifests", lambda o: o.published(2)),
]


@pytest.fixture
def sandboxes() -> Iterator[tuple[SandboxExchange, SandboxExchange]]:
    with SandboxExchange(sandbox_config()) as killed, SandboxExchange(sandbox_config()) as clean:
        yield killed, clean


def test_kills_at_ten_points_and_reruns_end_byte_identical_to_a_clean_run(
    tmp_path: Path, sandboxes: tuple[SandboxExchange, SandboxExchange]
) -> None:
    killed_sx, clean_sx = sandboxes
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    project(killed_dir, killed_sx)
    project(clean_dir, clean_sx)
    clean = Run(clean_dir, clean_sx, "clean")  # runs beside the kill sequence

    seen: list[tuple[str, Observed, int]] = []
    for i, (moment, reached) in enumerate(KILLS):
        observed = Run(killed_dir, killed_sx, f"killed_{i}").kill_when(reached)
        seen.append((moment, observed, segment_files(killed_dir)[1]))
    Run(killed_dir, killed_sx, "final").finish()
    clean.finish()

    # The kills spread over every stage, and some left a partly published set behind.
    stages = [o.stage for _, o, _ in seen]
    assert set(stages) == set(STAGES), seen
    assert any(0 < manifests < DAYS for _, _, manifests in seen), seen
    assert any(o.stage == "fetch" and o.klines > 0 and o.data_files == 0 for _, o, _ in seen)

    # Every artifact file is byte-identical, and nothing else is there (no temp files).
    killed_tree = tree_digest(killed_dir / "data" / "artifacts")
    clean_tree = tree_digest(clean_dir / "data" / "artifacts")
    strays = [p for p in killed_tree if Path(p).name.startswith(".") or ".tmp" in p]
    assert strays == []
    assert killed_tree == clean_tree
    assert sum(p.endswith("manifest.json") for p in clean_tree) == DAYS

    # The hot store agrees too: bars, gap ledger and conformance events.
    stores = [open_hot(load_config(d / "seamless.yaml")) for d in (killed_dir, clean_dir)]
    try:
        killed_hot, clean_hot = stores
        assert killed_hot.read_range(NODE, WINDOW).equals(clean_hot.read_range(NODE, WINDOW))
        assert killed_hot.ledger_gaps(NODE) == clean_hot.ledger_gaps(NODE) != []
        assert killed_hot.flag_events(NODE) == clean_hot.flag_events(NODE) != []
    finally:
        for store in stores:
            store.close()

    # The manifests carry the gaps and the corrupted rows, and verify.
    config = load_config(killed_dir / "seamless.yaml")
    assert open_artifacts(config).verify_all() == []
    totals: dict[str, int] = {}
    for path in (killed_dir / "data" / "artifacts").rglob("manifest.json"):
        for flag, n in json.loads(path.read_text())["conformance"]["flags"].items():
            totals[flag] = totals.get(flag, 0) + n
    gap_bars = sum(end - start for start, end in GAPS) // 60 + 2  # + the 2 dropped rows
    assert totals["gap"] == gap_bars
    assert totals["duplicate_ts"] == 2
    assert totals["ohlc_inconsistent"] == 1
    assert totals["non_finite"] == 1
