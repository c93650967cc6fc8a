"""Failure scenarios with real processes and real servers (no mocks).

1. Three `seamless backfill` worker processes share one Redis rate budget: the sandbox
   never sees more than its per-minute weight limit and never has to ban (418).
2. A throwaway Redis is killed mid-run: the run finishes on the in-process fallback
   limiter, warns about it, and loses no bars.
3. A throwaway QuestDB is `kill -9`ed mid-run: the run fails naming QuestDB (or retries
   through); after a restart a rerun completes with no duplicate rows and artifacts
   byte-identical to a clean embedded run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import load_config
from seamless_assets.core.frame import Range
from seamless_assets.runtime import resources_from_config
from tests.services import REDIS_ADDR, REDIS_DSN, require_service, unavailable

from .conftest import DAY, tree_digest, write_config

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
QUESTDB_JAR = Path.home() / ".m2/repository/org/questdb/questdb/9.3.2/questdb-9.3.2.jar"
FALLBACK_WARNING = "falling back to the in-process limiter"


# --------------------------------------------------------------------------- helpers
def _require_binary(name: str, path: str | Path | None) -> str:
    """Fail (CI) or skip (local) when a binary the scenario starts is missing."""
    if path is not None and Path(path).exists():
        return str(path)
    unavailable(f"{name} is not installed; `bash scripts/services.sh start` installs it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def _project(
    base: Path, sandbox_url: str, symbol: str, edit: Callable[[dict[str, Any]], None]
) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    path = write_config(base, sandbox_url, symbols=(symbol,))
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


class Backfill:
    """`python -m seamless_assets.cli backfill NODE` in a child process of its own
    (own DAGSTER_HOME; output in files so a chatty run cannot block on a pipe)."""

    def __init__(self, config_path: Path, node: str, days: int, name: str) -> None:
        base = config_path.parent
        home = base / f"dagster_home_{name}"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("SEAMLESS_DATA_DIR", "SEAMLESS_CCXT_RATE_LIMITER_REDIS")
        }
        env.update(
            DAGSTER_HOME=str(home),
            SEAMLESS_CONFIG=str(config_path),
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        )
        self.out = base / f"{name}.stdout"
        self.err = base / f"{name}.stderr"
        end = datetime.fromtimestamp(T0 + days * DAY, tz=UTC)
        cmd = [sys.executable, "-m", "seamless_assets.cli", "backfill", node]
        cmd += ["--start", START.date().isoformat(), "--end", end.date().isoformat()]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(self.proc)
            raise AssertionError(
                f"backfill did not finish in {timeout_s}s:\n{self.output}"
            ) from None

    @property
    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def kill(self) -> None:
        _stop(self.proc)


def _stored(config_path: Path, node: str, days: int) -> Any:
    config = load_config(config_path)
    hot = resources_from_config(config)["hot_store"].open()  # type: ignore[attr-defined]
    try:
        return hot.read_range(node, Range(T0, T0 + days * DAY))
    finally:
        hot.close()


def _klines_served(sandbox: SandboxExchange) -> int:
    return int(sandbox.stats()["by_endpoint"].get("klines", {}).get("requests", 0))


# --------------------------------------------------------------------------- 1. shared budget
# Sandbox weights: klines 2, exchangeInfo 20, time 1. The default rate_limit takes the
# budget from exchangeInfo (B = 150 weight/min) less the 2% safety margin, and its bucket
# grants at most that in any 60 s (the burst is part of it, not on top).
BUDGET_WEIGHT = 150
SHARED_DAYS = 10


def test_three_workers_share_one_budget_without_a_ban(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    require_service("redis", REDIS_ADDR)
    sandbox.configure(weight_limit_per_minute=BUDGET_WEIGHT, ban_seconds=60)
    account = f"fail{uuid.uuid4().hex[:10]}"  # a fresh Redis bucket

    def shared_limiter(raw: dict[str, Any]) -> None:
        rate_limit = raw["seamless"]["rate_limit"]
        for name in ("tokens_per_interval", "interval_ms", "burst_tokens"):
            rate_limit.pop(name, None)  # the default budget: what the exchange publishes
        rate_limit.update(redis_dsn=REDIS_DSN)
        raw["exchanges"]["binance"]["account"] = account

    symbols = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    workers: list[tuple[Path, str, Backfill]] = []
    started = time.monotonic()
    try:
        for i, symbol in enumerate(symbols):
            path = _project(tmp_path / f"w{i}", sandbox.url, symbol, shared_limiter)
            node = f"ohlcv:binance:{symbol}:1m"
            workers.append((path, node, Backfill(path, node, SHARED_DAYS, "run")))
        codes = [w.wait(300) for _, _, w in workers]
    finally:
        for _, _, w in workers:
            w.kill()
    elapsed = time.monotonic() - started

    for (_, node, w), code in zip(workers, codes, strict=True):
        assert code == 0, f"{node} failed:\n{w.output}"
    for path, node, _ in workers:
        stored = _stored(path, node, SHARED_DAYS)
        assert len(stored) == SHARED_DAYS * 1440 and stored["ts"].is_unique, node
    stats = sandbox.stats()
    print(
        f"shared budget: {elapsed:.1f}s, max weight/min {stats['max_weight_per_minute']} "
        f"(B={BUDGET_WEIGHT}), history {stats['weight_history']}, "
        f"429={stats['sent_429']} 418={stats['sent_418']}"
    )
    assert stats["max_weight_per_minute"] <= BUDGET_WEIGHT
    assert stats["sent_418"] == 0
    assert stats["weight_history"] and len(stats["weight_history"]) >= 2  # it was throttled


# --------------------------------------------------------------------------- 2. Redis dies
@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    binary = _require_binary("redis-server", shutil.which("redis-server"))
    port = _free_port()
    log = (tmp_path / "redis.log").open("wb")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for("throwaway redis", lambda: _listening(port), 30)
        yield proc, f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)
        log.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


REDIS_DAYS = 8


def test_redis_dying_mid_run_falls_back_and_loses_no_bars(
    tmp_path: Path, sandbox: SandboxExchange, throwaway_redis: Any
) -> None:
    redis_proc, dsn = throwaway_redis
    sandbox.configure(latency_ms=700)

    def redis_limiter(raw: dict[str, Any]) -> None:
        raw["seamless"]["rate_limit"]["redis_dsn"] = dsn
        raw["seamless"]["rate_limit"]["local_semaphore"] = 1  # one request at a time
        raw["exchanges"]["binance"]["account"] = f"fail{uuid.uuid4().hex[:10]}"

    node = "ohlcv:binance:BTC/USDT:1m"
    path = _project(tmp_path / "p", sandbox.url, "BTC/USDT", redis_limiter)
    started = time.monotonic()
    run = Backfill(path, node, REDIS_DAYS, "run")
    try:
        _wait_for("kline requests", lambda: _klines_served(sandbox) >= 3, 120)
        served_before = _klines_served(sandbox)
        redis_proc.send_signal(signal.SIGKILL)
        redis_proc.wait(timeout=10)
        code = run.wait(300)
    finally:
        run.kill()
    elapsed = time.monotonic() - started
    served_after = _klines_served(sandbox) - served_before
    print(
        f"redis outage: {elapsed:.1f}s, {served_before} kline requests before, {served_after} after"
    )

    assert code == 0, run.output
    assert served_after >= 3, "Redis died too late; the fallback was not exercised"
    assert FALLBACK_WARNING in run.output, run.output
    stored = _stored(path, node, REDIS_DAYS)
    assert len(stored) == REDIS_DAYS * 1440 and stored["ts"].is_unique


# --------------------------------------------------------------------------- 3. QuestDB dies
class ThrowawayQuestDB:
    """QuestDB started from its Maven jar like scripts/services.sh, on free ports."""

    def __init__(self, root: Path) -> None:
        self.java = _require_binary("java", shutil.which("java"))
        self.jar = _require_binary("the QuestDB jar", QUESTDB_JAR)
        self.root = root
        self.http, self.pg, self.ilp = _free_port(), _free_port(), _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            QDB_HTTP_BIND_TO=f"127.0.0.1:{self.http}",
            QDB_HTTP_MIN_ENABLED="false",
            QDB_PG_NET_BIND_TO=f"127.0.0.1:{self.pg}",
            QDB_LINE_TCP_NET_BIND_TO=f"127.0.0.1:{self.ilp}",
            QDB_LINE_UDP_ENABLED="false",
            QDB_TELEMETRY_ENABLED="false",
            QDB_METRICS_ENABLED="false",
            QDB_SHARED_WORKER_COUNT="2",
            QDB_CAIRO_SQL_COPY_ROOT=str(self.root / "import"),
        )
        cmd = [self.java, "-Xms128m", "-Xmx512m", "-XX:+UseParallelGC", "-p", self.jar]
        cmd += ["-m", "io.questdb/io.questdb.ServerMain", "-d", str(self.root)]
        with (self.root.parent / "questdb.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_for("throwaway QuestDB", self._healthy, 120)

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.root.parent / "questdb.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"QuestDB exited with {self.proc.returncode}:\n{log}")
        url = f"http://127.0.0.1:{self.http}/exec?query=select%201"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        _stop(self.proc)


@pytest.fixture
def questdb(tmp_path: Path) -> Iterator[ThrowawayQuestDB]:
    server = ThrowawayQuestDB(tmp_path / "questdb" / "root")
    try:
        server.start()
        yield server
    finally:
        server.stop()


QDB_DAYS = 8


def test_questdb_kill9_mid_run_then_rerun_is_complete_and_identical(
    tmp_path: Path, sandbox: SandboxExchange, questdb: ThrowawayQuestDB, dagster_home: Path
) -> None:
    def questdb_store(raw: dict[str, Any]) -> None:
        raw["seamless"]["hot_store"] = {
            "backend": "questdb",
            "questdb_dsn": f"postgresql://admin:quest@127.0.0.1:{questdb.pg}/qdb",
            "questdb_ilp": f"http::addr=127.0.0.1:{questdb.http};",
        }
        raw["seamless"]["rate_limit"]["local_semaphore"] = 1  # one request at a time

    node = "ohlcv:binance:BTC/USDT:1m"
    path = _project(tmp_path / "qdb", sandbox.url, "BTC/USDT", questdb_store)
    sandbox.configure(latency_ms=700)
    started = time.monotonic()
    first = Backfill(path, node, QDB_DAYS, "first")
    try:
        _wait_for("kline requests", lambda: _klines_served(sandbox) >= 4, 120)
        questdb.kill9()
        first_code = first.wait(300)
    finally:
        first.kill()
    first_s = time.monotonic() - started
    if first_code != 0:  # failed: the CLI's last line names the step and QuestDB
        assert first_code == 1, first.output
        assert "FAILURE" in first.out.read_text()
        root_cause = first.err.read_text().strip().splitlines()[-1]
        assert root_cause.startswith("ohlcv__binance_BTC_USDT_1m: "), root_cause
        # the store's actionable error (address + how to start it), not the client's
        assert "StoreError: QuestDB" in root_cause and "is QuestDB up at" in root_cause, root_cause
    print(f"questdb kill -9: first run exit {first_code} after {first_s:.1f}s")

    questdb.start()  # same root, same ports
    before = len(_stored(path, node, QDB_DAYS))
    sandbox.configure(latency_ms=0)
    rerun = Backfill(path, node, QDB_DAYS, "rerun")
    try:
        assert rerun.wait(300) == 0, rerun.output
    finally:
        rerun.kill()

    stored = _stored(path, node, QDB_DAYS)
    print(f"questdb rerun: {before} rows survived the crash, {len(stored)} after the rerun")
    assert len(stored) == QDB_DAYS * 1440
    assert stored["ts"].is_unique
    # DEDUP on the restarted server: writing every bar again adds no row.
    config = load_config(path)
    hot = resources_from_config(config)["hot_store"].open()  # type: ignore[attr-defined]
    try:
        hot.upsert(node, stored)
    finally:
        hot.close()
    again = _stored(path, node, QDB_DAYS)
    assert len(again) == QDB_DAYS * 1440 and again["ts"].is_unique
    assert resources_from_config(config)["artifacts"].open().verify_all() == []  # type: ignore[attr-defined]

    (tmp_path / "embedded").mkdir()
    embedded = load_config(write_config(tmp_path / "embedded", sandbox.url))
    end = datetime.fromtimestamp(T0 + QDB_DAYS * DAY, tz=UTC)
    assert run_backfill(embedded, [embedded.node(node)], START, end).success
    published = tree_digest(config.data_dir / "artifacts")
    assert sum(k.endswith("manifest.json") for k in published) == QDB_DAYS
    assert published == tree_digest(embedded.data_dir / "artifacts")
