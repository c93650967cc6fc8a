"""`python -m sandbox --port 0 --config cfg.json`: serve until SIGTERM/SIGINT.

Prints exactly one line, `SANDBOX_URL=http://127.0.0.1:PORT`, once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .admin import URL_LINE_PREFIX
from .config import SandboxConfig
from .server import start_site
from .state import SandboxState


async def _main(config: SandboxConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    runner, url = await start_site(SandboxState(config), host, port)
    print(f"{URL_LINE_PREFIX}{url}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral port")
    parser.add_argument("--config", help="JSON file of SandboxConfig knobs")
    args = parser.parse_args(argv)
    config = SandboxConfig.from_json_file(args.config) if args.config else SandboxConfig()
    asyncio.run(_main(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
