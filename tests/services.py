"""Where the real services of `scripts/services.sh` listen, and the rule for tests that need
them: skip locally when one is not running, but FAIL under CI=true, so a missing install
or start step can never pass as skipped."""

from __future__ import annotations

import os
import socket
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
