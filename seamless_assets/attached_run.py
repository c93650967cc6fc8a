"""A CLI backfill executed in the `seamless` process but recorded as a run of the code
location, like a UI launch: the run carries the location's origin (`dagster.code_location`,
the `location_name` of `workspace.yaml` and `deploy/workspace.yaml`), so the webserver
lists it on the *Overview* timeline and under the location's job, and can re-execute it.

Dagster has no public API for an in-process run with a code-location origin
(`execute_in_process` records none), so this creates the run with the instance's
`create_run_for_job` and executes it with `execute_run`, as `execute_in_process` does,
on the job's in-process ephemeral copy. The private names are confined to this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REPOSITORY_NAME = "__repository__"  # the repository a `Definitions` object loads as


def code_location_origin(location: str, job_name: str) -> Any:
    """The origin of `job_name` in the code location named `location` (by name only: the
    webserver and daemon resolve it in their own workspace)."""
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin(location), REPOSITORY_NAME)
    return RemoteJobOrigin(repository, job_name)


def execute_attached(
    job: Any,
    run_config: Mapping[str, Any],
    instance: Any,
    tags: Mapping[str, str],
    location: str,
) -> Any:
    """Execute `job` (a JobDefinition) in this process as a run of `location`; the run's
    result (a Dagster `ExecutionResult`: success, run_id, events, check evaluations)."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import execute_run

    ephemeral = job.as_ephemeral_job(resource_defs={}, input_values={})  # in-process executor
    run = instance.create_run_for_job(
        job_def=ephemeral,
        run_config=run_config,
        tags={**job.run_tags, **tags},
        remote_job_origin=code_location_origin(location, job.name),
    )
    return execute_run(InMemoryJob(ephemeral), run, instance, raise_on_error=False)
