"""The data-plane scenario on the production configuration: QuestDB + S3 + Redis.

Same sandbox bars through both configurations must publish byte-identical artifacts.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from resources.hot_store.questdb import QuestDBHotStore
from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import load_config
from seamless_assets.core.frame import Range
from seamless_assets.errors import StoreError
from seamless_assets.runtime import check_services, resources_from_config
from tests.services import (
    QUESTDB_DSN,
    QUESTDB_ILP,
    QUESTDB_PG_ADDR,
    REDIS_ADDR,
    REDIS_DSN,
    S3_ADDR,
    S3_ENDPOINT,
    require_service,
)

from .conftest import DAY, tree_digest, write_config

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
DAYS = 10


@pytest.fixture
def production(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    for name, addr in (("questdb", QUESTDB_PG_ADDR), ("redis", REDIS_ADDR), ("s3", S3_ADDR)):
        require_service(name, addr)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    tag = uuid.uuid4().hex[:10]
    bucket = f"seamless-{tag}"
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    (tmp_path / "prod").mkdir()
    path = write_config(tmp_path / "prod", sandbox.url)
    raw = yaml.safe_load(path.read_text())
    raw["seamless"]["hot_store"] = {
        "backend": "questdb",
        "questdb_dsn": QUESTDB_DSN,
        "questdb_ilp": QUESTDB_ILP,
        "questdb_table_prefix": f"t{tag}_",
    }
    raw["seamless"]["artifact"] = {
        "object_store_uri": f"s3://{bucket}/lake",
        "s3": {"endpoint_url": S3_ENDPOINT},
    }
    raw["seamless"]["rate_limit"]["redis_dsn"] = REDIS_DSN
    raw["exchanges"]["binance"]["account"] = tag  # a limiter key of its own
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    yield config, s3, bucket
    QuestDBHotStore(QUESTDB_DSN, QUESTDB_ILP, table_prefix=f"t{tag}_").drop_tables()


def _s3_digest(s3: Any, bucket: str) -> dict[str, str]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/"):
        for item in page.get("Contents", []):
            if item["Key"].startswith("lake/."):
                continue  # the store's conditional-write probe, not an artifact
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"].removeprefix("lake/")] = hashlib.sha256(body).hexdigest()
    return out


def test_production_backfill_matches_embedded_byte_for_byte(
    production: Any, sandbox: SandboxExchange, tmp_path: Path
) -> None:
    config, s3, bucket = production
    check_services(config)
    node = config.node("ohlcv:binance:BTC/USDT:1m")
    end = datetime.fromtimestamp(T0 + DAYS * DAY, tz=UTC)

    result = run_backfill(config, [node], START, end)
    assert result.success
    hot = resources_from_config(config)["hot_store"].open()  # type: ignore[attr-defined]
    stored = hot.read_range(str(node), Range(T0, T0 + DAYS * DAY))
    assert len(stored) == DAYS * 1440 and stored["ts"].is_unique
    published = _s3_digest(s3, bucket)
    assert sum(k.endswith("manifest.json") for k in published) == DAYS
    assert resources_from_config(config)["artifacts"].open().verify_all() == []  # type: ignore[attr-defined]

    sandbox.reset()
    assert run_backfill(config, [node], START, end).success
    assert sandbox.stats()["requests_total"] == 0
    assert _s3_digest(s3, bucket) == published

    embedded = load_config(write_config(tmp_path, sandbox.url))
    assert run_backfill(embedded, [embedded.node(str(node))], START, end).success
    assert tree_digest(embedded.data_dir / "artifacts") == published


def test_start_up_names_the_missing_service_and_how_to_start_it(tmp_path: Path) -> None:
    raw = {
        "seamless": {
            "data_dir": str(tmp_path),
            "hot_store": {"backend": "questdb", "questdb_dsn": "postgresql://a:b@127.0.0.1:1/qdb"},
            "rate_limit": {"redis_dsn": "redis://127.0.0.1:2/0"},
        },
        "exchanges": {"binance": {"symbols": ["BTC/USDT"]}},
    }
    path = tmp_path / "seamless.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(StoreError) as error:
        check_services(load_config(path))
    message = str(error.value)
    assert "QuestDB not reachable at 127.0.0.1:1" in message
    assert "Redis not reachable at 127.0.0.1:2" in message
    assert "scripts/services.sh start" in message
