"""`seamless backfill --queue`: submit a backfill to the instance's run queue through the
Dagster webserver (Dagster's public GraphQL client), so the run is created by the webserver
from its code location like a UI launch: it shows on the Overview timeline and in the
asset's runs, waits in the run queue, and the daemon launches it within the exchange pools.

The run carries the same single-run backfill tags and run config as `seamless backfill`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from .config import SeamlessConfig
from .errors import SeamlessError
from .event_nodes import AnyNode

# Dagster's documented tags of a single-run partition-range backfill (what the UI sets).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
SUBMITTED_TAG = "seamless/submitted_by"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def graphql_client(webserver: str) -> Any:
    """A DagsterGraphQLClient for `webserver` (`http[s]://host[:port][/prefix]`)."""
    from dagster_graphql import DagsterGraphQLClient

    url = urlparse(webserver)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SeamlessError(
            f"--webserver {webserver!r} is not an http(s) URL of the Dagster webserver; "
            "pass e.g. --webserver http://127.0.0.1:3000"
        )
    if url.username or url.password or url.query:
        raise SeamlessError(
            f"--webserver for {url.hostname}: credentials or a query in the URL are refused "
            "(they would be printed and logged); pass the bare URL"
        )
    return DagsterGraphQLClient(
        url.hostname,
        port_number=url.port,
        use_https=url.scheme == "https",
        path_prefix=url.path.rstrip("/"),
        timeout=60,
    )


def _unreachable(exc: BaseException) -> bool:
    """Whether the client's error is a connection failure or timeout (its cause chain)."""
    import requests

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (requests.ConnectionError, requests.Timeout)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def submit_backfill(
    config: SeamlessConfig,
    nodes: Sequence[AnyNode],
    start: datetime,
    end: datetime,
    *,
    webserver: str,
    location: str | None = None,
    wait: bool = False,
    refetch_gaps: bool = False,
    refetch_stored: bool = False,
    poll_s: float = 2.0,
) -> int:
    """Submit one queued run over the partitions of `nodes` in [start, end); print its id
    and UI link; with `wait`, follow it to its end. Returns the CLI's exit code."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClientError

    from .cli import backfill_run_config, plan_backfill
    from .definitions import build_definitions

    job_name, keys = plan_backfill(config, nodes, start, end)
    defs = build_definitions(config)
    client = graphql_client(webserver)
    try:
        run_id = client.submit_job_execution(
            job_name,
            repository_location_name=location,
            run_config=backfill_run_config(defs, nodes, refetch_gaps, refetch_stored),
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1], SUBMITTED_TAG: "cli"},
            asset_selection=[dg.AssetKey(n.asset_key_path()) for n in nodes],
        )
    except DagsterGraphQLClientError as exc:
        if _unreachable(exc):
            raise SeamlessError(
                f"the Dagster webserver at {webserver} is not reachable; start it "
                "(README: Running it) or pass --webserver"
            ) from None
        raise SeamlessError(
            f"the webserver at {webserver} refused the run of {job_name}: {exc} "
            f"{getattr(exc, 'body', '') or ''}; is the code location loaded (Reload definitions) "
            "and does --location name it?"
        ) from None
    link = f"{webserver.rstrip('/')}/runs/{run_id}"
    print(f"queued run {run_id}: {job_name}, partitions {keys[0]} … {keys[-1]} ({link})")
    if not wait:
        return 0
    status = ""
    while status not in TERMINAL:
        time.sleep(poll_s)
        status = client.get_run_status(run_id).value
    print(f"run {run_id}: {status}", file=sys.stderr if status != "SUCCESS" else sys.stdout)
    return 0 if status == "SUCCESS" else 1
