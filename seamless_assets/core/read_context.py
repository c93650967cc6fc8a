"""What a read is for, and what it echoes: the compute context a caller passes to the read
resource and the governance metadata it gets back (the blueprint's Gateway Compute Context).

Pure values: no I/O. `resources/reader.py` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from .frame import Range


class Strategy(StrEnum):
    FAIL_FAST = "FAIL_FAST"
    AUTO_BACKFILL = "AUTO_BACKFILL"
    PARTIAL_FILL = "PARTIAL_FILL"
    SEAMLESS = "SEAMLESS"


class ExecutionDomain(StrEnum):
    BACKTEST = "backtest"
    RESEARCH = "research"
    DRYRUN = "dryrun"
    LIVE = "live"


SNAPSHOT_ONLY = (ExecutionDomain.BACKTEST, ExecutionDomain.RESEARCH)
BACKFILLING = (Strategy.AUTO_BACKFILL, Strategy.SEAMLESS)
Downgrade = Literal["HOLD", "PARTIAL_FILL"]
Instant = str | int | float | datetime


@dataclass(frozen=True)
class ComputeContext:
    """What the caller (the gateway, a strategy) tells the reader about this read.

    `as_of` is ISO-8601, a datetime or epoch seconds (normalised into `as_of_s`);
    `max_lag` seconds (None: `domains.live.max_lag_sec`); `min_coverage` is the fraction of
    the requested bars that must be delivered; `strategy` overrides `seamless.strategy`.
    """

    world_id: str
    execution_domain: ExecutionDomain | str
    as_of: Instant | None = None
    max_lag: float | None = None
    min_coverage: float = 0.0
    strategy: Strategy | str | None = None
    as_of_s: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.world_id:
            raise ValueError("ComputeContext.world_id must not be empty")
        try:
            domain = ExecutionDomain(self.execution_domain)
        except ValueError:
            raise ValueError(
                f"execution_domain {self.execution_domain!r} is not one of "
                f"{[d.value for d in ExecutionDomain]}"
            ) from None
        object.__setattr__(self, "execution_domain", domain)
        if self.strategy is not None:
            try:
                object.__setattr__(self, "strategy", Strategy(self.strategy))
            except ValueError:
                raise ValueError(
                    f"strategy {self.strategy!r} is not one of {[s.value for s in Strategy]}"
                ) from None
        if self.as_of is not None:
            from .snapshot import parse_as_of  # pandas: loaded with the first read

            object.__setattr__(self, "as_of_s", parse_as_of(self.as_of))
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ValueError(f"min_coverage must be in [0, 1], got {self.min_coverage}")
        if self.max_lag is not None and self.max_lag < 0:
            raise ValueError(f"max_lag must be >= 0 seconds, got {self.max_lag}")

    @property
    def domain(self) -> ExecutionDomain:
        return ExecutionDomain(self.execution_domain)


@dataclass(frozen=True)
class SeamlessFetchMetadata:
    """The governance echo of one fetch (what a gateway persists as evidence)."""

    node_id: str
    interval_s: int
    requested: Range
    world_id: str
    execution_domain: str
    strategy: str
    dataset_fingerprint: str | None
    as_of: str | None
    as_of_s: int | None
    coverage_bounds: tuple[int, int] | None  # [first ts, last ts + interval) delivered
    coverage_ratio: float
    conformance_flags: dict[str, int]
    sla: dict[str, float]
    sla_exceeded: tuple[str, ...]
    source: str  # snapshot | snapshot+artifacts | hot_store | hot_store+backfill
    snapshot_fingerprint: str | None = None
    cache_hit: bool = False
    partial: bool = False
    downgrade: Downgrade | None = None
    downgrade_reason: str | None = None
    missing: tuple[Range, ...] = ()
    staleness_s: float | None = None
    rows: int = 0
    # What the reader's segment cache did for a snapshot read: segments served from this
    # process's mapping (hit), mapped and verified (opened), read from the store and cached
    # (built), dropped because the file or the store changed (rebuilt); None: not used.
    segment_cache: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "interval_s": self.interval_s,
            "requested": self.requested.to_json(),
            "world_id": self.world_id,
            "execution_domain": self.execution_domain,
            "strategy": self.strategy,
            "dataset_fingerprint": self.dataset_fingerprint,
            "as_of": self.as_of,
            "coverage_bounds": list(self.coverage_bounds) if self.coverage_bounds else None,
            "coverage_ratio": self.coverage_ratio,
            "conformance_flags": dict(self.conformance_flags),
            "sla": dict(self.sla),
            "sla_exceeded": list(self.sla_exceeded),
            "source": self.source,
            "snapshot_fingerprint": self.snapshot_fingerprint,
            "cache_hit": self.cache_hit,
            "partial": self.partial,
            "downgrade": self.downgrade,
            "downgrade_reason": self.downgrade_reason,
            "missing": [r.to_json() for r in self.missing],
            "staleness_s": self.staleness_s,
            "rows": self.rows,
            "segment_cache": dict(self.segment_cache) if self.segment_cache else None,
        }


@dataclass(frozen=True)
class CoverageReport:
    """What `ensure_coverage` did for one window."""

    node_id: str
    window: Range
    missing_before: tuple[Range, ...]
    missing_after: tuple[Range, ...]
    led: bool  # this call ran the fill (False: it joined one, or nothing was missing)
    fetched: tuple[Range, ...] = ()
    flags: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing_after
