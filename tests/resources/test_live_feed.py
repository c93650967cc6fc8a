"""The WebSocket live feed (`seamless.live.ws.enabled`) against the sandbox's kline streams:
live reads see a closed bar within a second of its close by the exchange's clock, and a
dropped socket reconnects on the ladder with no bar lost or stored twice."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from resources.live_feed import FeedStats
from resources.reader import ComputeContext, SeamlessReader
from sandbox import SandboxConfig, SandboxExchange, expected_bars
from sandbox.ws import ccxt_ws_urls
from seamless_assets.config import SeamlessConfig, load_config

from .test_reader_support import DAY, NODE_ID, endpoint_requests, project, reader_for

LADDER_MS = [100, 200, 400]
# PARTIAL_FILL: a live read never asks the exchange for bars itself, so what it sees of
# the newest bars came through the socket
LIVE = ComputeContext("w1", "live", strategy="PARTIAL_FILL", max_lag=7 * DAY)


def _ws_project(tmp_path: Path, sandbox: SandboxExchange) -> SeamlessConfig:
    live = {"ws": {"enabled": True, "reconnect_backoff_ms": LADDER_MS}}
    config = project(
        tmp_path,
        sandbox,
        live=live,
        domains={"live": {"nodes": [NODE_ID], "allow_partial": True}},
    )
    raw = yaml.safe_load(Path(config.source or "").read_text())
    raw["exchanges"]["binance"]["ccxt_config"]["urls"]["api"]["ws"] = ccxt_ws_urls(sandbox.url)
    Path(config.source or "").write_text(yaml.safe_dump(raw))
    return load_config(config.source)


def _admin(sandbox: SandboxExchange, path: str, body: dict[str, object] | None = None) -> None:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(f"{sandbox.url}/sandbox/ws/{path}", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def _wait(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _bars(reader: SeamlessReader, start: int, end: int) -> dict[str, np.ndarray]:
    frame, _ = reader.fetch(NODE_ID, start, end, LIVE)
    return {c: frame[c].to_numpy() for c in ("ts", "open", "high", "low", "close", "volume")}


def _subscribed(reader: SeamlessReader) -> FeedStats:
    """The reader's live feed stats, once its socket has sent a first message."""
    feed = reader._runtime().feed
    assert feed is not None
    _wait(lambda: feed.stats.messages > 0)
    return feed.stats


@contextmanager
def _running_sandbox(seconds_to_close: float) -> Iterator[SandboxExchange]:
    """A real-time sandbox clock two days behind, `seconds_to_close` before a minute ends."""
    now = time.time()
    offset = -2 * DAY + (60 - seconds_to_close - now % 60)
    with SandboxExchange(SandboxConfig(clock_offset_s=offset)) as sandbox:
        yield sandbox


def test_live_reads_see_a_closed_bar_within_a_second_of_its_close(tmp_path: Path) -> None:
    with _running_sandbox(seconds_to_close=4.0) as sandbox:
        config = _ws_project(tmp_path, sandbox)
        clock = sandbox.state.clock
        with reader_for(config) as reader:
            boundary = (int(clock.now_s()) // 60 + 1) * 60
            bar = boundary - 60
            seen_at = None
            while seen_at is None:
                assert clock.now_s() < boundary + 5, "no closed bar 5 s after its close"
                got = _bars(reader, bar - 600, boundary + 60)
                if len(got["ts"]) and int(got["ts"][-1]) == bar:
                    seen_at = clock.now_s()
                else:
                    time.sleep(0.02)
            assert seen_at - boundary < 1.0
            expected = expected_bars("BTC/USDT", 60, bar, boundary)
            for column, values in got.items():
                assert values[-1] == expected[column][0], column
            assert endpoint_requests(sandbox, "klines") == 0  # the socket, not REST


def test_a_dropped_socket_reconnects_on_the_ladder_losing_and_repeating_nothing(
    tmp_path: Path,
) -> None:
    t0 = 1_704_067_200 + 9 * DAY  # frozen 30 s into this minute
    with SandboxExchange(SandboxConfig(frozen_now_s=t0 + 30)) as sandbox:
        config = _ws_project(tmp_path, sandbox)
        with reader_for(config) as reader:
            stats = _subscribed(reader)
            sandbox.set_clock(advance_s=60)  # t0 closes
            _wait(lambda: stats.last_closed_s.get(NODE_ID) == t0)

            # The socket drops and the next two connections are refused while three more
            # bars close: the feed waits 100, 200, 400 ms between attempts.
            _admin(sandbox, "config", {"refuse_connections": 2})
            dropped_at = time.monotonic()
            _admin(sandbox, "drop")
            sandbox.set_clock(advance_s=180)
            _wait(lambda: stats.last_closed_s.get(NODE_ID) == t0 + 180)
            assert time.monotonic() - dropped_at >= sum(LADDER_MS) / 1000 - 0.05
            assert stats.reconnects == 3 and stats.caught_up_bars == 3
            sandbox.set_clock(advance_s=60)  # and the stream goes on
            _wait(lambda: stats.last_closed_s.get(NODE_ID) == t0 + 240)

            got = _bars(reader, t0 - 60, t0 + 300)
            expected = expected_bars("BTC/USDT", 60, t0, t0 + 300)
            for column, values in got.items():
                np.testing.assert_array_equal(values, expected[column])
            assert stats.stored_bars == 2  # t0 and t0 + 240 from the socket, each once
            assert endpoint_requests(sandbox, "klines") == 1  # the catch-up, one request


def test_a_bar_left_unfinished_by_a_dropped_socket_is_never_stored(tmp_path: Path) -> None:
    """The socket drops while bar t0 forms, before the feed stored any bar: the forming
    values it saw are not taken; the next closed bars come from the new socket."""
    t0 = 1_704_067_200 + 9 * DAY
    with SandboxExchange(SandboxConfig(frozen_now_s=t0 + 30)) as sandbox:
        config = _ws_project(tmp_path, sandbox)
        with reader_for(config) as reader:
            stats = _subscribed(reader)
            _admin(sandbox, "drop")
            sandbox.set_clock(advance_s=120)  # t0 and t0 + 60 close while it reconnects
            _wait(lambda: stats.reconnects == 1 and stats.messages > 2)
            sandbox.set_clock(advance_s=60)  # t0 + 120 closes on the new socket
            _wait(lambda: stats.last_closed_s.get(NODE_ID) == t0 + 120)
            got = _bars(reader, t0, t0 + 180)
            expected = expected_bars("BTC/USDT", 60, t0 + 120, t0 + 180)
            assert got["ts"].tolist() == [t0 + 120]  # t0's forming values never stored
            for column, values in got.items():
                np.testing.assert_array_equal(values, expected[column])
