"""A Dagster instance on Postgres (dagster-postgres): the documented
`postgresql+psycopg2://` URL stores runs, events and pool limits; a bare `postgresql://`
(psycopg 3 under the locked SQLAlchemy) breaks event writes, and `seamless doctor` names it
with the fix.

The Postgres server is a private cluster of this module (initdb + pg_ctl under a temporary
directory, loopback only, a free port); under CI=true a missing Postgres fails."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from seamless_assets.cli import main as seamless_main
from seamless_assets.instance_check import postgres_storage_problems
from seamless_assets.pools import apply_pool_limits
from tests.services import unavailable


def _pg_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """`host:port` of a private Postgres cluster (trust auth on loopback, user postgres)."""
    bindir = _pg_bin()
    if bindir is None or not (bindir / "initdb").exists():
        unavailable("Postgres is not installed: apt-get install -y postgresql")
    as_owner: list[str] = []
    owner = None
    if os.geteuid() == 0:  # Postgres refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("Postgres runs as the `postgres` user, which does not exist")
        as_owner = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="seamless-pg-"))
    data = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    subprocess.run(
        [*as_owner, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
         "--auth=trust", "--no-locale", "--encoding=UTF8"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
         "-t", "60", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def _instance_yaml(home: Path, url: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "storage": {"postgres": {"postgres_url": {"env": "DAGSTER_POSTGRES_URL"}}},
                "concurrency": {"pools": {"default_limit": 1, "granularity": "op"}},
                "telemetry": {"enabled": False},
            }
        )
    )
    return path


@dg.op
def _hello() -> int:
    return 1


@dg.job
def _one_op_job() -> None:
    _hello()


def test_the_psycopg2_url_runs_a_job_and_stores_pool_limits(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg2://postgres@{postgres}/postgres"
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    path = _instance_yaml(tmp_path / "home", url)
    assert postgres_storage_problems(path) == []
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        result = _one_op_job.execute_in_process(instance=instance)
        assert result.success
        stored = instance.all_logs(result.run_id)
        assert any(e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS for e in stored)
        [change] = apply_pool_limits(instance, {"exchange_binance": 2})
        assert change.changed
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
        assert limits["exchange_binance"] == 2


def test_a_bare_postgresql_url_breaks_event_writes_and_doctor_says_so(
    postgres: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"postgresql://postgres@{postgres}/postgres"
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    home = tmp_path / "home"
    _instance_yaml(home, url)
    # What the doctor warns about is real: psycopg 3 rejects dagster-postgres' NOTIFY.
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        pytest.raises(Exception, match=r"(?i)syntax error|notify"),
    ):
        _one_op_job.execute_in_process(instance=instance)

    config = tmp_path / "seamless.yaml"
    config.write_text(yaml.safe_dump({"seamless": {"data_dir": str(tmp_path / "data")}}))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert seamless_main(["--config", str(config), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "DAGSTER_POSTGRES_URL" in out and "postgresql+psycopg2://" in out
    assert "psycopg 3" in out


def test_doctor_accepts_postgres_db_with_the_psycopg2_scheme_only(tmp_path: Path) -> None:
    path = tmp_path / "dagster.yaml"
    db = {"username": "u", "password": "p", "hostname": "h", "db_name": "d"}
    path.write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_db": db}}}))
    [problem] = postgres_storage_problems(path)
    assert "postgres_db.scheme" in problem and "'postgresql'" in problem
    db["scheme"] = "postgresql+psycopg2"
    path.write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_db": db}}}))
    assert postgres_storage_problems(path) == []
