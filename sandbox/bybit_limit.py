"""Bybit's public IP rate limit, separate from the Binance weight budget.

Semantics (Bybit's v5 "HTTP IP limit", on the sandbox's wall clock, so tests can fake it):

* `bybit_requests_per_5s` requests are allowed per FIXED 5-second window (windows start at
  wall-clock multiples of 5 s; Bybit documents 600 per 5 s; `None`, the default, means
  unlimited). Every Bybit request counts, whatever its answer, except those refused by
  `down` (503) or by the ban itself.
* The request that goes over the limit is answered HTTP 403 with Bybit's text body
  `access too frequent` (no JSON, no Retry-After: Bybit's edge answers before the API)
  and opens an IP ban of `ban_seconds` (Bybit's is about 10 minutes). Every Bybit request
  inside the ban gets the same 403 (`requests_in_ban`); requests do not extend the ban
  (Bybit lifts it automatically). After the ban a fresh window starts.
* Bybit's bans never touch Binance's endpoints, nor Binance's 429/418 Bybit's.

Answers that are served send Bybit's rate headers while a limit is configured (Bybit
documents them for its per-UID API limit; here they describe the IP window):
`X-Bapi-Limit` (the limit), `X-Bapi-Limit-Status` (requests left in the window) and
`X-Bapi-Limit-Reset-Timestamp` (the current time in ms, as Bybit sends while not over).
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_S = 5
ACCESS_TOO_FREQUENT = b"access too frequent"


@dataclass
class BybitIpLimit:
    """Window, ban and counters of the Bybit IP limit (the caller holds the state lock)."""

    slot: int = -1  # index of the current 5 s window (wall seconds // 5); -1: none yet
    used: int = 0  # requests counted in that window
    banned_until: float = 0.0  # wall-clock seconds
    sent_403: int = 0
    requests_in_ban: int = 0
    sent_429: int = 0  # forced 10006 answers (`force_429`)

    def admit(self, now: float, limit: int | None, ban_seconds: int) -> str:
        """`""` to serve the request, `"banned"` or `"ip_limit"` for a 403."""
        if now < self.banned_until:
            self.requests_in_ban += 1
            self.sent_403 += 1
            return "banned"
        slot = int(now // WINDOW_S)
        if slot != self.slot:
            self.slot, self.used = slot, 0
        self.used += 1
        if limit is not None and self.used > limit:
            self.banned_until = now + ban_seconds
            self.slot = -1  # the window after the ban starts afresh
            self.sent_403 += 1
            return "ip_limit"
        return ""

    def stats(self, now: float) -> dict[str, float | int]:
        return {
            "sent_403": self.sent_403,
            "requests_in_ban": self.requests_in_ban,
            "sent_429": self.sent_429,
            "window_requests": self.used if int(now // WINDOW_S) == self.slot else 0,
            "ban_remaining_s": max(0.0, self.banned_until - now),
        }


def rate_headers(used: int, limit: int | None, now: float) -> dict[str, str]:
    """Bybit's rate headers of a served answer: `used` requests of the window so far,
    admitted at `now` (wall-clock seconds); none while unlimited."""
    if limit is None:
        return {}
    return {
        "X-Bapi-Limit": str(limit),
        "X-Bapi-Limit-Status": str(max(0, limit - used)),
        "X-Bapi-Limit-Reset-Timestamp": str(int(now * 1000)),
    }
