"""Node ids, timeframes, asset keys and path slugs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.errors import InvalidNodeId, UnsupportedTimeframe
from seamless_assets.nodes import (
    NodeId,
    Timeframe,
    asset_key_part,
    from_asset_key_part,
    from_path_slug,
    from_readable_symbol,
    path_slug,
    readable_symbol,
)

ASSET_KEY_PART = re.compile(r"^[A-Za-z0-9_]+$")
SLUG = re.compile(r"^[A-Za-z0-9_%-]+$")
TEMPLATE = "exchange={exchange}/symbol={symbol}/timeframe={timeframe}"


def valid_symbol(text: str) -> bool:
    return bool(text) and text == text.strip() and text.isprintable()


symbols = st.text(min_size=1, max_size=24).filter(valid_symbol)
exchanges = st.sampled_from(["binance", "bybit", "okx", "kraken", "binanceusdm", "a", "b1"])
timeframes = st.sampled_from(["1s", "1m", "5m", "1h", "4h", "1d", "3d", "1w"])


# -- node ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_id", "exchange", "symbol", "timeframe"),
    [
        ("ohlcv:binance:BTC/USDT:1m", "binance", "BTC/USDT", "1m"),
        ("ohlcv:bybit:BTC/USDT:USDT:1h", "bybit", "BTC/USDT:USDT", "1h"),
        ("ohlcv:okx:BTC/USD:BTC-240329-50000-C:1d", "okx", "BTC/USD:BTC-240329-50000-C", "1d"),
        ("ohlcv:binance::odd:1m", "binance", ":odd", "1m"),
        ("ohlcv:binance:odd::1m", "binance", "odd:", "1m"),
        ("ohlcv:binance:1000PEPE/USDT:1w", "binance", "1000PEPE/USDT", "1w"),
    ],
)
def test_parse_and_format_round_trip(
    node_id: str, exchange: str, symbol: str, timeframe: str
) -> None:
    node = NodeId.parse(node_id)
    assert (node.exchange, node.symbol, node.timeframe.code) == (exchange, symbol, timeframe)
    assert str(node) == node_id
    assert NodeId.of(exchange, symbol, timeframe) == node
    assert NodeId.of(exchange, symbol, Timeframe.parse(timeframe)) == node
    assert node.interval_s == Timeframe.parse(timeframe).seconds


@given(exchange=exchanges, symbol=symbols, timeframe=timeframes)
def test_any_valid_node_round_trips_through_its_id(
    exchange: str, symbol: str, timeframe: str
) -> None:
    node = NodeId.of(exchange, symbol, timeframe)
    assert NodeId.parse(str(node)) == node


@pytest.mark.parametrize(
    "node_id",
    [
        "",
        "ohlcv",
        "ohlcv:binance:BTC/USDT",
        "binance:BTC/USDT:1m",
        "OHLCV:binance:BTC/USDT:1m",
        "trades:binance:BTC/USDT:1m",
    ],
)
def test_malformed_ids_are_refused_with_an_example(node_id: str) -> None:
    with pytest.raises(InvalidNodeId, match=re.escape("e.g. 'ohlcv:binance:BTC/USDT:1m'")):
        NodeId.parse(node_id)


@pytest.mark.parametrize(
    ("node_id", "example"),
    [
        ("ohlcv::BTC/USDT:1m", "'binance'"),
        ("ohlcv:Binance:BTC/USDT:1m", "'binance'"),
        ("ohlcv:bin_ance:BTC/USDT:1m", "'binance'"),
        ("ohlcv:bin ance:BTC/USDT:1m", "'binance'"),
        ("ohlcv:binance::1m", "'BTC/USDT'"),
        ("ohlcv:binance: BTC/USDT:1m", "'BTC/USDT'"),
        ("ohlcv:binance:BTC/USDT :1m", "'BTC/USDT'"),
        ("ohlcv:binance:BTC\nUSDT:1m", "'BTC/USDT'"),
        ("ohlcv:binance:BTC\x7fUSDT:1m", "'BTC/USDT'"),
        ("ohlcv:binance:BTC\u2028USDT:1m", "'BTC/USDT'"),
        ("ohlcv:binance:BTC\ud800:1m", "'BTC/USDT'"),
    ],
)
def test_bad_exchange_or_symbol_is_refused_with_an_example(node_id: str, example: str) -> None:
    with pytest.raises(InvalidNodeId, match=re.escape(example)):
        NodeId.parse(node_id)


@pytest.mark.parametrize("node_id", [None, 42, b"ohlcv:binance:BTC/USDT:1m"])
def test_non_strings_are_invalid_node_ids(node_id: object) -> None:
    with pytest.raises(InvalidNodeId):
        NodeId.parse(node_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("node_id", ["ohlcv:binance:BTC/USDT:1M", "ohlcv:binance:BTC/USDT:1x"])
def test_a_bad_timeframe_in_an_id_is_an_unsupported_timeframe(node_id: str) -> None:
    with pytest.raises(UnsupportedTimeframe):
        NodeId.parse(node_id)


# -- asset keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_id", "label"),
    [
        ("ohlcv:binance:BTC/USDT:1m", "binance_BTC_USDT_1m"),
        ("ohlcv:binance:ETH/USDT:1m", "binance_ETH_USDT_1m"),
        ("ohlcv:bybit:BTC/USDT:USDT:1h", "bybit_BTC_USDT__USDT_1h"),
        ("ohlcv:okx:BTC/USD:BTC-240329-50000-C:1d", "okx_BTC_USD__BTC___240329___50000___C_1d"),
        ("ohlcv:binance:1000PEPE/USDT:1w", "binance_1000PEPE_USDT_1w"),
        ("ohlcv:binance:BTC_USDT:1m", "binance_BTC____5fUSDT_1m"),
        ("ohlcv:binance:/BTC:1m", "binance_____2fBTC_1m"),
        ("ohlcv:binance:BTC/:1m", "binance_BTC____2f_1m"),
        ("ohlcv:binance:A//B:1m", "binance_A____2f____2fB_1m"),
        ("ohlcv:binance:€/USDT:1m", "binance_____e2____82____ac____2fUSDT_1m"),
    ],
)
def test_asset_key_of_known_nodes(node_id: str, label: str) -> None:
    node = NodeId.parse(node_id)
    assert node.label == label
    assert node.asset_key_path() == ["ohlcv", label]
    assert NodeId.from_asset_key_path(node.asset_key_path()) == node
    assert NodeId.from_asset_key_path(tuple(node.asset_key_path())) == node


@given(exchange=exchanges, symbol=symbols, timeframe=timeframes)
def test_asset_keys_are_valid_and_reversible(exchange: str, symbol: str, timeframe: str) -> None:
    node = NodeId.of(exchange, symbol, timeframe)
    path = node.asset_key_path()
    assert all(ASSET_KEY_PART.match(part) for part in path), path
    assert NodeId.from_asset_key_path(path) == node
    assert from_readable_symbol(readable_symbol(symbol)) == symbol
    assert from_asset_key_part(asset_key_part(symbol)) == symbol


# Symbols built from the characters that collide in naive schemes.
tricky_symbols = st.text(alphabet="AB1_/:-€ ", min_size=1, max_size=8).filter(valid_symbol)


@settings(max_examples=300)
@given(
    a=st.tuples(exchanges, st.one_of(symbols, tricky_symbols), timeframes),
    b=st.tuples(exchanges, st.one_of(symbols, tricky_symbols), timeframes),
)
def test_distinct_nodes_get_distinct_asset_keys_and_op_names(
    a: tuple[str, str, str], b: tuple[str, str, str]
) -> None:
    node_a, node_b = NodeId.of(*a), NodeId.of(*b)
    if node_a == node_b:
        return
    assert node_a.asset_key_path() != node_b.asset_key_path()
    # Dagster derives op names by joining the parts with `__`: those must differ too.
    assert "__".join(node_a.asset_key_path()) != "__".join(node_b.asset_key_path())


@settings(max_examples=500)
@given(a=st.one_of(symbols, tricky_symbols), b=st.one_of(symbols, tricky_symbols))
def test_distinct_symbols_get_distinct_key_parts(a: str, b: str) -> None:
    if a != b:
        assert readable_symbol(a) != readable_symbol(b)
        assert asset_key_part(a) != asset_key_part(b)


def test_symbols_that_differ_only_in_separators_stay_apart() -> None:
    symbols_ = ["BTC/USDT", "BTC_USDT", "BTC:USDT", "BTC-USDT", "BTC//USDT", "BTC/:USDT"]
    symbols_ += ["BTC::USDT", "BTC:/USDT", "BTC/-USDT", "BTC____2fUSDT", "BTC___USDT"]
    labels = {NodeId.of("binance", s, "1m").label for s in symbols_}
    assert len(labels) == len(symbols_)
    assert all(ASSET_KEY_PART.match(label) for label in labels)


@pytest.mark.parametrize(
    "path",
    [
        [],
        ["ohlcv"],
        ["ohlcv", "binance_BTC_USDT_1m", "extra"],
        ["ohlcv", "binance", "BTC_2fUSDT", "1m"],  # the keys before issue 10
        ["trades", "binance_BTC_USDT_1m"],
        ["ohlcv", "Binance_BTC_USDT_1m"],
        ["ohlcv", "binance__1m"],
        ["ohlcv", "binance_1m"],
        ["ohlcv", "binanceBTCUSDT1m"],
        ["ohlcv", "binance_BTC_USDT_1M"],
        ["ohlcv", "binance_BTC_USDT_"],
        ["ohlcv", "binance_BTC_____USDT_1m"],  # a run of 5 means nothing
        ["ohlcv", "binance_BTC____2FUSDT_1m"],  # upper-case hex: not what we produce
        ["ohlcv", "binance_BTC____2_1m"],
        ["ohlcv", "binance_BTC____zzUSDT_1m"],
        ["ohlcv", "binance_____41BC_1m"],  # `A` escaped although it never is
        ["ohlcv", "binance_BTC____2fUSDT_1m"],  # `/` between letters has its short form
        ["ohlcv", "binance_____ff_1m"],  # not UTF-8
        ["ohlcv", "binance_BTC-USDT_1m"],
    ],
)
def test_foreign_asset_keys_are_refused(path: list[str]) -> None:
    with pytest.raises((InvalidNodeId, UnsupportedTimeframe)):
        NodeId.from_asset_key_path(path)


def test_old_escaping_stays_for_stored_names() -> None:
    """The hot store keys rows by `asset_key_part(node_id)`: its spelling must not move."""
    assert asset_key_part("ohlcv:binance:BTC/USDT:1m") == "ohlcv_3abinance_3aBTC_2fUSDT_3a1m"
    assert from_asset_key_part("BTC_2fUSDT") == "BTC/USDT"


# -- path slugs ----------------------------------------------------------------------------


@given(text=st.text(min_size=1))
def test_path_slugs_are_single_safe_segments_and_reversible(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates cannot be stored anywhere
        return
    slug = path_slug(text)
    assert slug not in ("", ".", "..")
    assert "/" not in slug and "\\" not in slug and "." not in slug
    assert SLUG.match(slug), slug
    assert from_path_slug(slug) == text


@given(a=st.text(min_size=1), b=st.text(min_size=1))
def test_distinct_texts_get_distinct_slugs(a: str, b: str) -> None:
    if a != b:
        assert path_slug(a) != path_slug(b)


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("BTC/USDT", "BTC%2fUSDT"),
        ("BTC/USDT:USDT", "BTC%2fUSDT%3aUSDT"),
        ("..", "%2e%2e"),
        (".", "%2e"),
        ("a%b", "a%25b"),
        ("a\\b", "a%5cb"),
        ("1000PEPE_USDT-x", "1000PEPE_USDT-x"),
    ],
)
def test_known_slugs(text: str, slug: str) -> None:
    assert path_slug(text) == slug
    assert from_path_slug(slug) == text


@pytest.mark.parametrize("slug", ["", "BTC%2FUSDT", "%41", "a%2", "a%zz", "a/b", "a.b"])
def test_foreign_slugs_are_refused(slug: str) -> None:
    with pytest.raises(ValueError):
        from_path_slug(slug)


def test_empty_texts_have_no_slug_or_key_part() -> None:
    with pytest.raises(ValueError):
        path_slug("")
    with pytest.raises(ValueError):
        asset_key_part("")


@pytest.mark.parametrize(
    ("symbol", "prefix"),
    [
        ("BTC/USDT", "exchange=binance/symbol=BTC%2fUSDT/timeframe=1h"),
        ("../../etc", "exchange=binance/symbol=%2e%2e%2f%2e%2e%2fetc/timeframe=1h"),
    ],
)
def test_partition_prefix_keeps_hostile_symbols_in_one_segment(symbol: str, prefix: str) -> None:
    node = NodeId.of("binance", symbol, "1h")
    assert node.partition_prefix(TEMPLATE) == prefix
    assert len(prefix.split("/")) == 3


# -- timeframes ----------------------------------------------------------------------------

CCXT_TIMEFRAMES = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14_400,
    "6h": 21_600,
    "8h": 28_800,
    "12h": 43_200,
    "1d": 86_400,
    "3d": 259_200,
    "1w": 604_800,
}


@pytest.mark.parametrize(("code", "seconds"), CCXT_TIMEFRAMES.items())
def test_timeframe_seconds(code: str, seconds: int) -> None:
    timeframe = Timeframe.parse(code)
    assert timeframe.seconds == seconds
    assert timeframe.code == code == str(timeframe)


def test_timeframes_order_by_length() -> None:
    parsed = [Timeframe.parse(code) for code in reversed(CCXT_TIMEFRAMES)]
    assert [t.code for t in sorted(parsed)] == list(CCXT_TIMEFRAMES)


@pytest.mark.parametrize("code", ["1M", "3M", "1y", "1Y"])
def test_calendar_timeframes_are_refused_clearly(code: str) -> None:
    with pytest.raises(UnsupportedTimeframe, match="no fixed length") as info:
        Timeframe.parse(code)
    assert repr(code) in str(info.value) and "'1w'" in str(info.value)


@pytest.mark.parametrize("code", ["2w", "8d", "200h"])
def test_timeframes_longer_than_a_week_are_refused(code: str) -> None:
    with pytest.raises(UnsupportedTimeframe, match="1w"):
        Timeframe.parse(code)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "m",
        "0m",
        "01m",
        "1",
        "15",
        "1 m",
        " 1m",
        "1m ",
        "1m\n",
        "1min",
        "1H",
        "-1m",
        "1.5h",
        "1ms",
    ],
)
def test_garbage_timeframes_are_refused(code: str) -> None:
    with pytest.raises(UnsupportedTimeframe, match=re.escape(repr(code))):
        Timeframe.parse(code)


@pytest.mark.parametrize("code", [None, 60, 1.0])
def test_non_string_timeframes_are_refused(code: object) -> None:
    with pytest.raises(UnsupportedTimeframe):
        Timeframe.parse(code)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", list(CCXT_TIMEFRAMES))
def test_timeframe_grid_origin(code: str) -> None:
    """Weekly bars open on Mondays (the epoch was a Thursday); everything else on the epoch."""
    timeframe = Timeframe.parse(code)
    assert timeframe.origin_s == (345_600 if code == "1w" else 0)
    if code == "1w":  # 2024-01-01 00:00 UTC, a Monday, opens a weekly bar
        assert (1_704_067_200 - timeframe.origin_s) % timeframe.seconds == 0


def test_timeframe_origin_is_derived_and_keeps_equality_and_hashing() -> None:
    week = Timeframe.parse("1w")
    assert week == Timeframe(604_800, "1w") and week.origin_s == Timeframe(604_800, "1w").origin_s
    assert hash(week) == hash(Timeframe(604_800, "1w"))
    assert (
        Timeframe.parse("1d") < week and NodeId.parse("ohlcv:binance:BTC/USDT:1w").timeframe == week
    )
    with pytest.raises(TypeError):
        Timeframe(604_800, "1w", 0)  # type: ignore[call-arg]  # derived, never passed
