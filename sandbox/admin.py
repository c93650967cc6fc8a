"""Clients of a running sandbox: the admin API over urllib, and the subprocess launcher.

Why urllib: the admin client must work from any test or script without extra deps, and
from processes that have no event loop.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .clock import clock_request
from .config import SandboxConfig

URL_LINE_PREFIX = "SANDBOX_URL="
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SandboxAdmin:
    """Admin client: `SandboxAdmin("http://127.0.0.1:PORT").stats()`."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}/sandbox/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ValueError(
                f"sandbox admin {method} /sandbox/{path}: {exc.code} {detail}"
            ) from exc

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "stats"))

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def clock(self) -> dict[str, Any]:
        return dict(self._call("GET", "clock"))

    def set_clock(
        self,
        *,
        now: float | None = None,
        offset_s: float | None = None,
        advance_s: float | None = None,
        real: bool = False,
    ) -> dict[str, Any]:
        """Freeze at `now`, run at real time + `offset_s`, move by `advance_s`, or `real`."""
        body = clock_request(now=now, offset_s=offset_s, advance_s=advance_s, real=real)
        return dict(self._call("POST", "clock", body))

    def config(self) -> dict[str, Any]:
        return dict(self._call("GET", "config"))

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Replace the given knobs (see `SandboxConfig`); returns the whole config."""
        return dict(self._call("POST", "config", knobs))

    def archive_stats(self) -> dict[str, Any]:
        """The kline archive tree's own counters (`archives.py`)."""
        return dict(self._call("GET", "archive-stats"))

    def archive_reset(self) -> None:
        self._call("POST", "archive-reset", {})

    def archive_config(self) -> dict[str, Any]:
        return dict(self._call("GET", "archive-config"))

    def configure_archive(self, **knobs: Any) -> dict[str, Any]:
        """Replace the named archive knobs (`wrong_checksum`, `daily_lag_s`, `corrupt`, ...);
        returns them all."""
        return dict(self._call("POST", "archive-config", knobs))

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.clock()
                return
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def spawn_sandbox_process(
    config: SandboxConfig | dict[str, Any] | None = None,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout_s: float = 20.0,
    python: str | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Run `python -m sandbox` in a child process; returns it and its base URL once it
    listens. Stop it with `proc.terminate(); proc.wait()` (SIGTERM shuts down cleanly)."""
    cfg = config if isinstance(config, SandboxConfig) else SandboxConfig.from_dict(config or {})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(cfg.to_dict(), fh)
        cfg_path = fh.name
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    cmd = [python or sys.executable, "-m", "sandbox", "--host", host, "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--config", cfg_path], stdout=subprocess.PIPE, text=True, env=env
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # reads until the URL line (the server prints nothing after it)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
            if line.startswith(URL_LINE_PREFIX):
                return
        lines.put(None)

    threading.Thread(target=pump, name="sandbox-url-reader", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"sandbox process did not print its URL in {timeout_s}s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"sandbox process exited early with code {proc.wait()}")
            if line.startswith(URL_LINE_PREFIX):
                return proc, line[len(URL_LINE_PREFIX) :].strip()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        Path(cfg_path).unlink(missing_ok=True)
