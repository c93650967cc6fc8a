"""Gap repair: request runs for closed partitions that are missing, thin or unpublished.

Each tick scans every node's closed partitions from its history start (the first bar the
exchange has, discovered once per node and recorded, `seamless_assets.history`; a node whose
start cannot be discovered yet is skipped) with two hot-store queries and one listing of
head names per node (see `coverage_scan`). A partition needs
repair when its stored bars are below `observability.coverage_ratio_threshold` of the
bars it should hold (windows the gap ledger confirms empty do not count), or when it is
stable but has no published segment. Contiguous partitions in need become
single-run backfills of that node's asset (partition range tags) of at most
MAX_BARS_PER_RUN bars each, which run inside the node's exchange pool like any other
materialization. One tick requests at most `seamless.backfill.max_repair_runs_per_tick`
runs (a new install has years of history to fill); the rest are requested on later
ticks, and the tick logs how many it left.

The run key names the node, the range and a digest of what is missing, so the same need
is requested once (Dagster also refuses a run key twice); a node with a repair queued or
running gets nothing new until it finishes. A repair run that failed is retried under a
new key (`…:retryN`), up to MAX_ATTEMPTS times per need.
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from seamless_assets.backfill_events import GAP_DETECTED_AT_TAG
from seamless_assets.config import SeamlessConfig
from seamless_assets.errors import SeamlessError
from seamless_assets.history import history_start_s
from seamless_assets.nodes import NodeId
from seamless_assets.runtime import (
    ArtifactStoreResource,
    HotStoreResource,
    RateLimiterResource,
)

from .common import (
    NEED_TAG,
    Clock,
    WatchedNode,
    dump_cursor,
    load_cursor,
    pending_nodes,
    run_tags,
    wall_clock,
)
from .coverage_scan import (
    PartitionCoverage,
    closed_partitions,
    published_partitions,
    scan_coverage,
)

TRIGGER = "gap_repair"
SENSOR_NAME = "seamless_gap_repair_sensor"
NEED_KEY_TAG = "seamless/need_key"
MAX_ATTEMPTS = 3  # a need whose runs failed this often waits for an operator (or a change)
DAY_S = 86_400
# A node with no data would otherwise be one run of its whole history (5M bars of 1m since
# 2017: several GiB in one process); a quarter of 1m (131,040 bars) fits in ~200 MiB.
MAX_BARS_PER_RUN = 131_040
FAILED_STATUSES = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclass(frozen=True)
class RepairNeed:
    """Contiguous partitions of one node that need a run, and why."""

    node: WatchedNode
    partitions: tuple[PartitionCoverage, ...]

    @property
    def first_key(self) -> str:
        return self.partitions[0].key

    @property
    def last_key(self) -> str:
        return self.partitions[-1].key

    @property
    def missing_bars(self) -> int:
        return sum(max(0, p.expected_bars - p.stored_bars) for p in self.partitions)

    @property
    def unpublished(self) -> int:
        return sum(not p.published for p in self.partitions if p.stable)

    @property
    def run_key(self) -> str:
        state = [[p.key, p.stored_bars, p.expected_bars, p.published] for p in self.partitions]
        digest = hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]
        return f"{TRIGGER}:{self.node.node_id}:{self.first_key}..{self.last_key}:{digest}"

    def summary(self) -> str:
        return (
            f"{len(self.partitions)} partition(s) {self.first_key}..{self.last_key}: "
            f"{self.missing_bars} bar(s) missing, {self.unpublished} unpublished"
        )


def needs_repair(partition: PartitionCoverage, threshold: float) -> bool:
    thin = partition.expected_bars > 0 and partition.ratio < threshold
    return thin or (partition.stable and not partition.published)


def group_needs(
    node: WatchedNode,
    coverage: Sequence[PartitionCoverage],
    threshold: float,
    max_bars: int = MAX_BARS_PER_RUN,
) -> list[RepairNeed]:
    """Runs of adjacent partitions in need (the scan lists partitions in time order), each
    at most `max_bars` bars on the grid (and at least one partition)."""
    interval, origin = node.node.interval_s, node.node.timeframe.origin_s
    groups: list[list[PartitionCoverage]] = []
    previous, bars = None, 0
    for index, partition in enumerate(coverage):
        if not needs_repair(partition, threshold):
            continue
        size = partition.window.bars(interval, origin_s=origin)
        if previous is not None and previous == index - 1 and bars + size <= max_bars:
            groups[-1].append(partition)
            bars += size
        else:
            groups.append([partition])
            bars = size
        previous = index
    return [RepairNeed(node, tuple(group)) for group in groups]


def failed_attempts(instance: dg.DagsterInstance, need: RepairNeed) -> int:
    """Finished runs for exactly this need that failed or were cancelled."""
    return instance.get_runs_count(
        filters=dg.RunsFilter(tags={NEED_KEY_TAG: need.run_key}, statuses=FAILED_STATUSES)
    )


def attempt_key(need: RepairNeed, attempt: int) -> str:
    """The run key of one attempt: Dagster launches a run key once, so a retry needs its own."""
    return need.run_key if attempt == 0 else f"{need.run_key}:retry{attempt}"


def repair_request(need: RepairNeed, attempt: int, detected_at_s: float) -> dg.RunRequest:
    """The run repairing `need`, asked at `detected_at_s` (its `gap_repair_latency_ms`
    counts from there to the run's success)."""
    return dg.RunRequest(
        run_key=attempt_key(need, attempt),
        job_name=need.node.tf_class.job_name,
        asset_selection=[need.node.asset_key],
        asset_check_keys=list(need.node.check_keys),
        tags={
            ASSET_PARTITION_RANGE_START_TAG: need.first_key,
            ASSET_PARTITION_RANGE_END_TAG: need.last_key,
            **run_tags(
                need.node,
                TRIGGER,
                **{
                    NEED_TAG: need.summary(),
                    NEED_KEY_TAG: need.run_key,
                    GAP_DETECTED_AT_TAG: f"{detected_at_s:.3f}",
                },
            ),
        },
    )


def history_floor_s(hot_store: HotStoreResource, now_s: float) -> float | None:
    """Where the hot store's history begins: a QuestDB TTL drops older bars by design, so
    partitions before it are not gaps (their segments stay in the artifact store)."""
    if hot_store.backend == "questdb" and hot_store.questdb_ttl_days:
        return now_s - hot_store.questdb_ttl_days * DAY_S
    return None


def scan_floor_s(
    hot_store: HotStoreResource, now_s: float, history_start: int | None
) -> float | None:
    """Where a node's scan begins: its history start, or later under a QuestDB TTL."""
    floors = [f for f in (history_floor_s(hot_store, now_s), history_start) if f is not None]
    return max(floors, default=None)


def gap_repair_sensor(
    config: SeamlessConfig,
    nodes: Sequence[WatchedNode],
    jobs: Sequence[UnresolvedAssetJobDefinition],
    *,
    clock: Clock = wall_clock,
    minimum_interval_seconds: int = 300,
) -> dg.SensorDefinition:
    section = config.seamless
    threshold = section.observability.coverage_ratio_threshold
    stabilization = section.artifact.stabilization_bars
    max_runs = section.backfill.max_repair_runs_per_tick
    exchanges = sorted({n.node.exchange for n in nodes})

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=list(jobs),
        minimum_interval_seconds=minimum_interval_seconds,
        description="Request single-run backfills for closed partitions that are missing, "
        "below the coverage threshold or unpublished (confirmed-empty windows excluded).",
    )
    def _gap_repair(
        context: dg.SensorEvaluationContext,
        hot_store: HotStoreResource,
        artifacts: ArtifactStoreResource,
        rate_limiter: RateLimiterResource,
    ) -> dg.SensorResult:
        # ccxt and the client load on a tick, not with the definitions.
        from resources.exchange import ExchangeClient, ExchangeSettings
        from seamless_assets.history import ensure_history_start

        now_s = clock()
        exchange_settings = {e: ExchangeSettings.from_config(config, e) for e in exchanges}
        limiters: dict[str, Any] = {}

        def client_factory(node: NodeId) -> Callable[[], ExchangeClient]:
            exchange = node.exchange
            if exchange not in limiters:
                limiters[exchange] = rate_limiter.limiter(config.rate_limit_for(exchange))
            return lambda: ExchangeClient(exchange_settings[exchange], limiters[exchange])

        requested = load_cursor(context.cursor)
        busy = pending_nodes(context.instance, TRIGGER)
        store = artifacts.open()
        hot = hot_store.open()
        requests: list[dg.RunRequest] = []
        state, outstanding, unknown = {}, 0, []
        deferred = 0  # needs left for later ticks by `max_repair_runs_per_tick`
        try:
            unreachable: dict[str, str] = {}  # exchange -> why: asked once per tick
            for node in nodes:
                exchange = node.node.exchange
                try:
                    if exchange in unreachable:
                        start = history_start_s(store, node.node)
                    else:
                        start = ensure_history_start(store, node.node, client_factory(node.node))
                except (SeamlessError, OSError) as exc:
                    start = None
                    unreachable[exchange] = f"{type(exc).__name__}: {exc}"
                reason = unreachable.get(exchange, "the exchange serves no candle for it yet")
                if start is None:  # without it every day since the partitions' start looks missing
                    context.log.warning(
                        f"{node.node_id}: history start unknown ({reason}); skipped"
                    )
                    unknown.append(node.node_id)
                    state[node.node_id] = list(requested.get(node.node_id, []))
                    continue
                floor_s = scan_floor_s(hot_store, now_s, start)
                span = closed_partitions(node.partitions_def, now_s, not_before_s=floor_s)
                published = published_partitions(store, node.node)
                coverage = scan_coverage(
                    node.node, span, hot, published, now_s, stabilization, history_start_s=start
                )
                needs = group_needs(node, coverage, threshold)
                outstanding += len(needs)
                before = set(requested.get(node.node_id, []))
                attempts = {need.run_key: failed_attempts(context.instance, need) for need in needs}
                keys = [attempt_key(need, attempts[need.run_key]) for need in needs]
                # Keep only keys of needs that still exist: the cursor stays small.
                state[node.node_id] = sorted(before.intersection(keys))
                if node.node_id in busy:
                    continue
                for need, key in zip(needs, keys, strict=True):
                    if key in before:
                        continue
                    attempt = attempts[need.run_key]
                    if len(requests) >= max_runs:
                        deferred += 1  # not in the cursor: requested on a later tick
                        continue
                    if attempt >= MAX_ATTEMPTS:
                        context.log.warning(
                            f"{node.node_id}: {need.summary()} failed {attempt} time(s); not "
                            "retrying (fix the cause, then materialize the range)"
                        )
                        continue
                    context.log.info(
                        f"{node.node_id}: repair {need.summary()} (attempt {attempt + 1})"
                    )
                    requests.append(repair_request(need, attempt, now_s))
                    state[node.node_id].append(key)
        finally:
            hot.close()
        cursor = dump_cursor({k: v for k, v in state.items() if v})
        if deferred:
            context.log.info(
                f"{len(requests)} repair run(s) requested, {deferred} more left for later "
                f"ticks (seamless.backfill.max_repair_runs_per_tick: {max_runs})"
            )
        if not requests:
            reason = (
                f"{outstanding} repair(s) already requested, running or given up"
                if outstanding
                else "every closed partition is covered"
            )
            if unknown:
                reason += f"; not scanned (history start unknown): {', '.join(unknown)}"
            return dg.SensorResult(skip_reason=reason, cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _gap_repair
