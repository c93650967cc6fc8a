"""What a snapshot may list, and proof on read that a listed segment is what was committed.

Before a commit lists a segment it is vetted (`vet_new_segment`): sealed, its manifest's
range is the head's window (a head repointed to another day's segment is refused, not
served as an empty day), and the manifest agrees with the rows (the store's
`_manifest_problems`). The snapshot then records the sha256 of the manifest bytes, so any
later edit of the manifest is caught by every read of the snapshot
(`check_listed_segment`) and by verify.
"""

from __future__ import annotations

from typing import Any

from seamless_assets.core.frame import Range
from seamless_assets.core.snapshot import SnapshotSegment, manifest_digest
from seamless_assets.errors import ArtifactIntegrityError, UnpublishableSegment

from .layout import MANIFEST_FILE, NodeT
from .partitions import RESTORE, IdentityT, LoadedSegment, PartitionStore


def entry_problems(
    entry: SnapshotSegment, manifest: dict[str, Any], manifest_bytes: bytes
) -> list[str]:
    """How a segment's manifest disagrees with the snapshot entry that lists it."""
    problems = []
    if entry.manifest_sha256 is not None:
        digest = manifest_digest(manifest_bytes)
        if digest != entry.manifest_sha256:
            problems.append(
                f"manifest bytes hash to {digest}, the snapshot committed {entry.manifest_sha256}"
            )
    stated = manifest_range(manifest)
    if stated != entry.range:
        problems.append(f"manifest range is {stated}, the snapshot lists {entry.range}")
    if manifest.get("row_count") != entry.row_count:
        problems.append(
            f"manifest row_count is {manifest.get('row_count')!r}, the snapshot lists "
            f"{entry.row_count}"
        )
    return problems


def manifest_range(manifest: dict[str, Any]) -> Range | None:
    try:
        window = manifest["range"]
        return Range(int(window["start"]), int(window["end"]))
    except (KeyError, TypeError, ValueError):
        return None


def check_listed_segment(
    store: PartitionStore[NodeT, IdentityT],
    node: NodeT,
    entry: SnapshotSegment,
    loaded: LoadedSegment[IdentityT],
) -> None:
    """Refuse a snapshot read of `entry` unless its manifest is the committed one (v2: by
    digest) or, for version 1 entries without a digest, agrees with the rows."""
    manifest, manifest_bytes = loaded.manifest, loaded.manifest_bytes
    assert manifest is not None and manifest_bytes is not None  # a verified load
    key = f"{loaded.data_key.rpartition('/')[0]}/{MANIFEST_FILE}"
    problems = entry_problems(entry, manifest, manifest_bytes)
    if not problems and loaded.table.num_rows != entry.row_count:
        problems.append(
            f"data holds {loaded.table.num_rows} rows, the snapshot lists {entry.row_count}"
        )
    if not problems and entry.manifest_sha256 is None:
        problems = store._manifest_problems(manifest, store._frame(node, loaded.table))
    if problems:
        raise ArtifactIntegrityError(
            f"{store.blobs.uri(key)} ({node} {entry.range}) is not what its snapshot "
            f"committed: {'; '.join(problems)}; {RESTORE}"
        )


def vet_new_segment(
    store: PartitionStore[NodeT, IdentityT], node: NodeT, window: Range, fingerprint: str
) -> SnapshotSegment:
    """The snapshot entry for head `window -> fingerprint`, or UnpublishableSegment."""
    key = store.manifest_key(node, fingerprint)
    head_uri = store.blobs.uri(store._head_key(node, window))
    manifest_bytes = store.blobs.get(key)
    if manifest_bytes is None:
        raise UnpublishableSegment(
            f"{head_uri} names {fingerprint}, which has no {store.blobs.uri(key)} (not "
            f"sealed); materialize {node} partition {window} again"
        )
    manifest = store._parse_manifest(key, manifest_bytes)
    assert manifest is not None
    stated = manifest_range(manifest)
    if stated != window:
        raise UnpublishableSegment(
            f"{head_uri} names {fingerprint}, whose manifest {store.blobs.uri(key)} covers "
            f"{stated}, not the head's {window} (the head was repointed); materialize {node} "
            f"partition {window} again (it rewrites the head) or restore the head file"
        )
    frame = store.read_segment(node, fingerprint, verify=True)
    problems = store._manifest_problems(manifest, frame)
    if problems:
        raise UnpublishableSegment(
            f"{store.blobs.uri(key)} disagrees with its {store.ROWS}: {'; '.join(problems)}; "
            f"{RESTORE}"
        )
    return SnapshotSegment(window, fingerprint, len(frame), manifest_digest(manifest_bytes))
