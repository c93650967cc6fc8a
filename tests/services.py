"""Where the real services of `scripts/services.sh` listen, and the rule for tests that need
them: skip locally when one is not running, but FAIL under CI=true, so a missing install
or start step can never pass as skipped."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest

QUESTDB_PG_ADDR = ("127.0.0.1", int(os.environ.get("QDB_PG_PORT", "8812")))
QUESTDB_HTTP_ADDR = ("127.0.0.1", int(os.environ.get("QDB_HTTP_PORT", "9000")))
QUESTDB_DSN = f"postgresql://admin:quest@127.0.0.1:{QUESTDB_PG_ADDR[1]}/qdb"
QUESTDB_ILP = f"http::addr=127.0.0.1:{QUESTDB_HTTP_ADDR[1]};"
REDIS_ADDR = ("127.0.0.1", int(os.environ.get("REDIS_PORT", "6379")))
REDIS_DSN = f"redis://127.0.0.1:{REDIS_ADDR[1]}/0"
S3_ADDR = ("127.0.0.1", int(os.environ.get("S3_PORT", "5000")))
S3_ENDPOINT = f"http://127.0.0.1:{S3_ADDR[1]}"
# The Dagster instance database of `scripts/services.sh start postgres` (local-only password).
POSTGRES_ADDR = ("127.0.0.1", int(os.environ.get("PG_PORT", "5432")))
POSTGRES_USER = os.environ.get("PG_USER", "dagster")
POSTGRES_PASSWORD = os.environ.get("PG_PASSWORD", "dagster")
POSTGRES_DB = os.environ.get("PG_DB", "dagster")
# Prometheus and its Pushgateway (README "Metrics").
PROMETHEUS_ADDR = ("127.0.0.1", int(os.environ.get("PROM_PORT", "9090")))
PROMETHEUS_URL = f"http://127.0.0.1:{PROMETHEUS_ADDR[1]}"
PUSHGATEWAY_ADDR = ("127.0.0.1", int(os.environ.get("PUSHGATEWAY_PORT", "9091")))
PUSHGATEWAY_URL = f"http://127.0.0.1:{PUSHGATEWAY_ADDR[1]}"


def reachable(addr: tuple[str, int], timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(addr, timeout=timeout_s):
            return True
    except OSError:
        return False


def require_service(name: str, addr: tuple[str, int]) -> None:
    """Fail (CI) or skip (local) when `name` is not listening at `addr`."""
    if reachable(addr):
        return
    unavailable(
        f"{name} is not reachable at {addr[0]}:{addr[1]}; "
        f"start it with `bash scripts/services.sh start {name}`"
    )


def unavailable(message: str) -> NoReturn:
    """Something a test needs is missing: fail under CI=true (a missing install step must
    not pass), skip locally."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def postgres_url(database: str = POSTGRES_DB, *, driver: str = "psycopg2") -> str:
    """SQLAlchemy URL of `database` on the services' Postgres. dagster-postgres needs the
    `postgresql+psycopg2` form (a bare `postgresql://` would pick psycopg 3)."""
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    host, port = POSTGRES_ADDR
    return f"{scheme}://{POSTGRES_USER}:{POSTGRES_PASSWORD}@{host}:{port}/{database}"


@contextmanager
def fresh_postgres_database(prefix: str = "seamless_test") -> Iterator[str]:
    """A new, empty database on the services' Postgres (dropped afterwards, connections and
    all); yields its name. Fails (CI) or skips (local) when Postgres is not running."""
    require_service("postgres", POSTGRES_ADDR)
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = postgres_url(driver="")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _drop_database(admin, name)


def _drop_database(admin: str, name: str, attempts: int = 50) -> None:
    """DROP ... WITH (FORCE), again while a backend of another role (an autovacuum worker
    that just started on the new database) cannot be terminated by the test role: it
    ends within moments (a CI run once met one)."""
    import psycopg

    for attempt in range(attempts):
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
