"""Typed errors. Each names the input that is wrong and says how to fix it."""

from __future__ import annotations


class SeamlessError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(SeamlessError):
    """The configuration is invalid: names the key, the value and the reason."""

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        self.key, self.reason, self.source = key, reason, source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid config{where}: `{key}`: {reason}")


class InvalidNodeId(SeamlessError):
    """A node id does not follow `ohlcv:{exchange}:{symbol}:{timeframe}`."""


class UnsupportedTimeframe(SeamlessError):
    """A timeframe is unknown, or not a fixed interval this platform can partition."""


class UnknownExchange(SeamlessError):
    """ccxt has no exchange with this id."""


class UnknownSymbol(SeamlessError):
    """The exchange lists no market with this symbol."""


class ExchangeUnavailable(SeamlessError):
    """The exchange could not be reached or kept failing after every retry."""


class RateLimitTimeout(SeamlessError):
    """A rate-limit token could not be acquired before the deadline."""


class StoreError(SeamlessError):
    """A hot store or artifact store failed or was unreachable."""


class ArtifactIntegrityError(StoreError):
    """An artifact's bytes do not match its manifest's fingerprint (tampered or partial)."""


class WriteOnceViolation(StoreError):
    """Something tried to overwrite an immutable artifact with different bytes."""


class ArtifactNotFound(StoreError):
    """No artifact (segment, manifest) exists under the requested node and fingerprint."""


class SnapshotNotFound(StoreError):
    """No published snapshot of a node resolves the requested `as_of`."""


class SnapshotRegression(StoreError):
    """A snapshot would move a node's `as_of` backwards (snapshot history is append-only)."""
