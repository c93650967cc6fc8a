"""Where a segment's bars came from: the exchange's REST API, its public archives (with
the archive's checksum verdict) or bars rebuilt from its trades.

Provenance is ledgered like conformance findings (`core.flag_ledger`): a run that stores
bars from a source other than REST records, per partition it touched, one `FlagEvent`
`(first bar's ts, "from_<source>", bars)` in the hot store, replaced with the window's
other events whenever the window is fetched again. So a manifest states provenance from
the bars and the ledger alone, and a rerun after a crash (which fetches nothing for bars
already stored) writes the same bytes. Bars without such an event came over REST.

Sources (`SOURCES`, the manifest's `provenance.bars` keys, every key always present):

* `rest`: the exchange's market-data API (the default);
* `archive`: a public archive file whose published `.CHECKSUM` matched;
* `archive_checksum_mismatch` / `archive_checksum_absent`: an archive file whose checksum
  did not match (or was not published) but whose content was judged sound and accepted;
* `trades`: bars rebuilt from the exchange's trades where its candles stayed missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .flag_ledger import FlagEvent
from .frame import Range

if TYPE_CHECKING:
    import numpy as np

REST = "rest"
ARCHIVE = "archive"
TRADES = "trades"
SOURCES: tuple[str, ...] = (
    REST,
    ARCHIVE,
    "archive_checksum_mismatch",
    "archive_checksum_absent",
    TRADES,
)
_PREFIX = "from_"
PROVENANCE_FLAGS = frozenset(_PREFIX + s for s in SOURCES if s != REST)


def source_flag(source: str) -> str:
    """The ledger flag of bars from `source` (not REST: REST is what no event names)."""
    flag = _PREFIX + source
    if flag not in PROVENANCE_FLAGS:
        raise ValueError(f"unknown bar source {source!r}; one of {SOURCES[1:]}")
    return flag


def is_provenance(event: FlagEvent) -> bool:
    return event.flag in PROVENANCE_FLAGS


def provenance_events(ts: np.ndarray, source: str, partitions: Sequence[Range]) -> list[FlagEvent]:
    """One event per partition holding bars opening at `ts` (sorted) from `source`."""
    import numpy as np

    if source == REST or not len(ts):
        return []
    flag = source_flag(source)
    events = []
    for part in partitions:
        lo, hi = np.searchsorted(ts, [part.start, part.end])
        if hi > lo:
            events.append(FlagEvent(int(ts[lo]), flag, int(hi - lo)))
    return events


def bars_by_source(events: Iterable[FlagEvent], row_count: int) -> dict[str, int]:
    """Bars per source (`SOURCES`, all present) of a segment of `row_count` bars."""
    counts = dict.fromkeys(SOURCES, 0)
    for event in events:
        if is_provenance(event):
            counts[event.flag.removeprefix(_PREFIX)] += event.count
    counts[REST] = row_count - sum(counts.values())
    return counts
