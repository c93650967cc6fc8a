"""Auditing everything under an artifact store's root: segments, heads and snapshots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from seamless_assets.core.event_manifest import is_event_manifest
from seamless_assets.core.fingerprint import fingerprint_dirname
from seamless_assets.core.frame import Range
from seamless_assets.core.snapshot import Snapshot, SnapshotLogEntry
from seamless_assets.errors import ArtifactIntegrityError, SeamlessError
from seamless_assets.event_nodes import AnyNode, EventNodeId
from seamless_assets.nodes import NodeId

from .blobs import AuditableBlobStore
from .event_segments import EventSegmentStore
from .layout import DATA_FILE, HEAD_NAME, MANIFEST_FILE, SEGMENT_KEY, SNAPSHOT_LOG_KEY
from .listed import entry_problems, manifest_range
from .partitions import PartitionStore

if TYPE_CHECKING:
    from .snapshots import SnapshotStore

ProblemKind = Literal[
    "fingerprint_mismatch",  # data.parquet does not hash to its manifest's fingerprint
    "unreadable",  # data or manifest cannot be decoded
    "manifest_without_data",  # a sealed segment lost its data: readers will fail
    "orphan_data",  # data without manifest (crashed publish): harmless, republish seals it
    "misplaced",  # manifest's node or fingerprint does not match where it is stored
    "dangling_head",  # a head pointer names a segment that has no manifest
    "head_mismatch",  # a head's window is not its segment's range (a repointed head)
    "temp_file",  # a writer's temporary file (a killed run) left beside the keys
    "permissions",  # a file without ordinary permissions (0666 less the umask)
    "bad_snapshot",  # a published snapshot is unreadable, tampered or lists unsealed segments
    "manifest_mismatch",  # a manifest field disagrees with its segment's bars and ledger section
]


@dataclass(frozen=True, order=True)
class VerificationProblem:
    """One finding of `ArtifactStore.verify_all`."""

    kind: ProblemKind
    uri: str
    detail: str


def verify_all(store: SnapshotStore) -> list[VerificationProblem]:
    """Check every segment and head pointer under the root (all nodes, event nodes'
    `kind=funding/…` and `kind=trades/…` by the event store's rules)."""
    segments: dict[str, set[str]] = {}
    heads: list[str] = []
    snapshot_logs: list[str] = []
    for key in store.blobs.list(""):
        match = SEGMENT_KEY.match(key)
        if match:
            segment_dir = key.rpartition("/")[0]
            segments.setdefault(segment_dir, set()).add(match["name"])
        elif "/heads/" in key and HEAD_NAME.match(key.rpartition("/")[2]):
            heads.append(key)
        elif SNAPSHOT_LOG_KEY.match(key):
            snapshot_logs.append(key)
    problems: list[VerificationProblem] = []
    for found in store._map(lambda item: _verify_stored(store, *item), sorted(segments.items())):
        problems.extend(found)
    for key in heads:
        problems.extend(_verify_head(store, key))
    for key in snapshot_logs:
        problems.extend(_verify_snapshot(store, key))
    if isinstance(store.blobs, AuditableBlobStore):
        problems.extend(VerificationProblem(f.kind, f.uri, f.detail) for f in store.blobs.audit())
    return sorted(problems)


def _verify_snapshot(store: SnapshotStore, log_key: str) -> list[VerificationProblem]:
    snapshot_key = log_key.replace("/snapshot_log/", "/snapshots/")
    uri = store.blobs.uri(log_key)
    try:
        entry = SnapshotLogEntry.from_json(json.loads(store.blobs.get(log_key) or b""))
    except (ValueError, KeyError, TypeError) as exc:
        return [VerificationProblem("bad_snapshot", uri, f"unreadable log entry: {exc}")]
    uri = store.blobs.uri(snapshot_key)  # problems of the snapshot body name its own file
    try:
        snapshot = Snapshot.from_json(json.loads(store.blobs.get(snapshot_key) or b""))
        node: AnyNode = (
            EventNodeId.parse(snapshot.node_id)
            if EventNodeId.is_event_id(snapshot.node_id)
            else NodeId.parse(snapshot.node_id)
        )
    except (ValueError, KeyError, TypeError, SeamlessError) as exc:
        return [VerificationProblem("bad_snapshot", uri, f"unreadable: {exc}")]
    if snapshot.fingerprint != entry.fingerprint:
        detail = f"the log entry names {entry.fingerprint}, the snapshot is {snapshot.fingerprint}"
        return [VerificationProblem("bad_snapshot", uri, detail)]
    problems = []
    for listed in snapshot.segments:
        key = store.manifest_key(node, listed.fingerprint)
        data = store.blobs.get(key)
        try:
            manifest = json.loads(data) if data is not None else None
        except ValueError:
            manifest = None
        if data is None or not isinstance(manifest, dict):
            detail = f"lists {listed.range} -> {store.blobs.uri(key)}, which is missing or not JSON"
            problems.append(VerificationProblem("bad_snapshot", uri, detail))
            continue
        for found in entry_problems(listed, manifest, data):
            detail = f"{listed.range} -> {store.blobs.uri(key)}: {found}"
            problems.append(VerificationProblem("bad_snapshot", uri, detail))
    return problems


def _verify_stored(
    store: SnapshotStore, segment_dir: str, names: set[str]
) -> list[VerificationProblem]:
    uri = store.blobs.uri(segment_dir)
    if MANIFEST_FILE not in names:
        return [VerificationProblem("orphan_data", uri, "data without manifest")]
    if DATA_FILE not in names:
        return [VerificationProblem("manifest_without_data", uri, "data.parquet missing")]
    try:
        manifest = json.loads(store.blobs.get(f"{segment_dir}/{MANIFEST_FILE}") or b"")
    except ValueError as exc:
        return [VerificationProblem("unreadable", uri, f"manifest: {exc}")]
    owner: PartitionStore[Any, Any] = store
    if is_event_manifest(manifest):  # a funding:/trades: segment: the event store's rules
        owner = EventSegmentStore(store.blobs, max_workers=store.max_workers)
    return [VerificationProblem(*found) for found in owner.stored_problems(segment_dir, manifest)]


def _verify_head(store: SnapshotStore, key: str) -> list[VerificationProblem]:
    uri = store.blobs.uri(key)
    try:
        fingerprint = store._read_head(key)
        segment_dir = f"{key.rpartition('/heads/')[0]}/segments/"
        segment_dir += fingerprint_dirname(fingerprint or "")
    except (ArtifactIntegrityError, ValueError) as exc:
        return [VerificationProblem("unreadable", uri, str(exc))]
    data = store.blobs.get(f"{segment_dir}/{MANIFEST_FILE}")
    if data is None:
        return [VerificationProblem("dangling_head", uri, f"{fingerprint} is not sealed")]
    name = HEAD_NAME.match(key.rpartition("/")[2])
    assert name is not None  # verify_all only passes head keys
    window = Range(int(name["start"]), int(name["end"]))
    try:
        manifest = json.loads(data)
        stated = manifest_range(manifest) if isinstance(manifest, dict) else None
    except ValueError:
        stated = None  # the segment's own check reports an unreadable manifest
    if stated is not None and stated != window:
        detail = f"names {fingerprint}, whose manifest covers {stated}, not {window}"
        return [VerificationProblem("head_mismatch", uri, detail)]
    return []
