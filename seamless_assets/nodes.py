"""Node identities `ohlcv:{exchange}:{symbol}:{timeframe}`, timeframes and asset keys."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import InvalidNodeId, SeamlessError, UnsupportedTimeframe

NODE_PREFIX = "ohlcv"
#: Kinds of series a node id starts with, and the price ccxt's `fetch_ohlcv` is asked for
#: (its `params.price`): exchange trades, or the mark price of a contract.
NODE_KINDS: dict[str, str | None] = {"ohlcv": None, "mark": "mark"}
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_TIMEFRAME = re.compile(r"^([1-9][0-9]*)([smhdwMyY])$")
_CALENDAR_UNITS = ("M", "y", "Y")  # months and years: no fixed length
_MAX_INTERVAL_S = _UNIT_SECONDS["w"]
_EXCHANGE_ID = re.compile(r"^[a-z0-9]+$")  # every ccxt id; no `_`, so op names stay unique
WEEK_ORIGIN_S = 4 * _UNIT_SECONDS["d"]
"""Where `1w` bars open: Monday 00:00 UTC, i.e. `ts % 604800 == 345600`.

The epoch (1970-01-01) was a Thursday, so weeks counted from it would open on Thursdays;
Binance, Bybit, OKX and the other ccxt exchanges open weekly candles on Mondays (ISO
weeks), 4 days after an epoch-aligned grid point.
"""


def grid_origin(code: str) -> int:
    """Offset of a timeframe's bar grid from the epoch: bars open at `origin + k * seconds`.

    Exchanges put every timeframe shorter than a week on the epoch grid (origin 0; those up
    to `1d` divide a day, so they open on UTC day boundaries); only `1w` is shifted, to
    Monday 00:00 UTC (`WEEK_ORIGIN_S`).
    """
    return WEEK_ORIGIN_S if code == "1w" else 0


@dataclass(frozen=True, order=True)
class Timeframe:
    """A ccxt timeframe with a fixed length in seconds (`1s` … `1w`).

    Bars open on the grid `origin_s + k * seconds` (epoch seconds, integer `k`).
    `origin_s` is derived from the code (`grid_origin`): 0 for every timeframe except `1w`,
    whose bars open on Mondays (`345600`, the epoch being a Thursday). It takes no part in
    equality or ordering, which stay those of `(seconds, code)`.
    """

    seconds: int
    code: str
    origin_s: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin_s", grid_origin(self.code))

    @classmethod
    def parse(cls, code: str) -> Timeframe:
        match = _TIMEFRAME.fullmatch(code) if isinstance(code, str) else None
        if not match:
            raise UnsupportedTimeframe(
                f"timeframe {code!r} is not a ccxt timeframe; use e.g. '1m', '5m', '1h', '1d', '1w'"
            )
        count, unit = int(match.group(1)), match.group(2)
        if unit in _CALENDAR_UNITS:
            raise UnsupportedTimeframe(
                f"timeframe {code!r} has no fixed length (calendar months/years vary), so it "
                "cannot be partitioned or gap-checked by interval; use '1w' or '1d' and resample"
            )
        seconds = count * _UNIT_SECONDS[unit]
        if seconds > _MAX_INTERVAL_S:
            raise UnsupportedTimeframe(f"timeframe {code!r} is longer than 1w; use '1w' or shorter")
        if unit == "w" and count != 1:
            raise UnsupportedTimeframe(f"timeframe {code!r}: only '1w' is supported among weeks")
        return cls(seconds=seconds, code=code)

    def __str__(self) -> str:
        return self.code


def _escape(text: str, safe: str, marker: str) -> str:
    """Reversible escape: ASCII alnum and `safe` stay, any other UTF-8 byte becomes marker+hex.

    The marker is never in `safe`, so it is escaped itself and decoding is unambiguous.
    """
    out = []
    for char in text:
        if char.isascii() and (char.isalnum() or char in safe):
            out.append(char)
        else:
            out.extend(f"{marker}{byte:02x}" for byte in char.encode())
    return "".join(out)


_HEX = frozenset("0123456789abcdef")


def _unescape(text: str, safe: str, marker: str) -> str:
    """Inverse of `_escape`; raises `ValueError` unless `text` is exactly what it produces."""
    raw = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == marker:
            digits = text[i + 1 : i + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError(f"{text!r}: {marker!r} at {i} is not followed by two hex digits")
            raw.append(int(digits, 16))
            i += 3
        elif char.isascii() and (char.isalnum() or char in safe):
            raw.append(ord(char))
            i += 1
        else:
            raise ValueError(f"{text!r}: character {char!r} at {i} is never produced by escaping")
    try:
        decoded = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{text!r} does not decode to UTF-8: {exc.reason}") from None
    if _escape(decoded, safe, marker) != text:  # e.g. `_41` for `A`: one text, one encoding
        raise ValueError(f"{text!r} is not the canonical encoding of {decoded!r}")
    return decoded


def asset_key_part(text: str) -> str:
    """Encode text into `^[A-Za-z0-9_]+$`, reversibly: `/` -> `_2f`.

    The stored form of node ids, gap reasons and flags in the hot store (a change would
    orphan stored rows); asset keys use the readable `readable_symbol` instead.
    """
    if not text:
        raise ValueError("an asset key part cannot be empty")
    return _escape(text, safe="", marker="_")


def from_asset_key_part(part: str) -> str:
    """Inverse of `asset_key_part`; `ValueError` for anything it would not produce."""
    if not part:
        raise ValueError("an asset key part cannot be empty")
    return _unescape(part, safe="", marker="_")


_SHORT = {"/": "_", ":": "__", "-": "___"}  # between two ASCII letters/digits only
_SHORT_BACK = {len(v): k for k, v in _SHORT.items()}
_BYTE_RUN = 4  # `____` + two lower-case hex digits: any other UTF-8 byte


def _plain(char: str) -> bool:
    return char.isascii() and char.isalnum()


def readable_symbol(symbol: str) -> str:
    """A symbol as `[A-Za-z0-9_]`, readable and reversible: `BTC/USDT:USDT` -> `BTC_USDT__USDT`.

    Letters and digits stay; `/`, `:` and `-` between two letters/digits become a run of 1,
    2 and 3 underscores; every other character (and those three elsewhere) becomes `____`
    plus the hex of each UTF-8 byte (`_` -> `____5f`). So the text never starts or ends with
    a short run, runs decode by their length, and `from_readable_symbol` inverts it.
    """
    if not symbol:
        raise ValueError("a symbol cannot be empty")
    out = []
    for i, char in enumerate(symbol):
        if _plain(char):
            out.append(char)
        elif (
            char in _SHORT
            and 0 < i < len(symbol) - 1
            and _plain(symbol[i - 1])
            and _plain(symbol[i + 1])
        ):
            out.append(_SHORT[char])
        else:
            out.extend(f"{'_' * _BYTE_RUN}{byte:02x}" for byte in char.encode())
    return "".join(out)


def from_readable_symbol(text: str) -> str:
    """Inverse of `readable_symbol`; `ValueError` for anything it would not produce."""
    raw = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if _plain(char):
            raw.append(ord(char))
            i += 1
            continue
        if char != "_":
            raise ValueError(f"{text!r}: character {char!r} at {i} is never produced")
        run = len(text[i:]) - len(text[i:].lstrip("_"))
        if run == _BYTE_RUN:
            digits = text[i + run : i + run + 2]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError(f"{text!r}: '____' at {i} is not followed by two hex digits")
            raw.append(int(digits, 16))
            i += run + 2
        elif run in _SHORT_BACK:
            raw.extend(_SHORT_BACK[run].encode())
            i += run
        else:
            raise ValueError(f"{text!r}: a run of {run} underscores at {i} means nothing")
    try:
        decoded = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{text!r} does not decode to UTF-8: {exc.reason}") from None
    if not decoded or readable_symbol(decoded) != text:  # one symbol, one spelling
        raise ValueError(f"{text!r} is not the canonical spelling of {decoded!r}")
    return decoded


def path_slug(text: str) -> str:
    """Hive-style percent-encoding for path segments: only `[A-Za-z0-9_-]` stays literal.

    `.`, `/`, `\\` and `%` are always escaped, so a slug can never be empty, `.` or `..`,
    or contain a separator.
    """
    if not text:
        raise ValueError("a path slug cannot be empty")
    return _escape(text, safe="_-", marker="%")


def from_path_slug(slug: str) -> str:
    """Inverse of `path_slug`; `ValueError` for anything it would not produce."""
    if not slug:
        raise ValueError("a path slug cannot be empty")
    return _unescape(slug, safe="_-", marker="%")


def check_exchange_id(exchange: str) -> str:
    """An exchange id as a node can carry it: a lower-case ccxt id."""
    if not isinstance(exchange, str) or not _EXCHANGE_ID.fullmatch(exchange):
        raise InvalidNodeId(
            f"exchange id {exchange!r} must be a lower-case ccxt id such as 'binance'"
        )
    return exchange


def check_symbol(symbol: str) -> str:
    """A symbol as a node can carry it: non-empty, printable, no surrounding whitespace."""
    if (
        not isinstance(symbol, str)
        or not symbol
        or symbol != symbol.strip()
        or not symbol.isprintable()
    ):
        raise InvalidNodeId(
            f"symbol {symbol!r} must be a non-empty, printable ccxt symbol without surrounding "
            "whitespace, like 'BTC/USDT' or 'BTC/USDT:USDT'"
        )
    return symbol


MARKET_KINDS = ("spot", "linear", "inverse")


def market_kind(symbol: str) -> str:
    """The kind of market a ccxt unified symbol names: `BTC/USDT` spot, `BTC/USDT:USDT`
    linear (settled in the quote: USDⓈ-M perpetuals and futures), `BTC/USD:BTC` inverse
    (settled in the base). An expiry suffix (`BTC/USDT:USDT-250328`) keeps the kind."""
    pair, colon, settle_part = symbol.partition(":")
    if not colon:
        return "spot"
    base, _, quote = pair.partition("/")
    settle = settle_part.split("-", 1)[0]
    if settle == quote:
        return "linear"
    if settle == base:
        return "inverse"
    raise InvalidNodeId(
        f"symbol {symbol!r} settles in {settle!r}, neither its base nor its quote; a "
        "contract symbol looks like 'BTC/USDT:USDT' (linear) or 'BTC/USD:BTC' (inverse)"
    )


@dataclass(frozen=True)
class NodeId:
    """One series: `{kind}:{exchange}:{symbol}:{timeframe}`, kind `ohlcv` (traded bars) or
    `mark` (a contract's mark-price bars, e.g. `mark:binance:BTC/USDT:USDT:1m`); the symbol
    may contain `:`."""

    exchange: str
    symbol: str
    timeframe: Timeframe
    kind: str = NODE_PREFIX

    @classmethod
    def parse(cls, node_id: str) -> NodeId:
        parts = node_id.split(":") if isinstance(node_id, str) else []
        if len(parts) < 4 or parts[0] not in NODE_KINDS:
            raise InvalidNodeId(
                f"node id {node_id!r} must look like '{{kind}}:{{exchange}}:{{symbol}}:"
                "{timeframe}' with kind ohlcv or mark, e.g. 'ohlcv:binance:BTC/USDT:1m' or "
                "'mark:binance:BTC/USDT:USDT:1m'"
            )
        exchange, symbol, timeframe = parts[1], ":".join(parts[2:-1]), parts[-1]
        return cls.of(exchange, symbol, timeframe, parts[0])

    @classmethod
    def of(
        cls, exchange: str, symbol: str, timeframe: str | Timeframe, kind: str = NODE_PREFIX
    ) -> NodeId:
        check_exchange_id(exchange)
        check_symbol(symbol)
        if kind not in NODE_KINDS:
            raise InvalidNodeId(f"node kind {kind!r} is not one of {sorted(NODE_KINDS)}")
        if kind == "mark" and market_kind(symbol) == "spot":
            raise InvalidNodeId(
                f"{symbol!r} is a spot market, which has no mark price; mark nodes are of "
                f"contracts, e.g. 'mark:{exchange}:BTC/USDT:USDT:1m'"
            )
        tf = timeframe if isinstance(timeframe, Timeframe) else Timeframe.parse(timeframe)
        return cls(exchange=exchange, symbol=symbol, timeframe=tf, kind=kind)

    @property
    def interval_s(self) -> int:
        return self.timeframe.seconds

    @property
    def price(self) -> str | None:
        """ccxt's `fetch_ohlcv` `price` param for this kind (None: traded bars)."""
        return NODE_KINDS[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}:{self.exchange}:{self.symbol}:{self.timeframe.code}"

    @property
    def label(self) -> str:
        """The node's name in the UI: `{exchange}_{readable symbol}_{timeframe}`."""
        return f"{self.exchange}_{readable_symbol(self.symbol)}_{self.timeframe.code}"

    def asset_key_path(self) -> list[str]:
        """Asset key parts: `[kind, label]`, e.g. `["ohlcv", "binance_BTC_USDT_1m"]` or
        `["mark", "binance_BTC_USDT__USDT_1m"]`.

        Dagster's graph names a node by the last part, so it carries exchange, symbol and
        timeframe. Exchange ids and timeframes hold no `_`, and a readable symbol neither
        starts nor ends with `_` once its first and last characters are letters/digits
        (otherwise it starts/ends with a `____hh` byte, whose hex ends it), so the label
        splits back at its first and last `_`.
        """
        return [self.kind, self.label]

    @classmethod
    def from_asset_key_path(cls, path: Sequence[str]) -> NodeId:
        """Inverse of `asset_key_path`; `InvalidNodeId` for any other key."""
        parts = list(path)
        example = "['ohlcv', 'binance_BTC_USDT_1m']"
        if len(parts) != 2 or parts[0] not in NODE_KINDS or not isinstance(parts[1], str):
            raise InvalidNodeId(f"asset key {parts} is not an ohlcv node key like {example}")
        exchange, _, rest = parts[1].partition("_")
        symbol, _, timeframe = rest.rpartition("_")
        try:
            node = cls.of(exchange, from_readable_symbol(symbol), timeframe, parts[0])
        except (ValueError, SeamlessError) as exc:
            raise InvalidNodeId(
                f"asset key {parts} is not an ohlcv node key like {example}: {exc}"
            ) from None
        if node.asset_key_path() != parts:
            raise InvalidNodeId(f"asset key {parts} is not the canonical key of {node}")
        return node

    def partition_prefix(self, template: str) -> str:
        """The artifact prefix for this node, from the blueprint's partition template;
        a kind other than `ohlcv` goes first (`kind=mark/exchange=…`), so the series of one
        market never share a prefix and `ohlcv` segments keep the template's own path."""
        prefix = template.format(
            exchange=path_slug(self.exchange),
            symbol=path_slug(self.symbol),
            timeframe=path_slug(self.timeframe.code),
        )
        return prefix if self.kind == NODE_PREFIX else f"kind={self.kind}/{prefix}"
