"""The event store protocol: event series (funding events, trades) in the hot store.

An event node (`seamless_assets.event_nodes`) has no bar grid: its rows carry their own
time in epoch *milliseconds* exactly as the exchange states it, and its coverage is the
windows the exchange's answers are known complete for (`answered`), not counted slots.
So events get their own tables beside the bars, one per kind, with the kind's columns
and dtypes (`EVENT_KINDS`), and an answered-window ledger.

What a key collision means differs by kind: a funding event restated for the same `ts`
is the exchange's newer answer (the last write wins, as for bars); a trade id names one
immutable trade, so the *first* stored version of an id wins and a later, different
version is ignored (a refetch never changes a stored trade; conformance flags the
conflict where it sees both versions).

Every backend (embedded DuckDB, QuestDB) implements `EventStore` and passes the one
contract suite in `tests/resources/test_event_store_contract.py`; the helpers below hold
the rules every backend shares, so backends differ only in how they talk to their
database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from seamless_assets.core.coverage import intersect_ranges, merge_ranges
from seamless_assets.core.frame import TS, Range
from seamless_assets.event_nodes import EVENT_KINDS, EventKind

# The table of each kind, in every backend (a QuestDB store prefixes them).
EVENT_TABLES: dict[str, str] = {"funding": "funding_events", "trades": "trade_events"}
ANSWERED_TABLE = "event_answered"

# 9999-12-31T23:59:59.999Z: the last millisecond QuestDB's timestamps hold. Both backends
# refuse rows outside [0, MAX_TS_MS] so that they store exactly the same rows.
MAX_TS_MS = 253_402_300_799_999
_SIDES = (-1, 0, 1)
_FIX = "conform the frame first"


@runtime_checkable
class EventStore(Protocol):
    """Event series of every event node, keyed by kind and node, with answered windows."""

    def upsert_events(self, kind: str, node_id: str, frame: pd.DataFrame) -> int:
        """Write a frame of the kind's exact columns and dtypes, sorted by its `order`,
        one row per key. Funding: the last write wins per `ts`; trades: the first stored
        version of an id wins and later ones are ignored. Returns the rows written (new
        or replaced for funding; new only for trades)."""
        ...

    def read_events(self, kind: str, node_id: str, window: Range) -> pd.DataFrame:
        """Stored rows with `window.start * 1000 <= ts < window.end * 1000` (the window is
        epoch seconds, `ts` epoch ms): the kind's columns and dtypes in order, sorted by
        its `order`; an empty frame of those dtypes when none. Values come back bit-exact
        (NaN stays NaN)."""
        ...

    def record_answered(self, kind: str, node_id: str, windows: Sequence[Range]) -> None:
        """Add windows the exchange's answers are known complete for; idempotent.
        Overlapping or touching windows are merged into one."""
        ...

    def answered(self, kind: str, node_id: str, window: Range | None = None) -> list[Range]:
        """The answered windows, merged and sorted, clipped to `window` when given."""
        ...

    def event_bounds(self, kind: str, node_id: str) -> tuple[int, int] | None:
        """`(first_ts, last_ts)` in epoch ms of the stored rows (both inclusive), or None
        when the node has none."""
        ...

    def session(self) -> AbstractContextManager[None]:
        """Hold the store's connection across the operations inside (one thread), as
        `HotStore.session` does."""
        ...

    def close(self) -> None:
        """Release resources; the store cannot be used afterwards."""
        ...


def event_kind(kind: str) -> EventKind:
    """The kind's spec, or ValueError naming the kinds there are."""
    spec = EVENT_KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ValueError(f"unknown event kind {kind!r}; the event kinds are {sorted(EVENT_KINDS)}")
    return spec


def validate_event_frame(spec: EventKind, frame: pd.DataFrame) -> None:
    """Reject a frame a store must not write, before anything is written: not exactly the
    kind's columns and dtypes (in order), a value a backend cannot store exactly (a `ts`
    outside `[0, MAX_TS_MS]`, a negative id, a side other than -1/0/1, an infinite
    number: QuestDB reads infinities back as NULL), rows not sorted by the kind's `order`,
    or two rows with the same key. The store never repairs a frame: conformance does."""
    got = {str(c): str(frame[c].dtype) for c in frame.columns}
    if got != dict(spec.dtypes) or tuple(got) != spec.columns:
        raise ValueError(
            f"{spec.name} events are written only as frames with exactly the columns and "
            f"dtypes {dict(spec.dtypes)} (in this order); got {got}; {_FIX}"
        )
    if frame.empty:
        return
    ts = frame[TS].to_numpy()
    if int(ts.min()) < 0 or int(ts.max()) > MAX_TS_MS:
        raise ValueError(
            f"{spec.name} event ts must be epoch ms in [0, {MAX_TS_MS}], got "
            f"{int(ts.min())}..{int(ts.max())}; {_FIX}"
        )
    if "id" in frame.columns and (lowest := int(frame["id"].min())) < 0:
        raise ValueError(f"{spec.name} ids must be non-negative, got {lowest}; {_FIX}")
    if "side" in frame.columns and not bool(frame["side"].isin(_SIDES).all()):
        raise ValueError(f"{spec.name} side must be one of {_SIDES}; {_FIX}")
    for column, dtype in spec.dtypes.items():
        if dtype.startswith("float") and bool(np.isinf(frame[column].to_numpy()).any()):
            raise ValueError(
                f"{spec.name} column {column!r} holds an infinite value, which the stores "
                f"cannot keep exactly (NaN is kept); {_FIX}"
            )
    if not _is_sorted(frame, spec.order):
        raise ValueError(f"{spec.name} frame is not sorted by {list(spec.order)}; {_FIX}")
    duplicated = frame.duplicated(subset=list(spec.key))
    if bool(duplicated.any()):
        first = frame.loc[duplicated, list(spec.key)].iloc[0].to_dict()
        raise ValueError(
            f"{spec.name} frame has {int(duplicated.sum())} rows repeating a key "
            f"{list(spec.key)} (first {first}); a store keeps one row per key, so "
            f"deduplicate ({_FIX})"
        )


def _is_sorted(frame: pd.DataFrame, order: Sequence[str]) -> bool:
    """Whether rows are in lexicographic order of `order` (ties allowed)."""
    if len(frame) < 2:
        return True
    tied = np.ones(len(frame) - 1, dtype=bool)  # pairs equal on every column so far
    for column in order:
        values = frame[column].to_numpy()
        before, after = values[:-1], values[1:]
        if bool(np.any(tied & (after < before))):
            return False
        tied &= after == before
    return True


def events_frame(spec: EventKind, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """A read's result: the kind's columns in order with its dtypes, sorted by its
    `order` (sorting only when the rows came unsorted). Read-only buffers (Arrow's) are
    copied, so callers may edit what they read."""
    arrays = {c: np.asarray(columns[c], dtype=dtype) for c, dtype in spec.dtypes.items()}
    arrays = {c: a if a.flags.writeable else a.copy() for c, a in arrays.items()}
    frame = pd.DataFrame(arrays, copy=False)
    if not _is_sorted(frame, spec.order):
        positions = np.lexsort([arrays[c] for c in reversed(spec.order)])
        frame = pd.DataFrame({c: values[positions] for c, values in arrays.items()}, copy=False)
    return frame


def window_ms(window: Range) -> tuple[int, int]:
    """The window's `[start, end)` in epoch ms, clamped to the storable `[0, MAX_TS_MS + 1]`
    (nothing is stored outside, and a far bound stays inside int64)."""
    return (
        max(0, min(int(window.start), MAX_TS_MS // 1000 + 1) * 1000),
        max(0, min(int(window.end), MAX_TS_MS // 1000 + 1) * 1000),
    )


def check_windows(windows: Iterable[Range]) -> list[Range]:
    """The non-empty windows of a `record_answered` call; ValueError for a non-Range."""
    out = []
    for window in windows:
        if not isinstance(window, Range):
            raise ValueError(f"answered windows must be Range values, got {window!r}")
        if not window.empty:
            out.append(window)
    return out


def merge_answered(*parts: Iterable[Range]) -> list[Range]:
    """Answered windows merged (overlapping and touching ones coalesced) and sorted."""
    return merge_ranges([w for part in parts for w in part])


def clip_answered(windows: Iterable[Range], window: Range | None) -> list[Range]:
    """Merged answered windows inside `window` (all of them without one)."""
    return merge_answered(windows) if window is None else intersect_ranges(windows, window)
