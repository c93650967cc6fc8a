"""What a pipeline run produced, for metadata, checks, the CLI and the read resource."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from resources.archives import ArchiveSource
from resources.exchange import (
    RequestStats,
)

from . import __version__
from .core.conformance import CONFORMANCE_VERSION
from .core.coverage import (
    LedgerGap,
    coverage_ratio,
    merge_ranges,
    ranges_from_timestamps,
)
from .core.frame import TS, VALUE_COLUMNS, Range
from .nodes import NodeId

PRODUCER = f"seamless@{__version__}"


@dataclass(frozen=True)
class PipelineSettings:
    stabilization_bars: int
    conformance_version: str = CONFORMANCE_VERSION
    archives: ArchiveSource | None = None  # read the public archives before REST
    trades_repair: bool = False  # rebuild candles missing between bars from trades


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
    bytes_written: int = 0  # bytes of segment data and manifest this run stored
    sources: dict[str, int] = field(default_factory=dict)  # bars by source (provenance)


@dataclass(frozen=True)
class StoredBars:
    """What the run's checks need of the bars it stored (as read back), added up chunk by
    chunk so that the run keeps no frame of them: how many, the ranges they cover, and the
    rows breaking the stored invariants, counted exactly as over the whole run's frame."""

    rows: int = 0
    covered: tuple[Range, ...] = ()
    duplicates: int = 0  # consecutive equal ts
    out_of_order: int = 0  # a ts below the one before
    bad_rows: int = 0  # OHLC invariants broken or a value not finite
    last_ts: int | None = None

    def add(self, frame: pd.DataFrame, interval_s: int) -> StoredBars:
        """These counts after the bars of `frame` (the next bars in run order)."""
        ts = frame[TS].to_numpy()
        if not len(ts):
            return self
        steps = np.diff(ts, prepend=ts[0] if self.last_ts is None else self.last_ts)
        if self.last_ts is None:
            steps = steps[1:]
        covered = merge_ranges([*self.covered, *ranges_from_timestamps(ts, interval_s)])
        return StoredBars(
            rows=self.rows + len(ts),
            covered=tuple(covered),
            duplicates=self.duplicates + int(np.count_nonzero(steps == 0)),
            out_of_order=self.out_of_order + int(np.count_nonzero(steps < 0)),
            bad_rows=self.bad_rows + insane_rows(*(frame[c].to_numpy() for c in VALUE_COLUMNS)),
            last_ts=int(ts[-1]),
        )


def insane_rows(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> int:
    """Bars violating high >= max(open, close, low), low <= min(open, close), volume >= 0
    or holding a non-finite value: one boolean mask built in place (no matrix copy of the
    columns, no temporary per condition)."""
    bad = np.maximum(o, c)
    np.maximum(bad, lo, out=bad)
    bad = h < bad
    top = np.minimum(o, c)
    bad |= lo > top
    del top
    bad |= v < 0
    for column in (o, h, lo, c, v):
        bad |= ~np.isfinite(column)
    return int(np.count_nonzero(bad))


@dataclass
class RunOutcome:
    """The whole run for one node, for metadata, checks and the CLI."""

    node: NodeId
    window: Range
    partitions: list[PartitionOutcome]
    stored: StoredBars
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
        return coverage_ratio(self.stored.covered, self.window, interval, origin_s=origin)
