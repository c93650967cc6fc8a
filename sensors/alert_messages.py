"""What an alert says: one `Alert` per failed asset-check evaluation or failed run, built from
the instance's event records (the node, the partitions, the check, the severity, the measured
values and thresholds from the check's metadata, and links into the Dagster UI)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import dagster as dg

from .common import NODE_TAG

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
LISTED = 5  # items of a list value shown in the text (the JSON payload carries them all)
SEVERITY_RANK = {"WARN": 1, "ERROR": 2}


@dataclass(frozen=True)
class Alert:
    """One message. `alert_id` (`check:<run id>:<storage id>` / `run:<run id>`) is stable, so
    a receiver can de-duplicate too."""

    alert_id: str
    kind: str  # asset_check | run_failure
    title: str
    node_ids: list[str]
    partitions: list[str]
    severity: str
    url: str
    run_id: str
    job: str
    check: str | None = None
    description: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def text(self) -> str:
        """The message as people read it (Slack text, the webhook's `text`)."""
        lines = [self.title]
        if self.description:
            lines.append(self.description)
        if self.partitions:
            lines.append(f"partitions: {_partition_text(self.partitions)}")
        if self.values:
            lines.append("values: " + ", ".join(f"{k}={_short(v)}" for k, v in self.values.items()))
        if self.check is not None:
            shown = ", ".join(f"{k}={v}" for k, v in self.thresholds.items())
            lines.append(f"thresholds: {shown or 'none in the check metadata'}")
        if self.error:
            lines.append(f"error: {self.error}")
        lines.append(f"run {self.run_id} ({self.job})")
        lines.append(self.url)
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body: every field, plus `text`."""
        return {**asdict(self), "text": self.text}


def is_threshold(name: str) -> bool:
    """Metadata keys that are limits a check compares against, not measurements."""
    return "threshold" in name or name.startswith(("max_", "min_")) or "_min_" in name


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > LISTED:
        return f"{value[:LISTED]} (+{len(value) - LISTED} more)"
    return str(value)


def _partition_text(partitions: list[str]) -> str:
    return f"{partitions[0]}…{partitions[1]}" if len(partitions) == 2 else ", ".join(partitions)


def run_partitions(tags: Mapping[str, str]) -> list[str]:
    """A run's partition (one) or partition range (first, last) from its tags."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        start, end = tags[RANGE_START_TAG], tags[RANGE_END_TAG]
        return [start] if start == end else [start, end]
    return []


def asset_url(ui_base_url: str, key: dg.AssetKey, partitions: list[str], check: str) -> str:
    """The asset's page in the UI: the partition when there is one, else its checks."""
    path = "/".join(quote(part, safe="") for part in key.path)
    query = (
        {"view": "partitions", "partition": partitions[0]}
        if len(partitions) == 1
        else {"view": "checks", "checkDetail": check}
    )
    return f"{ui_base_url}/assets/{path}?{urlencode(query)}"


def _plain(value: dg.MetadataValue) -> Any:
    raw = value.value
    return raw if isinstance(raw, (str, int, float, bool, list, dict)) or raw is None else str(raw)


def check_alert(
    record: dg.EventLogRecord,
    run: dg.DagsterRun | None,
    node_ids: Mapping[dg.AssetKey, str],
    ui_base_url: str,
) -> Alert | None:
    """The alert of a failed check evaluation, None for a passed one."""
    event = record.event_log_entry.dagster_event
    evaluation = event.event_specific_data if event is not None else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
        return None
    metadata = {k: _plain(v) for k, v in evaluation.metadata.items()}
    node_id = node_ids.get(evaluation.asset_key) or str(
        metadata.get("node_id", evaluation.asset_key.to_user_string())
    )
    metadata.pop("node_id", None)
    if evaluation.partition is not None:
        partitions = [evaluation.partition]
    else:
        partitions = run_partitions(run.tags) if run is not None else []
    severity = evaluation.severity.value
    return Alert(
        alert_id=f"check:{record.run_id}:{record.storage_id}",
        kind="asset_check",
        title=f"[{severity}] {evaluation.check_name} failed on {node_id}",
        node_ids=[node_id],
        partitions=partitions,
        severity=severity,
        url=asset_url(ui_base_url, evaluation.asset_key, partitions, evaluation.check_name),
        run_id=record.run_id,
        job=run.job_name if run is not None else "",
        check=evaluation.check_name,
        description=evaluation.description,
        values={k: v for k, v in metadata.items() if not is_threshold(k)},
        thresholds={k: v for k, v in metadata.items() if is_threshold(k)},
    )


def _error_message(error: Any) -> str | None:
    """The first error of the cause chain that is not Dagster's wrapper (the user's)."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    own = [e for e in chain if not e.cls_name or not e.cls_name.startswith("Dagster")]
    chosen = (own or chain or [None])[0]
    return chosen.message.strip() if chosen is not None else None


def run_failure_alert(
    record: dg.EventLogRecord,
    run: dg.DagsterRun | None,
    asset_keys: Sequence[dg.AssetKey],
    node_ids: Mapping[dg.AssetKey, str],
    ui_base_url: str,
) -> Alert:
    """The alert of a failed run: its id, job, nodes (`asset_keys` it was to materialize),
    partitions and the error."""
    event = record.event_log_entry.dagster_event
    data = event.event_specific_data if event is not None else None
    step_failure = getattr(data, "first_step_failure_event", None)
    error = getattr(data, "error", None)
    if step_failure is not None:  # the step's own error says more than the run's wrapper
        error = step_failure.step_failure_data.error or error
    message = _error_message(error)
    tags = run.tags if run is not None else {}
    nodes = [node_ids.get(k, k.to_user_string()) for k in sorted(asset_keys, key=str)]
    if not nodes and NODE_TAG in tags:
        nodes = [tags[NODE_TAG]]
    job = run.job_name if run is not None else ""
    return Alert(
        alert_id=f"run:{record.run_id}",
        kind="run_failure",
        title=f"[ERROR] run of {job} failed" + (f" ({', '.join(nodes)})" if nodes else ""),
        node_ids=nodes,
        partitions=run_partitions(tags),
        severity="ERROR",
        url=f"{ui_base_url}/runs/{record.run_id}",
        run_id=record.run_id,
        job=job,
        description=record.event_log_entry.message or None,
        error=message or record.event_log_entry.message or None,
    )
