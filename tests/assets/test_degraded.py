"""Outages degrade instead of killing the code location; `seamless doctor`; `--config`
means exactly that file; no secret at rest; public-data runs never call private endpoints."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from resources.hot_store.questdb import QuestDBHotStore
from sandbox import SandboxExchange
from seamless_assets.cli import main, run_backfill
from seamless_assets.config import load_config
from tests.services import (
    QUESTDB_DSN,
    QUESTDB_ILP,
    QUESTDB_PG_ADDR,
    REDIS_ADDR,
    REDIS_DSN,
    S3_ADDR,
    S3_ENDPOINT,
    require_service,
    unavailable,
)

from .conftest import DAY, write_config

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime.fromtimestamp(START.timestamp() + 2 * DAY, tz=UTC)
NODE = "ohlcv:binance:BTC/USDT:1m"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _production_config(tmp_path: Path, sandbox_url: str, *, qdb: str, s3: str, redis: str) -> Path:
    path = write_config(tmp_path, sandbox_url)
    raw = yaml.safe_load(path.read_text())
    raw["seamless"]["hot_store"] = {"backend": "questdb", "questdb_dsn": qdb}
    raw["seamless"]["artifact"] = {
        "object_store_uri": "s3://seamless-degraded/lake",
        "s3": {"endpoint_url": s3},
    }
    raw["seamless"]["rate_limit"]["redis_dsn"] = redis
    path.write_text(yaml.safe_dump(raw))
    return path


def _dead_config(tmp_path: Path) -> Path:
    a, b, c = _free_port(), _free_port(), _free_port()
    return _production_config(
        tmp_path,
        "http://127.0.0.1:9",
        qdb=f"postgresql://admin:quest@127.0.0.1:{a}/qdb",
        s3=f"http://127.0.0.1:{b}",
        redis=f"redis://127.0.0.1:{c}/0",
    )


LOAD_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from seamless_assets.definitions import load_definitions  # what the lazy `defs` builds
repo = load_definitions().get_repository_def()
print(json.dumps({
    "seconds": time.perf_counter() - t0,
    "sensors": [s.name for s in repo.sensor_defs],
    "schedules": [s.name for s in repo.schedule_defs],
    "jobs": sorted(repo.job_names),
}))
"""


def test_definitions_load_with_every_service_down(tmp_path: Path) -> None:
    """The code server's own path (module `seamless_assets.definitions`, attribute `defs`),
    in a fresh process, with QuestDB, S3 and Redis all on dead ports."""
    path = _dead_config(tmp_path)
    env = {**os.environ, "SEAMLESS_CONFIG": str(path), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(ROOT)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"definitions loaded in {loaded['seconds']:.2f}s ({wall:.2f}s with interpreter start)")
    assert loaded["sensors"] and loaded["schedules"]
    assert "ohlcv_intraday_job" in loaded["jobs"]
    # Nothing waits on the dead ports (a connect timeout would cost ≥ 1 s per service).
    assert loaded["seconds"] < 60


def test_importing_the_definitions_module_reads_no_config(tmp_path: Path) -> None:
    (tmp_path / "seamless.yaml").write_text("seamless: [broken\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SEAMLESS_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", "import seamless_assets.definitions"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_doctor_names_each_unreachable_service_and_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _dead_config(tmp_path)
    assert main(["--config", str(path), "doctor"]) == 1
    out = capsys.readouterr().out
    lines = [
        line for line in out.splitlines() if line.split(" ", 1)[0] in ("QuestDB", "S3", "Redis")
    ]
    assert [line.split()[0] for line in lines] == ["QuestDB", "S3", "Redis"]
    for line in lines:
        assert "UNREACHABLE" in line and "not reachable at 127.0.0.1:" in line
        assert "bash scripts/services.sh start all" in line
    assert "quest@" not in out  # the DSN's password is never printed


def test_doctor_ok_when_services_listen(
    tmp_path: Path, sandbox: SandboxExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, addr in (("questdb", QUESTDB_PG_ADDR), ("redis", REDIS_ADDR), ("s3", S3_ADDR)):
        require_service(name, addr)
    path = _production_config(
        tmp_path, sandbox.url, qdb=QUESTDB_DSN, s3=S3_ENDPOINT, redis=REDIS_DSN
    )
    assert main(["--config", str(path), "doctor"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["OK", "OK", "OK"]


def test_doctor_with_embedded_defaults_has_nothing_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    assert main(["--config", str(path), "doctor"]) == 0
    assert "nothing to check" in capsys.readouterr().out


def test_backfill_uses_exactly_the_config_given(tmp_path: Path, sandbox: SandboxExchange) -> None:
    """A broken ./seamless.yaml and a broken $SEAMLESS_CONFIG do not matter with --config."""
    work = tmp_path / "cwd"
    work.mkdir()
    (work / "seamless.yaml").write_text("seamless: [broken\n")
    (tmp_path / "other.yaml").write_text("exchanges: {nope: {}}\n")
    (tmp_path / "good").mkdir()
    good = write_config(tmp_path / "good", sandbox.url)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SEAMLESS_CONFIG": str(tmp_path / "other.yaml"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    env.pop("SEAMLESS_DATA_DIR", None)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "seamless_assets.cli", "--config", str(good)),
            *("backfill", NODE, "--start", "2024-01-01", "--end", "2024-01-02"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "success" in proc.stdout
    assert (tmp_path / "good" / "data" / "hot.duckdb").is_file()


def test_backfill_with_redis_down_uses_the_in_process_limiter(
    project: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(Path(project.source).read_text())
    raw["seamless"]["rate_limit"]["redis_dsn"] = f"redis://127.0.0.1:{_free_port()}/0"
    Path(project.source).write_text(yaml.safe_dump(raw))
    config = load_config(project.source)
    result = run_backfill(config, [config.node(NODE)], START, END)
    assert result.success
    assert "in-process rate limiter" in capfd.readouterr().err


# -- secrets -----------------------------------------------------------------------------


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[str, str]]:
    password = f"redis-pw-{uuid.uuid4().hex}"
    port = _free_port()
    proc = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(tmp_path), "--requirepass", password),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from tests.services import reachable

        give_up = time.monotonic() + 10
        while not reachable(("127.0.0.1", port), 0.1):
            if proc.poll() is not None or time.monotonic() > give_up:
                unavailable("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://:{password}@127.0.0.1:{port}/0", password
    finally:
        proc.kill()
        proc.wait(10)


def _sqlite_values(path: Path) -> Iterator[bytes]:
    """Every value of every table, zlib-compressed ones (Dagster's snapshots) inflated."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        yield value.encode()
                    elif isinstance(value, bytes):
                        yield value
                        with contextlib.suppress(zlib.error):
                            yield zlib.decompress(value)


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    """Where under root any needle occurs: every file as bytes, and every value of every
    SQLite database (decompressed where Dagster compressed it)."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        found += [f"{path}: {n!r}" for n in needles if n in data]
        if data.startswith(b"SQLite format 3"):
            for value in _sqlite_values(path):
                found += [f"{path} (row): {n!r}" for n in needles if n in value]
    return found


def test_no_dsn_password_at_rest_or_in_logs(
    tmp_path: Path,
    sandbox: SandboxExchange,
    dagster_home: Path,
    redis_with_password: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    require_service("questdb", QUESTDB_PG_ADDR)
    redis_dsn, redis_password = redis_with_password
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    monkeypatch.setenv("TEST_SEAMLESS_REDIS_DSN", redis_dsn)
    monkeypatch.setenv("TEST_SEAMLESS_QUESTDB_DSN", QUESTDB_DSN)  # admin:quest@…
    path = write_config(tmp_path, sandbox.url)
    raw = yaml.safe_load(path.read_text())
    raw["seamless"]["hot_store"] = {
        "backend": "questdb",
        "questdb_dsn": "${TEST_SEAMLESS_QUESTDB_DSN}",
        "questdb_ilp": QUESTDB_ILP,
        "questdb_table_prefix": prefix,
    }
    raw["seamless"]["rate_limit"]["redis_dsn"] = "${TEST_SEAMLESS_REDIS_DSN}"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    try:
        result = run_backfill(config, [config.node(NODE)], START, END)
        assert result.success
    finally:
        QuestDBHotStore(QUESTDB_DSN, QUESTDB_ILP, table_prefix=prefix).drop_tables()
    import redis

    # The run went through the password-protected Redis (its bucket is there).
    assert redis.Redis.from_url(redis_dsn).keys("ccxt:binance*")
    secrets = [redis_password.encode(), b"admin:quest@", QUESTDB_DSN.encode(), redis_dsn.encode()]
    assert _files_containing(dagster_home, secrets) == []
    # What Dagster stored instead: the names of the variables that hold them.
    names = [b"SEAMLESS_SECRET_REDIS_DSN", b"SEAMLESS_SECRET_QUESTDB_DSN"]
    assert all(_files_containing(dagster_home, [n]) for n in names)
    logs = "".join(capfd.readouterr())
    assert redis_password not in logs and "admin:quest@" not in logs
    events = [str(e) for e in result.all_events]
    assert not any(redis_password in e or "admin:quest@" in e for e in events)


# -- public data never calls private endpoints ---------------------------------------------


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server that records every path it is asked for (and answers 404)."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            paths.append(self.path)
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"code": -2015, "msg": "recorder"}')

        do_GET = do_POST = do_PUT = do_DELETE = _record

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()


def _keyed_ccxt_config(sandbox_url: str, private_url: str) -> dict[str, Any]:
    import ccxt

    api = {name: private_url for name in ccxt.binance().urls["api"]}
    api["public"] = f"{sandbox_url}/api/v3"
    return {
        "apiKey": "k-" + uuid.uuid4().hex,
        "secret": "s-" + uuid.uuid4().hex,
        "urls": {"api": api},
    }


def test_keyed_ccxt_would_call_private_endpoints(
    sandbox: SandboxExchange, recorder: tuple[str, list[str]]
) -> None:
    """The control: the recorder does see what plain ccxt with keys sends (load_markets)."""
    import asyncio

    import ccxt.async_support as ccxt_async

    url, paths = recorder

    async def load() -> None:
        exchange = ccxt_async.binance(
            {
                **_keyed_ccxt_config(sandbox.url, url),
                "options": {"fetchMarkets": {"types": ["spot"]}},
            }
        )
        try:
            await exchange.load_markets()
        except Exception:
            pass  # the recorder's 404 fails it: the request was sent, that is the point
        finally:
            await exchange.close()

    asyncio.run(load())
    assert paths


def test_public_backfill_with_keys_calls_no_private_endpoint(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path, recorder: tuple[str, list[str]]
) -> None:
    url, paths = recorder
    path = write_config(tmp_path, sandbox.url)
    raw = yaml.safe_load(path.read_text())
    raw["exchanges"]["binance"]["ccxt_config"] = _keyed_ccxt_config(sandbox.url, url)
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    sandbox.reset()
    assert run_backfill(config, [config.node(NODE)], START, END).success
    assert paths == []
    endpoints = set(sandbox.stats()["by_endpoint"])
    assert "klines" in endpoints and endpoints <= {"ping", "time", "exchangeInfo", "klines"}
