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


class FingerprintCollision(StoreError):
    """Publishing found other rows already stored under the segment's fingerprint: one
    content address, two contents (counted by the run's `fingerprint_collisions`)."""


class SealedSegmentCollision(ArtifactIntegrityError, FingerprintCollision):
    """A sealed segment's data holds other rows than its fingerprint (altered, corrupted)."""


class UnsealedSegmentCollision(WriteOnceViolation, FingerprintCollision):
    """Unsealed data under the fingerprint (a crashed publish) holds other rows."""


class ArtifactNotFound(StoreError):
    """No artifact (segment, manifest) exists under the requested node and fingerprint."""


class SnapshotNotFound(StoreError):
    """No published snapshot of a node resolves the requested `as_of`."""


class SnapshotRegression(StoreError):
    """A snapshot would move a node's `as_of` backwards (snapshot history is append-only)."""


class UnpublishableSegment(ArtifactIntegrityError):
    """A head names a segment that cannot enter a snapshot: unsealed, repointed to another
    partition's segment, or with a manifest that disagrees with its bars."""


class SeamlessSLAExceeded(SeamlessError):
    """A read ran out of its SLA budget in `phase` (storage_wait | backfill_wait |
    live_wait | total); the work of that phase was cancelled."""

    def __init__(self, phase: str, budget_ms: float, elapsed_ms: float, detail: str = "") -> None:
        self.phase, self.budget_ms, self.elapsed_ms = phase, budget_ms, elapsed_ms
        self.detail = detail
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"SLA phase {phase} exceeded its budget of {budget_ms:.0f} ms (cancelled after "
            f"{elapsed_ms:.0f} ms){extra}; raise the domain's budget "
            "(domains.<domain>.sla, else seamless.sla: max_wait_* / total_deadline_ms), or "
            "set on_violation: PARTIAL_FILL to get what is available, flagged partial"
        )


class AsOfRequired(SeamlessError):
    """A snapshot domain (backtest, research, dryrun) was asked to read without an as_of."""


class AsOfRegression(SeamlessError):
    """A live session asked for an as_of earlier than one it has already seen."""


class MissingPartitions(SeamlessError):
    """The snapshot (or the stores, for FAIL_FAST) do not cover the requested range."""

    def __init__(self, message: str, partition_keys: list[str], ranges: list[object]) -> None:
        self.partition_keys, self.ranges = partition_keys, ranges
        super().__init__(message)
