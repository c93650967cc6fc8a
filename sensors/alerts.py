"""`seamless_alert_sensor`: failed asset checks (WARN/ERROR) and failed runs become one message
each, posted to Slack (`dagster-slack`) and/or a JSON webhook (`seamless.observability.alerts`).

A failed check does not fail its run, so Dagster's run-failure sensors never see it; Dagster+
alert policies are not in OSS. This sensor reads the instance's event log instead. Each
destination keeps its own cursor (the storage id of the last event it got), so a message is
sent once per destination: the cursor passes an event only once it was delivered, or after
`max_attempts` failed deliveries (logged as given up). A failed delivery stops that
destination's stream for the tick, so messages arrive in order."""

from __future__ import annotations

import json
import time
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from seamless_assets.config import AlertsConfig, SeamlessConfig, SlackAlertConfig
from seamless_assets.config import WebhookAlertConfig as WebhookConfig

from .alert_messages import SEVERITY_RANK, Alert, check_alert, run_failure_alert
from .common import WatchedNode, dump_cursor, load_cursor

SENSOR_NAME = "seamless_alert_sensor"
BATCH = 100  # events read per stream and tick
CHECKS, RUNS = "checks", "runs"

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


def _records(
    instance: dg.DagsterInstance, stream: str, after: int | None, since_s: float
) -> Sequence[dg.EventLogRecord]:
    """Events of a stream after storage id `after` (first tick: since `since_s`), oldest first."""
    if stream == RUNS:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(
                dg.DagsterEventType.RUN_FAILURE,
                after_storage_id=after,
                after_timestamp=None if after is not None else since_s,
            ),
            limit=BATCH,
            ascending=True,
        )
        return result.records
    # No fetch_* method covers check evaluations instance-wide; get_event_records is the
    # public API for them (deprecated for Dagster 2.0, no replacement yet).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        return instance.get_event_records(
            dg.EventRecordsFilter(
                dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                after_cursor=after,
                after_timestamp=None if after is not None else since_s,
            ),
            limit=BATCH,
            ascending=True,
        )


class _Builder:
    """Alerts by storage id (built once per tick, whatever the number of destinations)."""

    def __init__(
        self, instance: dg.DagsterInstance, config: AlertsConfig, nodes: Sequence[WatchedNode]
    ) -> None:
        self.instance, self.config = instance, config
        self.node_ids = {n.asset_key: n.node_id for n in nodes}
        self.built: dict[int, Alert | None] = {}

    def __call__(self, stream: str, record: dg.EventLogRecord) -> Alert | None:
        if record.storage_id not in self.built:
            run = self.instance.get_run_by_id(record.run_id)
            ui = self.config.ui_base_url
            alert: Alert | None
            if stream == RUNS:
                alert = run_failure_alert(record, run, self.node_ids, ui)
            else:
                alert = check_alert(record, run, self.node_ids, ui)
                floor = SEVERITY_RANK[self.config.min_severity]
                if alert is not None and SEVERITY_RANK[alert.severity] < floor:
                    alert = None
            self.built[record.storage_id] = alert
        return self.built[record.storage_id]


def deliver(
    context: dg.SensorEvaluationContext,
    name: str,
    send: Sender,
    state: dict[str, Any],
    streams: Sequence[str],
    build: _Builder,
    since_s: float,
) -> int:
    """Send one destination's new alerts; returns how many were delivered. `state` holds
    its cursor per stream and the failed attempts of the message at the head."""
    attempts: dict[str, int] = state.setdefault("attempts", {})
    delivered = 0
    for stream in streams:
        for record in _records(context.instance, stream, state.get(stream), since_s):
            alert = build(stream, record)
            if alert is not None:
                try:
                    send(alert)
                except DeliveryError as exc:
                    tried = attempts.get(alert.alert_id, 0) + 1
                    if tried < build.config.max_attempts:
                        attempts[alert.alert_id] = tried
                        context.log.warning(
                            f"alert {alert.alert_id} not delivered to {name} (attempt {tried}"
                            f"/{build.config.max_attempts}, retried next tick): {exc}"
                        )
                        break
                    context.log.error(
                        f"alert {alert.alert_id} given up for {name} after {tried} failed "
                        f"attempts (alerts.max_attempts): {exc}; message: {alert.title}"
                    )
                else:
                    delivered += 1
                    context.log.info(f"alert {alert.alert_id} sent to {name}: {alert.title}")
                attempts.pop(alert.alert_id, None)
            state[stream] = record.storage_id
    return delivered


def alert_sensor(config: SeamlessConfig, nodes: Sequence[WatchedNode]) -> dg.SensorDefinition:
    alerts = config.seamless.observability.alerts
    streams = [CHECKS, RUNS] if alerts.failed_runs else [CHECKS]

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=30,
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
            name: deliver(context, name, send, cursor.setdefault(name, {}), streams, build, since_s)
            for name, send in senders.items()
        }
        summary = ", ".join(f"{n} message(s) to {name}" for name, n in sent.items())
        return dg.SensorResult(cursor=dump_cursor(cursor), skip_reason=f"sent {summary}")

    return _alerts
