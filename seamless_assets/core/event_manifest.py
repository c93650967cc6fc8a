"""Manifests of event segments (`funding:` and `trades:` nodes): a pure function of the
rows, the segment's identity and what conformance and the fetch established about it.

An event segment holds one UTC-day partition of an event node (`event_nodes`): rows keyed
by the kind's `key`, sorted by its `order`, each with its own time `ts` in epoch
*milliseconds* inside the partition's window (epoch seconds, half-open). Its manifest
states the identity (node, kind, range, conformance version), the table (columns with
dtypes, row count, first and last `ts`), the fingerprint of the rows under that identity
(`core.event_rows.table_fingerprint`), the conformance flag counts, the coverage (the
*answered* windows: time the exchange's answers are known complete for, clipped to the
partition and merged, with the share of the partition they cover) and the provenance
(rows per source). No wall clock enters: equal inputs give equal manifests, so a rerun
after any crash writes the same bytes.

`event_manifest_problems` recomputes every derivable field from the rows and the manifest
alone (the flag counts are the conformance's account and are only checked for shape).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..errors import InvalidNodeId
from ..event_nodes import EVENT_KINDS, EventKind, EventNodeId
from .coverage import intersect_ranges
from .event_rows import table_fingerprint
from .frame import TS, Range
from .manifest import FORMAT, RATIO_DIGITS

EVENT_MANIFEST_VERSION = 1
READABLE_EVENT_VERSIONS = (1,)
DEFAULT_SOURCE = "rest"


class EventIdentity(NamedTuple):
    """What a manifest declares its rows to be: node id, partition window, conformance."""

    node_id: str
    window: Range
    conformance_version: str


def event_identity(node: EventNodeId, window: Range, conformance_version: str) -> dict[str, Any]:
    """The identity an event segment's fingerprint hashes beside its rows."""
    return {
        "node_id": str(node),
        "kind": node.kind,
        "range": window,
        "conformance_version": conformance_version,
    }


def event_fingerprint(
    node: EventNodeId, frame: pd.DataFrame, window: Range, conformance_version: str
) -> str:
    """`sha256:<hex>` of the segment of `node` holding `frame` for `window`."""
    spec = node.spec
    identity = event_identity(node, window, conformance_version)
    return table_fingerprint(frame, spec.columns, spec.dtypes, identity)


def is_event_manifest(manifest: object) -> bool:
    """Whether a parsed manifest is an event segment's (it names an event `kind`; bar
    manifests have no `kind` field)."""
    return isinstance(manifest, Mapping) and manifest.get("kind") in EVENT_KINDS


def event_frame_problems(spec: EventKind, frame: pd.DataFrame, window: Range) -> list[str]:
    """How `frame` fails to be a segment table of `spec` for `window`: exactly the kind's
    columns and dtypes in order, sorted by its `order`, one row per `key`, every `ts` (ms)
    inside `[window.start * 1000, window.end * 1000)`. [] when it is one."""
    got = [(str(c), str(frame[c].dtype)) for c in frame.columns]
    if got != list(spec.dtypes.items()):
        wanted = ", ".join(f"{c}:{d}" for c, d in spec.dtypes.items())
        shown = ", ".join(f"{c}:{d}" for c, d in got)
        return [f"columns: a {spec.name} segment holds exactly [{wanted}], got [{shown}]"]
    problems = []
    ts = frame[TS].to_numpy(dtype=np.int64)
    lo, hi = window.start * 1000, window.end * 1000
    outside = int(np.count_nonzero((ts < lo) | (ts >= hi)))
    if outside:
        problems.append(
            f"range: {outside} row(s) with ts (ms) outside [{lo}, {hi}), the partition {window}"
        )
    if not _sorted_by(frame, spec.order):
        problems.append(f"order: rows are not sorted by {list(spec.order)}; conform them first")
    if len(frame) > 1 and bool(frame.duplicated(list(spec.key)).any()):
        problems.append(f"key: rows repeat a {list(spec.key)}; conform them first")
    return problems


def _sorted_by(frame: pd.DataFrame, order: Sequence[str]) -> bool:
    """Whether consecutive rows are non-decreasing in the lexicographic `order`."""
    if len(frame) < 2:
        return True
    later = np.zeros(len(frame) - 1, dtype=bool)
    tied = np.ones(len(frame) - 1, dtype=bool)
    for column in order:
        values = frame[column].to_numpy()
        later |= tied & (values[1:] > values[:-1])
        tied &= values[1:] == values[:-1]
    return bool(np.all(later | tied))


def build_event_manifest(
    node: EventNodeId,
    window: Range,
    frame: pd.DataFrame,
    *,
    conformance_version: str,
    flags: Mapping[str, int],
    answered: Sequence[Range],
    sources: Mapping[str, int] | None,
) -> dict[str, Any]:
    """The manifest of the segment of `node` holding `frame` (its rows of `window`).

    `flags`: the conformance's flag counts for the partition; `answered`: windows the
    exchange's answers are known complete for (any; clipped to `window` and merged);
    `sources`: rows per source, summing to the row count (None: all over REST).
    ValueError when `frame` is not a segment table for `window` or the counts are not
    non-negative integers.
    """
    problems = event_frame_problems(node.spec, frame, window)
    if problems:
        raise ValueError(f"cannot build the manifest of {node} {window}: {'; '.join(problems)}")
    rows = len(frame)
    ts = frame[TS].to_numpy(dtype=np.int64)
    by_source = _counts("sources", sources) if sources else {DEFAULT_SOURCE: rows}
    if sum(by_source.values()) != rows:
        raise ValueError(f"sources count {sum(by_source.values())} rows, the frame has {rows}")
    covered = intersect_ranges(answered, window)
    return {
        "manifest_version": EVENT_MANIFEST_VERSION,
        "node_id": str(node),
        "kind": node.kind,
        "range": window.to_json(),
        "columns": [[c, d] for c, d in node.spec.dtypes.items()],
        "format": dict(FORMAT),
        "row_count": rows,
        "first_ts": int(ts[0]) if rows else None,
        "last_ts": int(ts[-1]) if rows else None,
        "fingerprint": event_fingerprint(node, frame, window, conformance_version),
        "conformance": {"version": conformance_version, "flags": _counts("flags", flags)},
        "coverage": _coverage_json(covered, window),
        "provenance": {"rows_by_source": by_source},
    }


def _counts(name: str, counts: Mapping[str, int]) -> dict[str, int]:
    out = {}
    for key, value in counts.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} maps names to integer counts, got {key!r}: {value!r}")
        if value < 0:
            raise ValueError(f"{name} counts cannot be negative, got {key!r}: {value}")
        out[key] = int(value)
    return dict(sorted(out.items()))


def _coverage_json(covered: Sequence[Range], window: Range) -> dict[str, Any]:
    seconds = sum(r.duration_s for r in covered)
    ratio = seconds / window.duration_s if window.duration_s else 1.0
    return {
        "answered": [[r.start, r.end] for r in covered],
        "ratio": round(ratio, RATIO_DIGITS),
    }


def identity_from_event_manifest(manifest: Mapping[str, Any]) -> EventIdentity:
    """`(node_id, window, conformance_version)` an event manifest declares; ValueError when
    a field is missing or malformed, the node id is not an event node's, or `kind` is not
    the node's kind."""
    try:
        version = manifest.get("manifest_version")
        if version not in READABLE_EVENT_VERSIONS:
            raise ValueError(
                f"manifest_version {version!r} is not one of {READABLE_EVENT_VERSIONS}"
            )
        node = EventNodeId.parse(str(manifest["node_id"]))
        if manifest.get("kind") != node.kind:
            raise ValueError(f"kind {manifest.get('kind')!r} is not {node}'s {node.kind!r}")
        window = Range(int(manifest["range"]["start"]), int(manifest["range"]["end"]))
        version_text = manifest["conformance"]["version"]
        if not isinstance(version_text, str):
            raise ValueError(f"conformance.version must be a string, got {version_text!r}")
    except (KeyError, TypeError, ValueError, AttributeError, InvalidNodeId) as exc:
        raise ValueError(
            "an event manifest needs manifest_version, node_id (an event node), kind, "
            f"range.start, range.end and conformance.version: {exc}"
        ) from exc
    return EventIdentity(str(node), window, version_text)


def event_manifest_problems(
    manifest: Mapping[str, Any], frame: pd.DataFrame, *, check_fingerprint: bool = True
) -> list[str]:
    """Every field derivable from the segment's rows and the manifest itself that
    disagrees with what the manifest states; [] when consistent.

    `check_fingerprint=False` skips re-hashing the rows (for callers that just did).
    """
    try:
        identity = identity_from_event_manifest(manifest)
    except ValueError as exc:
        return [f"manifest is malformed: {exc}"]
    node = EventNodeId.parse(identity.node_id)
    window = identity.window
    problems: list[str] = []

    def differs(field: str, stated: object, derived: object) -> None:
        if stated != derived:
            problems.append(f"{field}: manifest says {stated!r}, the segment gives {derived!r}")

    columns = manifest.get("columns")
    stated_columns = [list(c) for c in columns] if isinstance(columns, list) else columns
    differs("columns", stated_columns, [[str(c), str(frame[c].dtype)] for c in frame.columns])
    differs("range", manifest.get("range"), window.to_json())
    if problems:
        return problems
    problems += event_frame_problems(node.spec, frame, window)
    rows = len(frame)
    ts = frame[TS].to_numpy(dtype=np.int64)
    differs("row_count", manifest.get("row_count"), rows)
    differs("first_ts", manifest.get("first_ts"), int(ts[0]) if rows else None)
    differs("last_ts", manifest.get("last_ts"), int(ts[-1]) if rows else None)
    if check_fingerprint and not problems:
        derived = event_fingerprint(node, frame, window, identity.conformance_version)
        differs("fingerprint", manifest.get("fingerprint"), derived)
    flags: Any = manifest["conformance"].get("flags")
    try:
        _counts("conformance.flags", flags)
    except (ValueError, AttributeError) as exc:
        problems.append(f"conformance.flags: {exc}")
    coverage: Any = manifest.get("coverage")
    try:
        answered = [Range(int(s), int(e)) for s, e in coverage["answered"]]
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(f"coverage: not a list of [start, end] answered windows: {exc!r}")
    else:
        differs("coverage", coverage, _coverage_json(intersect_ranges(answered, window), window))
    provenance = manifest.get("provenance")
    by_source: Any = provenance.get("rows_by_source") if isinstance(provenance, Mapping) else None
    try:
        counted = sum(_counts("provenance.rows_by_source", by_source).values())
    except (ValueError, AttributeError) as exc:
        problems.append(str(exc))
    else:
        differs("provenance.rows_by_source (total)", counted, rows)
    return problems
