"""No secret at rest (issue 9): a distinct random secret is planted in every place a user
can configure one, the product's main paths run on real services, and everything they
wrote is searched for every secret in every encoding a secret takes when written.

Places: the QuestDB DSN password and the ILP password, the Redis DSN password under each
key the DSN can come from, ccxt credentials and an auth header in `ccxt_config`, the
coordinator URL, the AWS keys; each given through `${ENV}` and written literally.
Paths: `seamless backfill` (subprocess, own DAGSTER_HOME), snapshot, coverage, verify,
doctor with a service down, a backtest read pinned to the committed as_of and a live read
(`SeamlessReader`), as_of and gap-repair sensor ticks, a run failing on a dead exchange
(subprocess) and one failing on a dead ILP endpoint (in process).
Searched: every file under DAGSTER_HOME and the data dir (SQLite rows inflated, Parquet
decoded), every S3 object, every key and value of the private Redis, every row and name
of the test's QuestDB tables, the subprocesses' output, this process's output and logging,
the Dagster events of the in-process runs and the sensors' results."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest

from resources.hot_store.questdb import QuestDBHotStore
from resources.reader import ComputeContext, SeamlessReader
from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.cli import main, run_backfill
from seamless_assets.config import load_config, load_config_dict
from seamless_assets.definitions import build_definitions
from seamless_assets.errors import ConfigError
from tests.services import (
    QUESTDB_DSN,
    QUESTDB_ILP,
    QUESTDB_PG_ADDR,
    REDIS_ADDR,
    S3_ADDR,
    S3_ENDPOINT,
    require_service,
)

from .conftest import PROJECT_DAGSTER_YAML, open_artifacts
from .secret_scan import (
    Blob,
    PgPasswordProxy,
    Secret,
    file_blobs,
    free_port,
    leaks,
    private_redis,
    questdb_blobs,
    redis_blobs,
    s3_blobs,
)
from .secret_world import (
    AWS_PLACES,
    DAY,
    NODES,
    NOW,
    REDIS_PLACES,
    SCENARIOS,
    START,
    T0,
    Scenario,
    World,
    plant,
)


@pytest.fixture
def frozen_sandbox() -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=NOW)) as exchange:
        yield exchange


@pytest.fixture
def restore_secret_env() -> Iterator[None]:
    """The product exports `SEAMLESS_SECRET_*` variables into this process: drop the new
    ones afterwards, so no planted DSN outlives the test in the environment."""
    before = set(os.environ)
    yield
    for name in set(os.environ) - before:
        if name.startswith("SEAMLESS_SECRET_"):
            del os.environ[name]


def _cli(world: World, config: Path, *args: str) -> Blob:
    proc = subprocess.run(
        [sys.executable, "-m", "seamless_assets.cli", "--config", str(config), *args],
        cwd=world.tmp,
        env=world.process_env(),
        capture_output=True,
        timeout=600,
    )
    where = f"output of `seamless {' '.join(args)}` (exit {proc.returncode})"
    return Blob(where, proc.stdout + b"\n" + proc.stderr)


def _in_process(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, Blob]:
    code = main(argv)
    out, err = capfd.readouterr()
    return code, Blob(f"output of in-process `seamless {' '.join(argv[2:])}`", (out + err).encode())


def _serialized(where: str, values: list[Any]) -> Iterator[Blob]:
    for value in values:
        try:
            text = dg.serialize_value(value)
        except Exception:  # not a serdes value: its repr holds its fields
            text = repr(value)
        yield Blob(where, text.encode())


def _sensor_tick(world: World, config_path: Path, name: str) -> list[Blob]:
    config = load_config(config_path)
    defs = build_definitions(config, clock=lambda: NOW)
    instance = dg.DagsterInstance.get()
    with dg.build_sensor_context(
        instance=instance, resources=defs.resources, definitions=defs
    ) as context:
        result = defs.resolve_sensor_def(name)(context)
    assert isinstance(result, dg.SensorResult)
    return [
        *_serialized(f"{name} asset events", list(result.asset_events)),
        *_serialized(f"{name} run requests", list(result.run_requests or [])),
        Blob(f"{name} cursor", (result.cursor or "").encode()),
    ]


def run_paths(world: World, capfd: pytest.CaptureFixture[str]) -> list[Blob]:
    """Run the scenario's paths; what they printed and the in-process events."""
    main_config = world.write_config("seamless")
    written: list[Blob] = []
    days = ("--start", "2024-01-01", "--end", "2024-01-03")
    backfill = _cli(world, main_config, "backfill", *NODES, *days)
    assert b"success" in backfill.data, backfill.data.decode()[-3000:]
    written.append(backfill)

    with SeamlessReader.from_config(main_config) as reader:
        frame, meta = reader.fetch(
            NODES[0], NOW - 3 * 3600, NOW, ComputeContext("w-live", "live", max_lag=3 * DAY)
        )
        assert len(frame) > 0, meta.downgrade_reason
        written.append(Blob("live read echo", repr(meta).encode()))
    if not world.scenario.full:
        return written

    argv = ["--config", str(main_config)]
    for command in (["snapshot"], ["coverage", NODES[0]], ["verify"]):
        code, blob = _in_process([*argv, *command], capfd)
        assert code == 0, blob.data.decode()[-3000:]
        written.append(blob)
    config = load_config(main_config)
    committed = open_artifacts(config).latest_snapshot(config.node(NODES[0]))
    assert committed is not None
    with SeamlessReader.from_config(main_config) as reader:  # pinned to the committed as_of
        frame, meta = reader.fetch(
            NODES[0],
            T0,
            T0 + 2 * DAY,
            ComputeContext("w-backtest", "backtest", as_of=committed.as_of_s),
        )
        assert len(frame) == 2 * 1440
        written.append(Blob("backtest read echo", repr(meta).encode()))

    # doctor with Redis down: it names the address, never the DSN.
    doctor = world.write_config("doctor", redis_port=free_port())
    code, blob = _in_process(["--config", str(doctor), "doctor"], capfd)
    assert code == 1 and "Redis" in blob.data.decode() and "UNREACHABLE" in blob.data.decode()
    written.append(blob)

    for name in ("seamless_as_of_sensor", "seamless_gap_repair_sensor"):
        written += _sensor_tick(world, main_config, name)

    # A run failing on a dead exchange (QuestDB up): the error and traceback are written.
    down = world.write_config("exchange_down", exchange_url=f"http://127.0.0.1:{free_port()}")
    failed = _cli(world, down, "backfill", NODES[0], "--refetch", *days)
    assert b"FAILURE" in failed.data, failed.data.decode()[-3000:]
    written.append(failed)

    # A run failing on a dead ILP endpoint (PG wire up), in process: its Dagster events.
    ilp_down = load_config(world.write_config("ilp_down", ilp_port=free_port()))
    node = ilp_down.node(NODES[1])
    result = run_backfill(ilp_down, [node], START, START.replace(day=2), refetch_stored=True)
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure]
    assert failure and "ILP" in str(failure[0].step_failure_data.error)
    written += _serialized(f"events of in-process run {result.run_id}", list(result.all_events))
    out, err = capfd.readouterr()
    written.append(Blob("this process's stdout/stderr", (out + err).encode()))
    return written


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_no_planted_secret_is_written_anywhere(
    scenario: Scenario,
    tmp_path: Path,
    frozen_sandbox: SandboxExchange,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    restore_secret_env: None,
) -> None:
    for service, addr in (("questdb", QUESTDB_PG_ADDR), ("s3", S3_ADDR), ("redis", REDIS_ADDR)):
        require_service(service, addr)
    caplog.set_level(logging.INFO)
    secrets = plant(scenario)
    qdb_passwords = [secrets["seamless.hot_store.questdb_dsn"].value]
    redis_passwords = [secrets[p].value for p in REDIS_PLACES if p in secrets]
    (tmp_path / "redis").mkdir()
    with (
        private_redis(tmp_path / "redis", redis_passwords) as redis_port,
        PgPasswordProxy(
            QUESTDB_PG_ADDR, urlsplit(QUESTDB_DSN).password or "", qdb_passwords
        ) as proxy,
    ):
        world = World(
            scenario, tmp_path, frozen_sandbox.url, proxy.port, redis_port, secrets, monkeypatch
        )
        world.home.mkdir()
        shutil.copy(PROJECT_DAGSTER_YAML, world.home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(world.home))
        monkeypatch.delenv("SEAMLESS_DATA_DIR", raising=False)
        for place in AWS_PLACES:
            world.setenv(place, secrets[place].value)
        import boto3
        import redis

        s3 = boto3.client(
            "s3",
            endpoint_url=S3_ENDPOINT,
            region_name="us-east-1",
            aws_access_key_id=secrets["AWS_ACCESS_KEY_ID"].value,
            aws_secret_access_key=secrets["AWS_SECRET_ACCESS_KEY"].value,
        )
        s3.create_bucket(Bucket=world.bucket)
        private = redis.Redis(port=redis_port, password=redis_passwords[0])
        try:
            written = run_paths(world, capfd)
            written += [
                Blob(f"log record of {r.name}", r.getMessage().encode()) for r in caplog.records
            ]
            written += list(file_blobs(world.home))
            written += list(file_blobs(world.data))
            written += list(
                s3_blobs(S3_ENDPOINT, world.bucket, *(secrets[p].value for p in AWS_PLACES))
            )
            redis_keys = [k for k in private.scan_iter(count=1000)]
            written += list(redis_blobs(private))
            shared = redis.Redis(host=REDIS_ADDR[0], port=REDIS_ADDR[1])
            written += [  # nothing should go there; a planted secret there is a leak
                Blob(f"shared {b.where}", b.data) for b in redis_blobs(shared)
            ]
            shared.close()
            written += list(questdb_blobs(QUESTDB_DSN, world.prefix))
        finally:
            QuestDBHotStore(QUESTDB_DSN, QUESTDB_ILP, table_prefix=world.prefix).drop_tables()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=world.bucket):
                for item in page.get("Contents", []):
                    s3.delete_object(Bucket=world.bucket, Key=item["Key"])
            s3.delete_bucket(Bucket=world.bucket)
            private.close()

    found = leaks(secrets.values(), written)
    assert found == [], f"{scenario.name}: secrets written at rest:\n" + "\n".join(found)
    # The secrets were used: runs went through the password-protected Redis and logged in
    # to QuestDB with the planted password; segments reached the bucket.
    assert any(k.startswith(b"ccxt:binance") for k in redis_keys), redis_keys
    assert proxy.logins[qdb_passwords[0]] > 0
    assert any(b.where.startswith(f"s3://{world.bucket}/") for b in written)
    # What Dagster stored instead of the DSNs: the names of the variables holding them.
    run_storage = [b for b in written if b.where.startswith(str(world.home))]
    names = (b"SEAMLESS_SECRET_REDIS_DSN", b"SEAMLESS_SECRET_QUESTDB_DSN")
    for name in (*names, b"SEAMLESS_SECRET_QUESTDB_ILP"):
        assert any(name in b.data for b in run_storage), name


def test_the_scanner_finds_each_encoding_of_a_secret() -> None:
    """The control: a secret written plainly, URL-encoded, JSON-escaped or inside base64
    (at every alignment) is found, and a different secret is not."""
    import base64
    import json

    secret, other = Secret.new("a place"), Secret.new("another place")
    copies = {
        "plain": f"x={secret.value};".encode(),
        "url": f"redis://:{secret.url}@h/0".encode(),
        "json": json.dumps({"k": secret.value}).replace("/", "\\/").encode(),
        **{f"b64-{n}": base64.b64encode(b"u" * n + f":{secret.value}".encode()) for n in range(3)},
        "basic-auth": base64.urlsafe_b64encode(f"user:{secret.value}".encode()),
    }
    for name, data in copies.items():
        assert leaks([secret], [Blob(name, data)]), name
        assert leaks([other], [Blob(name, data)]) == [], name


@pytest.mark.parametrize(
    ("key", "where", "fix"),
    [
        (
            "exchanges.binance.ccxt_config",
            ("exchanges", "binance", "ccxt_config", "urls", "api", "public"),
            "headers.Authorization",
        ),
        (
            "seamless.artifact.s3.endpoint_url",
            ("seamless", "artifact", "s3", "endpoint_url"),
            "AWS_",
        ),
    ],
)
def test_a_url_with_credentials_is_refused_at_load_without_echoing_them(
    key: str, where: tuple[str, ...], fix: str
) -> None:
    """ccxt writes request URLs (userinfo included) into its error messages, and doctor
    prints the S3 endpoint: credentials in these URLs would be written with every failure."""
    secret = Secret.new(key)
    raw: dict[str, Any] = {"exchanges": {"binance": {"symbols": ["BTC/USDT"]}}}
    section = raw
    for part in where[:-1]:
        section = section.setdefault(part, {})
    section[where[-1]] = f"http://user:{secret.url}@127.0.0.1:5000/api/v3"
    with pytest.raises(ConfigError) as caught:
        load_config_dict(raw)
    message = str(caught.value)
    assert key in message and "credentials" in message and fix in message
    assert leaks([secret], [Blob("the error", message.encode())]) == []
