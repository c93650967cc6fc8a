"""`seamless_pools_sensor`: keeps each exchange pool's limit in the instance equal to the
config's, so a daemon applies `exchanges.<id>.pool_limit` without a manual step."""

from __future__ import annotations

import dagster as dg

from seamless_assets.config import SeamlessConfig
from seamless_assets.pools import apply_pool_limits, configured_pool_limits

POOLS_SENSOR = "seamless_pools_sensor"


def pools_sensor(config: SeamlessConfig) -> dg.SensorDefinition:
    """One read of the instance's pools per tick; writes only a limit that differs."""
    limits = configured_pool_limits(config)

    @dg.sensor(
        name=POOLS_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Stores each exchange pool's limit (exchanges.<id>.pool_limit) in the "
        "instance when it differs.",
    )
    def _pools(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        changes = apply_pool_limits(context.instance, limits)
        changed = [c.describe() for c in changes if c.changed]
        for line in changed:
            context.log.info(f"pool limit set: {line}")
        if changed:
            return dg.SkipReason(f"pool limits set: {'; '.join(changed)}")
        return dg.SkipReason(f"{len(changes)} pool limit(s) already as configured")

    return _pools


DEAD_RUNS_SENSOR = "seamless_dead_runs_sensor"


def dead_runs_sensor() -> dg.SensorDefinition:
    """Every 15 s: a STARTED run whose process is gone (SIGKILL, OOM) is failed and its pool
    slots freed, and an ended run still holding slots gives them back
    (seamless_assets/dead_runs.py), so the next run of its exchange starts
    without any CLI command, whichever way it was launched."""

    @dg.sensor(
        name=DEAD_RUNS_SENSOR,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Fails STARTED runs whose run worker (or seamless process) died and frees "
        "the pool slots they hold.",
    )
    def _dead_runs(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        from seamless_assets.dead_runs import free_slots_of_ended_runs, release_dead_runs

        released = release_dead_runs(context.instance)
        for dead in released:
            context.log.warning(
                f"run {dead.run_id}: its {dead.how} (pid {dead.pid}) is gone; "
                "marked failed, pool slots freed"
            )
        freed = free_slots_of_ended_runs(context.instance)
        for run_id in freed:
            context.log.warning(f"run {run_id} ended still holding pool slots; freed")
        if released or freed:
            return dg.SkipReason(
                f"released {len(released)} run(s) whose process died; freed the slots of "
                f"{len(freed)} ended run(s)"
            )
        return dg.SkipReason("no run of this host lost its process; no ended run holds a slot")

    return _dead_runs
