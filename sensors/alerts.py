"""`seamless_alert_sensor`: failed asset checks (WARN/ERROR) and failed runs become one message
each, posted to Slack (`dagster-slack`) and/or a JSON webhook (`seamless.observability.alerts`).

A failed check does not fail its run, so Dagster's run-failure sensors never see it; Dagster+
alert policies are not in OSS. This sensor reads the instance's event log instead: every run
that ended (success, failure, cancel) since its cursor, that run's check evaluations and,
for a failed run, the failure. Each destination keeps its own cursor (the storage id of the
last run end it got, and the alerts of the next one already sent), so a message is sent
once per destination: the cursor passes a message only once it was delivered, or after
`max_attempts` failed deliveries (logged as given up). A failed delivery stops that
destination for the tick, so messages arrive in order."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Literal

import dagster as dg

from seamless_assets.config import AlertsConfig, SeamlessConfig, SlackAlertConfig
from seamless_assets.config import WebhookAlertConfig as WebhookConfig

from .alert_messages import SEVERITY_RANK, Alert, check_alert, run_failure_alert
from .common import WatchedNode, dump_cursor, load_cursor

SENSOR_NAME = "seamless_alert_sensor"
BATCH = 100  # run ends read per kind (success, failure, cancel) and tick

Sender = Callable[[Alert], None]


class DeliveryError(Exception):
    """A destination did not take a message (down, 5xx, Slack said not ok, secret unset)."""


def _secret(name: str) -> str:
    """An environment variable through `dg.EnvVar` (its value never leaves this process)."""
    value = dg.EnvVar(name).get_value()
    if not value:
        raise DeliveryError(f"environment variable {name} is not set in the daemon's environment")
    return value


def webhook_sender(config: WebhookConfig) -> Sender:
    def send(alert: Alert) -> None:
        url = config.url or _secret(config.url_env or "")
        headers = {name: _secret(env) for name, env in config.headers_env.items()}
        body = json.dumps(alert.payload(), default=str).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
                response.read()
        except OSError as exc:  # URLError, HTTPError (4xx/5xx), timeouts, refused
            raise DeliveryError(f"webhook: {exc}") from None

    return send


def slack_sender(config: SlackAlertConfig) -> Sender:
    def send(alert: Alert) -> None:
        from dagster_slack import SlackResource  # slack_sdk: only when a message goes out
        from slack_sdk.errors import SlackClientError

        client = SlackResource(token=_secret(config.token_env)).get_client()
        client.base_url = config.api_url
        try:
            client.chat_postMessage(channel=config.channel, text=alert.text)
        except (SlackClientError, OSError) as exc:
            raise DeliveryError(f"slack {config.channel}: {exc}") from None

    return send


def destinations(config: AlertsConfig) -> dict[str, Sender]:
    out: dict[str, Sender] = {}
    if config.webhook is not None:
        out["webhook"] = webhook_sender(config.webhook)
    if config.slack is not None:
        out["slack"] = slack_sender(config.slack)
    return out


RunEnd = Literal[
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
]
RUN_ENDS: tuple[RunEnd, ...] = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)


def run_ends(
    instance: dg.DagsterInstance, after: int | None, since_s: float
) -> list[dg.EventLogRecord]:
    """Runs that ended after storage id `after` (first tick: since `since_s`), oldest first.

    Run ends, not check evaluations, are the stream: run status events have instance-wide
    storage ids on every storage (SQLite's per-run shards too), and once a run ended its
    check evaluations are final, so none is missed or seen twice."""
    batches = [
        instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(
                kind,
                after_storage_id=after,
                after_timestamp=None if after is not None else since_s,
            ),
            limit=BATCH,
            ascending=True,
        ).records
        for kind in RUN_ENDS
    ]
    # A full batch may stop before another kind's records: go only as far as every kind read.
    upto = min((b[-1].storage_id for b in batches if len(b) == BATCH), default=None)
    merged = sorted((r for b in batches for r in b), key=lambda r: r.storage_id)
    return [r for r in merged if upto is None or r.storage_id <= upto]


class _Builder:
    """The alerts of a run end (built once per tick, whatever the number of destinations):
    its failed WARN/ERROR check evaluations, then the run's failure."""

    def __init__(
        self, instance: dg.DagsterInstance, config: AlertsConfig, nodes: Sequence[WatchedNode]
    ) -> None:
        self.instance, self.config = instance, config
        self.node_ids = {n.asset_key: n.node_id for n in nodes}
        self.built: dict[int, list[Alert]] = {}

    def __call__(self, end: dg.EventLogRecord) -> list[Alert]:
        if end.storage_id not in self.built:
            self.built[end.storage_id] = self._build(end)
        return self.built[end.storage_id]

    def _build(self, end: dg.EventLogRecord) -> list[Alert]:
        run = self.instance.get_run_by_id(end.run_id)
        ui, floor = self.config.ui_base_url, SEVERITY_RANK[self.config.min_severity]
        # get_records_for_run: the instance's per-run event query (no public fetch_* for
        # check evaluations; get_event_records cannot page them on SQLite's run shards).
        evaluations = self.instance.get_records_for_run(
            end.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        alerts = [
            alert
            for record in evaluations
            if (alert := check_alert(record, run, self.node_ids, ui)) is not None
            and SEVERITY_RANK[alert.severity] >= floor
        ]
        event = end.event_log_entry.dagster_event
        failed = event is not None and event.event_type == dg.DagsterEventType.RUN_FAILURE
        if failed and self.config.failed_runs:
            planned = self.instance.get_records_for_run(
                end.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
            ).records
            keys = sorted({r.asset_key for r in planned if r.asset_key is not None}, key=str)
            alerts.append(run_failure_alert(end, run, keys, self.node_ids, ui))
        return alerts


def deliver(
    context: dg.SensorEvaluationContext,
    name: str,
    send: Sender,
    state: dict[str, Any],
    build: _Builder,
    since_s: float,
) -> int:
    """Send one destination's new alerts; returns how many were delivered. `state` holds
    its cursor: `after` (the last run end fully handled), `sent` (alerts of the next run end
    already delivered) and `attempts` (failed deliveries of the message at the head)."""
    attempts: dict[str, int] = state.setdefault("attempts", {})
    max_attempts = build.config.max_attempts
    delivered = 0
    for end in run_ends(context.instance, state.get("after"), since_s):
        sent = set(state.get("sent", []))
        for alert in build(end):
            if alert.alert_id in sent:
                continue
            try:
                send(alert)
            except DeliveryError as exc:
                tried = attempts.get(alert.alert_id, 0) + 1
                if tried < max_attempts:
                    attempts[alert.alert_id] = tried
                    context.log.warning(
                        f"alert {alert.alert_id} not delivered to {name} (attempt "
                        f"{tried}/{max_attempts}, retried next tick): {exc}"
                    )
                    state["sent"] = sorted(sent)
                    return delivered
                context.log.error(
                    f"alert {alert.alert_id} given up for {name} after {tried} failed "
                    f"attempts (alerts.max_attempts): {exc}; message: {alert.title}"
                )
            else:
                delivered += 1
                context.log.info(f"alert {alert.alert_id} sent to {name}: {alert.title}")
            attempts.pop(alert.alert_id, None)
            sent.add(alert.alert_id)
        state["after"], state["sent"] = end.storage_id, []
    return delivered


def alert_sensor(config: SeamlessConfig, nodes: Sequence[WatchedNode]) -> dg.SensorDefinition:
    alerts = config.seamless.observability.alerts

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=alerts.interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Posts failed WARN/ERROR asset checks and failed runs to Slack and/or a "
        "webhook (seamless.observability.alerts), one message each.",
    )
    def _alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        senders = destinations(alerts)
        if not senders:
            return dg.SensorResult(
                skip_reason="no destination: set seamless.observability.alerts.webhook "
                "and/or .slack in seamless.yaml"
            )
        cursor = load_cursor(context.cursor)
        since_s = time.time() - alerts.lookback_s  # event timestamps are wall-clock
        if not context.cursor:
            context.log.info(
                f"first tick: alerting on events of the last {alerts.lookback_s}s "
                "(alerts.lookback_s), not older ones"
            )
        build = _Builder(context.instance, alerts, nodes)
        sent = {
            name: deliver(context, name, send, cursor.setdefault(name, {}), build, since_s)
            for name, send in senders.items()
        }
        summary = ", ".join(f"{n} message(s) to {name}" for name, n in sent.items())
        return dg.SensorResult(cursor=dump_cursor(cursor), skip_reason=f"sent {summary}")

    return _alerts
