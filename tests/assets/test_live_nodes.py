"""How a node is marked live: `domains.live.nodes`, validated against the catalog; only
those nodes get the live-edge sensor and the live_staleness check."""

from __future__ import annotations

from typing import Any

import pytest

from seamless_assets.config import SeamlessConfig, load_config_dict
from seamless_assets.definitions import build_definitions
from seamless_assets.errors import ConfigError
from seamless_assets.governance_checks import LIVE_STALENESS
from seamless_assets.nodes import NodeId

BTC_1M = "ohlcv:binance:BTC/USDT:1m"
ETH_1H = "ohlcv:binance:ETH/USDT:1h"


def _config(domains: dict[str, Any]) -> SeamlessConfig:
    raw = {
        "exchanges": {"binance": {"symbols": ["BTC/USDT", "ETH/USDT"], "timeframes": ["1m", "1h"]}},
        "domains": domains,
    }
    return load_config_dict(raw, "test.yaml")


@pytest.mark.parametrize(
    ("listed", "live"),
    [
        ([], set()),
        ([BTC_1M], {BTC_1M}),
        ([ETH_1H], {ETH_1H}),
        ([BTC_1M, ETH_1H], {BTC_1M, ETH_1H}),
    ],
)
def test_only_listed_nodes_are_served_live_and_judged_stale(
    listed: list[str], live: set[str]
) -> None:
    config = _config({"live": {"max_lag_sec": 120, "nodes": listed}})
    assert {str(n) for n in config.live_nodes} == live
    defs = build_definitions(config)
    graph = defs.resolve_asset_graph()
    stale = {
        str(NodeId.from_asset_key_path(k.asset_key.path))
        for k in graph.asset_check_keys
        if k.name == LIVE_STALENESS
    }
    assert stale == live
    sensor = defs.resolve_sensor_def("seamless_live_edge_sensor")
    assert sensor.minimum_interval_seconds == (60 if BTC_1M in live else 3600 if live else 60)


@pytest.mark.parametrize(
    ("domains", "key", "says"),
    [
        ({"live": {"nodes": ["ohlcv:binance:BTC/USDT:5m"]}}, "domains.live.nodes[0]", "not a node"),
        (
            {"live": {"nodes": ["ohlcv:binance:BTC/USDT:1m", "nonsense"]}},
            "domains.live.nodes[1]",
            "",
        ),
        (
            {"research": {"require_as_of": True, "nodes": [BTC_1M]}},
            "domains.research.nodes",
            "only the live",
        ),
    ],
)
def test_a_bad_live_node_list_names_the_key(domains: dict[str, Any], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(domains)
    assert key in str(info.value) and says in str(info.value)
