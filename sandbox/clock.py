"""The sandbox clock: real time plus an offset, or frozen at a set instant.

Why separate from wall-clock: tests need a deterministic "now" for forming bars and
freshness, while rate-limit windows must keep running on real time (as Binance's do).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SandboxClock:
    """Thread-safe settable clock. `now_ms()` is what /time and klines see."""

    def __init__(
        self,
        *,
        frozen_now_s: float | None = None,
        offset_s: float = 0.0,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._wall = wallclock
        self._frozen: float | None = frozen_now_s
        self._offset = float(offset_s)

    def now_s(self) -> float:
        with self._lock:
            return self._frozen if self._frozen is not None else self._wall() + self._offset

    def now_ms(self) -> int:
        return int(self.now_s() * 1000)

    def freeze(self, now_s: float) -> None:
        """Stop the clock at `now_s` (epoch seconds)."""
        with self._lock:
            self._frozen = float(now_s)

    def set_offset(self, offset_s: float) -> None:
        """Run with real time shifted by `offset_s` (unfreezes)."""
        with self._lock:
            self._frozen, self._offset = None, float(offset_s)

    def advance(self, seconds: float) -> None:
        """Move time forward (or back): the frozen instant, else the offset."""
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            else:
                self._offset += seconds

    def real(self) -> None:
        """Back to real time, no offset."""
        self.set_offset(0.0)

    def state(self) -> dict[str, object]:
        with self._lock:
            frozen, offset = self._frozen, self._offset
        now = frozen if frozen is not None else self._wall() + offset
        return {
            "now": now,
            "now_ms": int(now * 1000),
            "frozen": frozen is not None,
            "offset_s": offset if frozen is None else now - self._wall(),
        }

    def apply(self, body: dict[str, object]) -> None:
        """Admin form: `{"now": s}` | `{"offset_s": x}` | `{"advance_s": x}` | `{"real": true}`."""
        allowed = {"now", "offset_s", "advance_s", "real"}
        unknown = set(body) - allowed
        if unknown or not body:
            raise ValueError(f"clock body must use one of {sorted(allowed)}, got {sorted(body)}")
        if body.get("real"):
            self.real()
        if "offset_s" in body:
            self.set_offset(_num(body["offset_s"], "offset_s"))
        if "now" in body:
            self.freeze(_num(body["now"], "now"))
        if "advance_s" in body:
            self.advance(_num(body["advance_s"], "advance_s"))


def _num(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"clock `{name}` must be a number of seconds, got {value!r}")
    return float(value)


def clock_request(
    *,
    now: float | None = None,
    offset_s: float | None = None,
    advance_s: float | None = None,
    real: bool = False,
) -> dict[str, object]:
    """The body of a clock change: freeze at `now`, run at real time + `offset_s`, move by
    `advance_s`, or go back to `real` time (the admin API and the in-process handle share it)."""
    body: dict[str, object] = {"real": True} if real else {}
    for key, value in (("now", now), ("offset_s", offset_s), ("advance_s", advance_s)):
        if value is not None:
            body[key] = value
    return body
