"""The reader's metrics, named after the blueprint's metrics catalog: what one finished
fetch adds to them (and the warning a downgraded or partial read logs)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from seamless_assets.core.read_context import SeamlessFetchMetadata

if TYPE_CHECKING:
    from .read_runtime import ReaderRuntime

# The reader's own logger: a downgrade is the reader's warning.
log = logging.getLogger("resources.reader")

#: SLA phase -> the blueprint's metric of its duration (last value; `_sum` accumulates).
PHASE_METRICS = {
    "storage_wait": "seamless_storage_wait_ms",
    "backfill_wait": "seamless_backfill_wait_ms",
    "live_wait": "seamless_live_wait_ms",
    "total": "seamless_total_ms",
}


def record_fetch(rt: ReaderRuntime, meta: SeamlessFetchMetadata) -> None:
    """Count one finished fetch (cache hits included) and remember its metadata."""
    with rt.state_lock:
        rt.last_metadata = meta
        m = rt.metrics
        m["seamless_fetch_total"] += 1
        for phase, metric in PHASE_METRICS.items():
            m[f"{metric}_sum"] += meta.sla.get(f"{phase}_ms", 0.0)
            m[metric] = meta.sla.get(f"{phase}_ms", 0.0)
        m["coverage_ratio"] = meta.coverage_ratio
        if meta.downgrade == "HOLD":
            m["domain_gate_holds"] += 1
        if meta.partial:
            m["partial_fill_returns"] += 1
        for phase in meta.sla_exceeded:
            m[f"seamless_sla_exceeded_total.{phase}"] += 1
        if meta.staleness_s is not None:
            m["live_staleness_seconds"] = meta.staleness_s
        for flag, count in meta.conformance_flags.items():
            if count:
                m[f"seamless_conformance_flag_total.{flag}"] += count
    if meta.downgrade or meta.partial:
        log.warning(
            "seamless downgrade %s", json.dumps(meta.to_json(), sort_keys=True, default=str)
        )
