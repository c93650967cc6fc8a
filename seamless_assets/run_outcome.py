"""What a pipeline run produced, for metadata, checks, the CLI and the read resource."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from resources.exchange import (
    RequestStats,
)

from . import __version__
from .core.conformance import CONFORMANCE_VERSION
from .core.coverage import (
    LedgerGap,
    coverage_ratio,
    ranges_from_timestamps,
)
from .core.frame import TS, Range
from .nodes import NodeId

PRODUCER = f"seamless@{__version__}"


@dataclass(frozen=True)
class PipelineSettings:
    stabilization_bars: int
    conformance_version: str = CONFORMANCE_VERSION


@dataclass(frozen=True)
class PartitionOutcome:
    """What happened to one partition of the run."""

    window: Range
    row_count: int
    coverage_ratio: float
    completeness_ratio: float
    missing: tuple[Range, ...]
    gaps: tuple[LedgerGap, ...]
    flags: dict[str, int]
    stable: bool
    bounds: tuple[int, int] | None = None  # [first bar, last bar + interval) if any bar
    fingerprint: str | None = None
    uri: str | None = None  # the segment's directory
    manifest_uri: str | None = None  # the segment's manifest.json
    written: bool = False
    encode_s: float = 0.0  # measured encode time when this run wrote the segment


@dataclass
class RunOutcome:
    """The whole run for one node, for metadata, checks and the CLI."""

    node: NodeId
    window: Range
    partitions: list[PartitionOutcome]
    frame: pd.DataFrame
    fetched_ranges: list[Range] = field(default_factory=list)
    fetched_rows: int = 0
    forming_dropped: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    requests: RequestStats | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def published(self) -> list[PartitionOutcome]:
        return [p for p in self.partitions if p.fingerprint is not None]

    @property
    def coverage_ratio(self) -> float:
        interval, origin = self.node.interval_s, self.node.timeframe.origin_s
        covered = ranges_from_timestamps(self.frame[TS].to_numpy(), interval)
        return coverage_ratio(covered, self.window, interval, origin_s=origin)
