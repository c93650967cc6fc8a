"""`seamless coverage` of an event node (`funding:`, `trades:`): the spans the exchange's
answers are complete for, the rows stored, the days published and the latest snapshot."""

from __future__ import annotations

from .config import SeamlessConfig
from .core.coverage import subtract_ranges
from .core.frame import Range, iso_utc
from .event_nodes import EventNodeId

LISTED_MAX = 20


def print_event_coverage(
    config: SeamlessConfig, node: EventNodeId, start_s: int | None, end_s: int | None
) -> int:
    from .runtime import resources_from_config

    resources = resources_from_config(config)
    hot = resources["hot_store"].open_events()  # type: ignore[attr-defined]
    try:
        answered = hot.answered(node.kind, str(node))
        if not answered:
            print(f"{node}: nothing answered yet (materialize its days)")
            return 0
        window = Range(
            start_s if start_s is not None else answered[0].start,
            end_s if end_s is not None else answered[-1].end,
        )
        inside = hot.answered(node.kind, str(node), window)
        rows = len(hot.read_events(node.kind, str(node), window))
        bounds = hot.event_bounds(node.kind, str(node))
    finally:
        hot.close()
    seconds = sum(r.duration_s for r in inside)
    print(
        f"{node} {window}: answered {seconds / window.duration_s:.6f} of the window, "
        f"{rows} {node.spec.row_noun}(s) stored"
    )
    if bounds is not None:
        first, last = (iso_utc(ms // 1000) for ms in bounds)
        print(f"  stored from {first} to {last} (first and last {node.spec.row_noun})")
    for r in inside[:LISTED_MAX]:
        print(f"  answered {r}")
    for r in subtract_ranges([window], inside)[:LISTED_MAX]:
        print(f"  not yet  {r}")
    artifacts = resources["artifacts"].open_events()  # type: ignore[attr-defined]
    heads = [w for w in artifacts.heads(node) if w.start < window.end and w.end > window.start]
    print(f"  days published: {len(heads)} under {artifacts.node_uri(node)}")
    snapshot = artifacts.latest_snapshot(node)
    if snapshot is None:
        print("  as_of: no snapshot yet (a run commits one when it publishes a day)")
    else:
        print(
            f"  as_of: {snapshot.as_of_iso} {snapshot.fingerprint}, data to "
            f"{snapshot.watermark_iso}, {len(snapshot.segments)} day(s), "
            f"{snapshot.row_count} {node.spec.row_noun}(s)"
        )
    return 0
