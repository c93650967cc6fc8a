"""The alert sensor end to end: backfills against the sandbox exchange in a real Dagster
instance, the sensor evaluated against that instance, messages received by a real HTTP
server on 127.0.0.1 (a webhook, and a stand-in for Slack's Web API driven by dagster-slack's
client). Every failed WARN/ERROR evaluation and every failed run is one message; later ticks
send nothing again; a receiver that is down gets the message once it is back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.definitions import build_definitions
from seamless_assets.governance_checks import GOVERNANCE_JOB
from sensors.alerts import SENSOR_NAME
from tests.assets.secret_scan import Secret, file_blobs, leaks
from tests.services import fresh_postgres_database, postgres_url

from .conftest import DAY, NODE, T0, Clock, tick

MIN = 60
REPO = Path(__file__).resolve().parents[2]
DEPLOY_DAGSTER_YAML = REPO / "deploy" / "dagster.yaml"
TOKEN_ENV = "SEAMLESS_TEST_SLACK_TOKEN"
TOKEN = "xoxb-test-token-never-stored"


class Receiver:
    """A real HTTP server that records JSON (webhook) or form/JSON (Slack) posts and answers
    `status` (503: a receiver in trouble). `stop()` + `start()` keep the same port."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.status = 200
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.attempts += 1
                ok = outer.status < 300
                if ok:
                    outer.received.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                answer = json.dumps({"ok": ok, "ts": "1.0"}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def _with_alerts(project: SeamlessConfig, alerts: dict[str, Any], **seamless: Any) -> Any:
    path = Path(project.source or "")
    raw = yaml.safe_load(path.read_text())
    raw["seamless"].setdefault("observability", {})["alerts"] = alerts
    for key, value in seamless.items():
        raw["seamless"][key] = {**raw["seamless"].get(key, {}), **value}
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _backfill(config: SeamlessConfig, first_day: int, days: int) -> bool:
    start = datetime.fromtimestamp(T0 + first_day * DAY, tz=UTC)
    end = datetime.fromtimestamp(T0 + (first_day + days) * DAY, tz=UTC)
    return run_backfill(config, [config.node(NODE)], start, end).success


def _failed_checks(instance: dg.DagsterInstance) -> list[dg.AssetCheckEvaluation]:
    records = instance.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.ASSET_CHECK_EVALUATION), ascending=True
    )
    out = []
    for record in records:
        event = record.event_log_entry.dagster_event
        assert event is not None
        evaluation = event.event_specific_data
        assert isinstance(evaluation, dg.AssetCheckEvaluation)
        if not evaluation.passed:
            out.append(evaluation)
    return out


def test_a_maintenance_gap_and_a_bad_bar_each_alert_once_with_their_numbers(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    instance: dg.DagsterInstance,
    receiver: Receiver,
) -> None:
    # Stabilization of 1000 bars (16.7 h): on the exchange's clock (2024-01-08 12:00) the
    # maintenance window on 2024-01-07 20:00-22:00 is not stable yet, so it is not confirmed
    # empty and the run's window lacks 120 of 4320 bars (coverage 0.972 < 0.98: WARN). A
    # confirmed (stable) gap is known, not missing: `exchange_gaps` reports it (next test).
    config = _with_alerts(
        project,
        {"webhook": {"url": f"{receiver.url}/hook"}, "ui_base_url": "http://dagster.test:3000"},
        artifact={"stabilization_bars": 1000},
    )
    gap = [T0 + 6 * DAY + 20 * 3600, T0 + 6 * DAY + 22 * 3600]
    bad_bar = T0 + 4 * DAY + 77 * MIN  # 2024-01-05 01:17: high < low
    sandbox.configure(
        gaps={"BTC/USDT": [gap]},
        corruptions=[{"symbol": "BTC/USDT", "ts": bad_bar, "kind": "high_below_low"}],
    )
    defs = build_definitions(config, clock=clock)
    assert _backfill(config, 4, 3)  # 2024-01-05 .. 2024-01-07: three partitions, one run

    result = tick(defs, SENSOR_NAME, instance)
    messages = {m["check"]: m for m in receiver.payloads()}
    assert len(receiver.payloads()) == 2 == len(messages), receiver.payloads()
    gap_alert, bar_alert = messages["coverage_ratio"], messages["ohlc_sanity"]
    for message, severity in ((gap_alert, "WARN"), (bar_alert, "ERROR")):
        assert message["kind"] == "asset_check" and message["severity"] == severity
        assert message["node_ids"] == [NODE] and message["partitions"] == [
            "2024-01-05",
            "2024-01-07",
        ]
        assert message["job"] == "ohlcv_intraday_job" and message["run_id"]
        assert message["url"].startswith("http://dagster.test:3000/assets/")
        assert NODE in message["text"] and message["check"] in message["text"]
    # missing: the maintenance window and the bad bar (bad data is never stored)
    assert gap_alert["values"]["coverage_ratio"] == pytest.approx(1 - 121 / 4320, abs=1e-6)
    assert gap_alert["values"]["missing_bars"] == 121
    assert gap_alert["values"]["missing_ranges"] == [
        "[2024-01-05T01:17:00Z, 2024-01-05T01:18:00Z)",
        "[2024-01-07T20:00:00Z, 2024-01-07T22:00:00Z)",
    ]
    assert gap_alert["thresholds"] == {"threshold": 0.98}
    assert "threshold=0.98" in gap_alert["text"] and "missing_bars=121" in gap_alert["text"]
    assert bar_alert["values"]["flagged_rows"] == {"ohlc_inconsistent": 1}
    assert bar_alert["values"]["flagged_partitions"] == [
        "[2024-01-05T00:00:00Z, 2024-01-06T00:00:00Z) ohlc_inconsistent=1"
    ]

    # later ticks send nothing again, also after new passing evaluations
    for _ in range(2):
        result = tick(defs, SENSOR_NAME, instance, result.cursor)
    assert len(receiver.payloads()) == 2

    # any failed governance check (WARN or ERROR) is one message too, with its thresholds
    governance = defs.resolve_job_def(GOVERNANCE_JOB).execute_in_process(instance=instance)
    assert governance.success
    failed = [e for e in governance.get_asset_check_evaluations() if not e.passed]
    assert {e.check_name for e in failed} >= {"live_staleness"}  # stored data is 12 h old
    tick(defs, SENSOR_NAME, instance, tick(defs, SENSOR_NAME, instance, result.cursor).cursor)
    later = receiver.payloads()[2:]
    assert sorted(m["check"] for m in later) == sorted(e.check_name for e in failed)
    for message in later:
        assert message["severity"] in ("WARN", "ERROR") and message["thresholds"]
    stale = next(m for m in later if m["check"] == "live_staleness")
    assert stale["severity"] == "ERROR" and stale["thresholds"]["max_lag_s"] == 120
    assert len(_failed_checks(instance)) == len(receiver.payloads())


def test_a_confirmed_maintenance_gap_alerts_once_with_the_shipped_settings(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    instance: dg.DagsterInstance,
    receiver: Receiver,
) -> None:
    # Default stabilization: the exchange confirms the windows empty, coverage counts them
    # as known (passes), and `exchange_gaps` (WARN) says the bars will never exist.
    config = _with_alerts(project, {"webhook": {"url": f"{receiver.url}/hook"}})
    gaps = [
        [T0 + 4 * DAY, T0 + 4 * DAY + 3600],  # 60 min at the very start of the run's window
        [T0 + 4 * DAY + 20 * 3600, T0 + 4 * DAY + 21 * 3600 + 30 * MIN],  # 90 min
        [T0 + 5 * DAY + 3 * 3600, T0 + 5 * DAY + 3 * 3600 + 5 * MIN],  # 5 min: quiet market
    ]
    sandbox.configure(gaps={"BTC/USDT": gaps})
    defs = build_definitions(config, clock=clock)
    assert _backfill(config, 4, 2)

    result = tick(defs, SENSOR_NAME, instance)
    payloads = receiver.payloads()
    assert [m["check"] for m in payloads] == ["exchange_gaps"], payloads
    alert = payloads[0]
    assert alert["severity"] == "WARN" and alert["node_ids"] == [NODE]
    # the leading hour is after the listing (history start), not `before_listing`
    assert alert["values"]["gap_bars"] == 150 and alert["values"]["gap_count"] == 2
    assert alert["values"]["gap_partitions"] == ["[2024-01-05T00:00:00Z, 2024-01-06T00:00:00Z)"]
    assert alert["thresholds"] == {"min_gap_s": 600, "max_gap_count": 0}
    for _ in range(2):
        result = tick(defs, SENSOR_NAME, instance, result.cursor)
    assert len(receiver.payloads()) == 1


def test_a_failed_run_alerts_once_after_the_receiver_comes_back(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    instance: dg.DagsterInstance,
    receiver: Receiver,
) -> None:
    config = _with_alerts(project, {"webhook": {"url": f"{receiver.url}/hook"}})
    defs = build_definitions(config, clock=clock)
    sandbox.configure(down=True)  # every request: 503
    assert not _backfill(config, 0, 2)

    receiver.status = 503  # the receiver is in trouble: nothing counts as sent
    cursor = tick(defs, SENSOR_NAME, instance).cursor
    assert receiver.attempts == 1 and receiver.received == []
    receiver.stop()  # then down altogether: connection refused
    cursor = tick(defs, SENSOR_NAME, instance, cursor).cursor
    assert receiver.attempts == 1
    receiver.status = 200
    receiver.start()  # back, on the same address
    for _ in range(3):
        cursor = tick(defs, SENSOR_NAME, instance, cursor).cursor
    [message] = receiver.payloads()
    assert message["kind"] == "run_failure" and message["severity"] == "ERROR"
    run = instance.get_run_by_id(message["run_id"])
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    assert message["job"] == run.job_name == "ohlcv_intraday_job"
    assert message["partitions"] == ["2024-01-01", "2024-01-02"]
    assert message["node_ids"] == [NODE]
    assert message["error"] and "503" in message["error"], message["error"]
    assert message["url"] == f"http://127.0.0.1:3000/runs/{run.run_id}"
    assert run.run_id in message["text"] and message["error"] in message["text"]


def test_retries_are_bounded_and_the_stream_moves_on(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    instance: dg.DagsterInstance,
    receiver: Receiver,
) -> None:
    config = _with_alerts(project, {"webhook": {"url": receiver.url}, "max_attempts": 2})
    defs = build_definitions(config, clock=clock)
    sandbox.configure(down=True)
    assert not _backfill(config, 0, 1)
    receiver.status = 500
    cursor = None
    for _ in range(4):
        cursor = tick(defs, SENSOR_NAME, instance, cursor).cursor
    assert receiver.attempts == 2 and receiver.received == []  # given up after 2 (logged)
    receiver.status = 200
    assert not _backfill(config, 2, 1)  # a new failure after the given-up one
    tick(defs, SENSOR_NAME, instance, cursor)
    [message] = receiver.payloads()
    assert message["partitions"] == ["2024-01-03"]


def test_slack_gets_one_message_per_alert_through_dagster_slack(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    instance: dg.DagsterInstance,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slack's Web API stood in for by the local receiver: dagster-slack's client posts
    `chat.postMessage` with the bot token from the environment variable the config names."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    alerts = {"slack": {"channel": "#data-alerts", "token_env": TOKEN_ENV}}
    alerts["slack"]["api_url"] = f"{receiver.url}/api/"
    config = _with_alerts(project, alerts)
    defs = build_definitions(config, clock=clock)
    sandbox.configure(
        corruptions=[{"symbol": "BTC/USDT", "ts": T0 + DAY + 5 * MIN, "kind": "high_below_low"}]
    )
    assert _backfill(config, 0, 2)
    sandbox.configure(corruptions=[], down=True)
    assert not _backfill(config, 2, 1)

    cursor = tick(defs, SENSOR_NAME, instance).cursor
    assert tick(defs, SENSOR_NAME, instance, cursor).cursor == cursor
    assert [r["path"] for r in receiver.received] == ["/api/chat.postMessage"] * 2
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in receiver.received)
    posts = [_slack_fields(r["body"]) for r in receiver.received]
    assert {p["channel"] for p in posts} == {"#data-alerts"}
    check_text, run_text = (p["text"] for p in posts)
    assert check_text.startswith(f"[ERROR] ohlc_sanity failed on {NODE}")
    assert "partitions: 2024-01-01…2024-01-02" in check_text
    assert "thresholds:" in check_text and "/assets/" in check_text
    assert run_text.startswith("[ERROR] run of ohlcv_intraday_job failed")
    assert "partitions: 2024-01-03" in run_text and "/runs/" in run_text
    assert TOKEN not in (cursor or "")


def test_on_a_postgres_instance_each_problem_is_one_message_with_auth_from_the_env(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The production instance config (deploy/dagster.yaml, Postgres storage): a run with a
    bad bar, a clean run and a failed run give two messages, each once; the webhook's
    Authorization header comes from the environment variable the config names."""
    home = tmp_path / "pg_home"
    home.mkdir()
    shutil.copy(DEPLOY_DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("SEAMLESS_TEST_WEBHOOK_AUTH", "Bearer hook-secret")
    alerts = {"webhook": {"url": receiver.url}}
    alerts["webhook"]["headers_env"] = {"Authorization": "SEAMLESS_TEST_WEBHOOK_AUTH"}
    config = _with_alerts(project, alerts)
    with fresh_postgres_database("seamless_alerts") as db:
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url(db))
        monkeypatch.setenv("DAGSTER_COMPUTE_LOG_DIR", str(tmp_path / "logs"))
        with dg.DagsterInstance.get() as instance:
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            defs = build_definitions(config, clock=clock)
            bad = T0 + 2 * DAY + 9 * MIN
            sandbox.configure(corruptions=[{"symbol": "BTC/USDT", "ts": bad, "kind": "zero_bar"}])
            assert _backfill(config, 2, 1)
            cursor = tick(defs, SENSOR_NAME, instance).cursor
            sandbox.configure(corruptions=[])
            assert _backfill(config, 3, 1)  # clean: nothing to say
            sandbox.configure(down=True)
            assert not _backfill(config, 4, 1)
            for _ in range(3):
                cursor = tick(defs, SENSOR_NAME, instance, cursor).cursor
    sanity, failure = receiver.payloads()
    assert (sanity["check"], sanity["partitions"]) == ("ohlc_sanity", ["2024-01-03"])
    assert sanity["values"]["flagged_rows"] == {"zero_bar": 1}
    assert sanity["url"].endswith("?view=partitions&partition=2024-01-03")
    assert (failure["kind"], failure["partitions"]) == ("run_failure", ["2024-01-05"])
    assert {r["headers"]["Authorization"] for r in receiver.received} == {"Bearer hook-secret"}
    assert "hook-secret" not in (cursor or "")


def test_the_daemon_runs_the_sensor_and_sends_each_message_once(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    instance: dg.DagsterInstance,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    """`dagster sensor start` + `dagster-daemon run` on the project's workspace: the daemon
    ticks the sensor (every 2 s here), persists its cursor, and a bad bar is one message
    however many ticks follow."""
    hook, auth = Secret.new("alerts.webhook.url_env"), Secret.new("alerts.webhook.headers_env")
    webhook: dict[str, Any] = {"url_env": "SEAMLESS_TEST_HOOK_URL"}
    webhook["headers_env"] = {"Authorization": "SEAMLESS_TEST_HOOK_AUTH"}
    config = _with_alerts(project, {"webhook": webhook, "interval_s": 2})
    env = {**os.environ, "SEAMLESS_CONFIG": config.source or ""}
    env["DAGSTER_HOME"] = instance.root_directory
    env["SEAMLESS_TEST_HOOK_URL"] = f"{receiver.url}/hook/{hook.value}"
    env["SEAMLESS_TEST_HOOK_AUTH"] = auth.value
    bin_dir = Path(sys.executable).parent
    workspace = ["-w", str(REPO / "workspace.yaml")]
    subprocess.run(
        [str(bin_dir / "dagster"), "sensor", "start", *workspace, SENSOR_NAME],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", *workspace],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        sandbox.configure(
            corruptions=[{"symbol": "BTC/USDT", "ts": T0 + 5 * MIN, "kind": "negative_price"}]
        )
        assert _backfill(config, 0, 2)
        deadline = time.monotonic() + 90
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.5)
        assert receiver.received, (tmp_path / "daemon.log").read_text()[-3000:]
        ticks = _ticks(instance)
        while _ticks(instance) < ticks + 3 and time.monotonic() < deadline + 30:
            time.sleep(0.5)
        assert _ticks(instance) >= ticks + 3
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
    [message] = receiver.payloads()
    assert message["check"] == "ohlc_sanity" and message["severity"] == "ERROR"
    assert message["partitions"] == ["2024-01-01", "2024-01-02"]
    assert receiver.received[0]["path"] == f"/hook/{hook.value}"
    assert receiver.received[0]["headers"]["Authorization"] == auth.value
    # the secrets went out, and nowhere else: not the instance (cursor, ticks, event log,
    # run storage), not the daemon's log, not the data or the config
    assert leaks([hook, auth], file_blobs(tmp_path)) == []


def _ticks(instance: dg.DagsterInstance) -> int:
    """Ticks of the alert sensor the daemon recorded."""
    [state] = [s for s in instance.all_instigator_state() if s.instigator_name == SENSOR_NAME]
    return len(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1000))


def _slack_fields(body: bytes) -> dict[str, str]:
    from urllib.parse import parse_qsl

    text = body.decode()
    return json.loads(text) if text.startswith("{") else dict(parse_qsl(text))


def test_without_a_destination_the_sensor_says_what_to_set(
    project: SeamlessConfig, clock: Clock, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(project, clock=clock)
    assert defs.resolve_sensor_def(SENSOR_NAME).default_status == dg.DefaultSensorStatus.STOPPED
    result = tick(defs, SENSOR_NAME, instance)
    assert result.skip_reason is not None
    assert "seamless.observability.alerts.webhook" in str(result.skip_reason)
