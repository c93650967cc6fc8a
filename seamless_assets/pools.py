"""Dagster pools, one per exchange, and their limits from the config.

Every step that talks to an exchange runs in the pool `exchange_<id>`, whose limit
(`exchanges.<id>.pool_limit`, default 1) is how many such steps may run at once across all
runs. Dagster only knows a limit once it is stored in the instance: `seamless pools`
(before the code server starts) and `seamless_pools_sensor` (in the daemon) write it, so a
fresh instance queues on the pool from its first run, not only after a manual
`dagster instance concurrency set`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

    from .config import SeamlessConfig


def pool_name(exchange_id: str) -> str:
    """The Dagster pool of an exchange's steps."""
    return f"exchange_{exchange_id}"


def configured_pool_limits(config: SeamlessConfig) -> dict[str, int]:
    """`{pool: limit}` for every configured exchange (also those without nodes yet)."""
    exchanges = {node.exchange for node in config.nodes} | set(config.exchanges)
    return {
        pool_name(exchange_id): config.exchange(exchange_id).pool_limit
        for exchange_id in sorted(exchanges)
    }


@dataclass(frozen=True)
class PoolChange:
    """One pool as the instance had it (`before`: None = unset, or Dagster's default) and
    as it has it now."""

    pool: str
    before: int | None
    limit: int

    @property
    def changed(self) -> bool:
        return self.before != self.limit

    def describe(self) -> str:
        if not self.changed:
            return f"{self.pool}: {self.limit} (unchanged)"
        was = "unset" if self.before is None else str(self.before)
        return f"{self.pool}: {self.limit} (was {was})"


def apply_pool_limits(instance: dg.DagsterInstance, limits: dict[str, int]) -> list[PoolChange]:
    """Store each pool's limit in the instance, writing only the ones that differ.

    A limit Dagster filled in from `concurrency.pools.default_limit` counts as unset: the
    configured one is written explicitly, so a later change of the default leaves it alone.
    One read of every pool, then one write per differing pool: cheap enough for a sensor.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        raise RuntimeError(
            f"the Dagster instance's event log storage ({type(storage).__name__}) has no "
            "concurrency pools; use the SQLite or Postgres storage of dagster_home/dagster.yaml"
        )
    stored = {pool.name: pool for pool in storage.get_pool_limits()}
    changes = []
    for pool, limit in limits.items():
        current = stored.get(pool)
        before = None if current is None or current.from_default else current.limit
        if before != limit:
            storage.set_concurrency_slots(pool, limit)
        changes.append(PoolChange(pool, before, limit))
    return changes
