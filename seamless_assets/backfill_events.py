"""Backfill attempt / complete / fail events: one JSON object per line on the
`seamless.backfill` logger (stderr unless the application configures that logger), and the
run's metrics pushed when it ends (`metrics_push`).

    with observe_backfill(config, node, partitions, run_id=context.run_id) as observed:
        outcome = asyncio.run(backfill(...))
        observed.outcome = outcome

An exception leaving the block is logged as `backfill_fail` (and pushed) and re-raised.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .core.frame import iso_utc

if TYPE_CHECKING:
    from .config import SeamlessConfig
    from .core.frame import Range
    from .nodes import NodeId
    from .pipeline import RunOutcome

EVENTS_LOGGER = "seamless.backfill"


def events_logger() -> logging.Logger:
    """The events' logger; without a handler of its own it writes bare JSON lines to
    stderr (not through the root logger, whose format would wrap them)."""
    logger = logging.getLogger(EVENTS_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def log_event(event: str, fields: dict[str, Any], *, level: int = logging.INFO) -> None:
    record = {"event": event, "ts": iso_utc(int(time.time())), **fields}
    events_logger().log(level, json.dumps(record, sort_keys=True, default=str))


#: Run tag: epoch seconds at which the gap repair sensor asked for the run.
GAP_DETECTED_AT_TAG = "seamless/gap_detected_at"


@dataclass
class ObservedRun:
    outcome: RunOutcome | None = None


@contextmanager
def observe_backfill(
    config: SeamlessConfig,
    node: NodeId,
    partitions: Sequence[Range],
    *,
    run_id: str,
    gap_detected_at: float | None = None,
) -> Iterator[ObservedRun]:
    """JSON attempt/complete/fail events of the run and its metrics pushed when it ends
    (`gap_detected_at`: a gap repair run, when the sensor found the gap)."""
    from .errors import FingerprintCollision
    from .metrics_push import push_run_metrics

    base = {
        "node_id": str(node),
        "run_id": run_id,
        "partition_start": iso_utc(partitions[0].start) if partitions else None,
        "partition_end": iso_utc(partitions[-1].end) if partitions else None,
        "partitions": len(partitions),
    }
    metrics = config.seamless.observability.metrics
    log_event("backfill_attempt", base)
    started = time.perf_counter()
    observed = ObservedRun()
    try:
        yield observed
    except BaseException as exc:
        duration_s = time.perf_counter() - started
        log_event(
            "backfill_fail",
            {**base, "duration_s": round(duration_s, 3), "error": f"{type(exc).__name__}: {exc}"},
            level=logging.ERROR,
        )
        collision = isinstance(exc, FingerprintCollision)
        push_run_metrics(
            metrics, node, partitions, None, duration_s=duration_s, collision=collision
        )
        raise
    duration_s = time.perf_counter() - started
    outcome = observed.outcome
    if outcome is None:  # the block ended without saying what it did: not a success
        log_event(
            "backfill_fail",
            {**base, "duration_s": round(duration_s, 3), "error": "no outcome recorded"},
            level=logging.ERROR,
        )
        push_run_metrics(metrics, node, partitions, None, duration_s=duration_s)
        return
    log_event("backfill_complete", {**base, "duration_s": round(duration_s, 3), **counts(outcome)})
    push_run_metrics(
        metrics, node, partitions, outcome, duration_s=duration_s, gap_detected_at=gap_detected_at
    )


def counts(outcome: RunOutcome) -> dict[str, Any]:
    requests = outcome.requests
    return {
        "partitions_published": len(outcome.published),
        "partitions_unstable": sum(1 for p in outcome.partitions if not p.stable),
        "segments_written": sum(1 for p in outcome.partitions if p.written),
        "bars_stored": outcome.stored.rows,
        "fetched_rows": outcome.fetched_rows,
        "exchange_requests": requests.total_requests if requests else 0,
        "exchange_retries": requests.retries if requests else 0,
        "exchange_rate_limited": requests.rate_limited if requests else 0,
        "coverage_ratio": round(outcome.coverage_ratio, 6),
        "conformance_flags": dict(outcome.flags),
    }
