"""Node identities `ohlcv:{exchange}:{symbol}:{timeframe}`, timeframes and asset keys."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidNodeId, UnsupportedTimeframe

NODE_PREFIX = "ohlcv"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_TIMEFRAME = re.compile(r"^([1-9][0-9]*)([smhdwMy])$")
_MAX_INTERVAL_S = _UNIT_SECONDS["w"]


@dataclass(frozen=True, order=True)
class Timeframe:
    """A ccxt timeframe with a fixed length in seconds (`1s` … `1w`)."""

    seconds: int
    code: str

    @classmethod
    def parse(cls, code: str) -> Timeframe:
        match = _TIMEFRAME.match(code)
        if not match:
            raise UnsupportedTimeframe(
                f"timeframe {code!r} is not a ccxt timeframe; use e.g. '1m', '5m', '1h', '1d', '1w'"
            )
        count, unit = int(match.group(1)), match.group(2)
        if unit in ("M", "y"):
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
    """Reversible escape: alnum and `safe` stay, any other UTF-8 byte becomes marker+hex."""
    out = []
    for char in text:
        if char.isascii() and (char.isalnum() or char in safe):
            out.append(char)
        else:
            out.extend(f"{marker}{byte:02x}" for byte in char.encode())
    return "".join(out)


def _unescape(text: str, marker: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == marker:
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(text[i].encode())
            i += 1
    return raw.decode()


def asset_key_part(text: str) -> str:
    """Encode text into an asset-key part (`^[A-Za-z0-9_]+$`), reversibly: `/` -> `_2f`."""
    return _escape(text, safe="", marker="_")


def from_asset_key_part(part: str) -> str:
    return _unescape(part, marker="_")


def path_slug(text: str) -> str:
    """Hive-style percent-encoding for path segments: only `[A-Za-z0-9_-]` stays literal.

    `.` and `/` are always escaped, so a slug can never be `..` or contain a separator.
    """
    return _escape(text, safe="_-", marker="%")


def from_path_slug(slug: str) -> str:
    return _unescape(slug, marker="%")


@dataclass(frozen=True)
class NodeId:
    """One series: `ohlcv:{exchange}:{symbol}:{timeframe}`; the symbol may contain `:`."""

    exchange: str
    symbol: str
    timeframe: Timeframe

    @classmethod
    def parse(cls, node_id: str) -> NodeId:
        parts = node_id.split(":")
        if len(parts) < 4 or parts[0] != NODE_PREFIX:
            raise InvalidNodeId(
                f"node id {node_id!r} must look like "
                "'ohlcv:{exchange}:{symbol}:{timeframe}', e.g. 'ohlcv:binance:BTC/USDT:1m'"
            )
        exchange, symbol, timeframe = parts[1], ":".join(parts[2:-1]), parts[-1]
        return cls.of(exchange, symbol, timeframe)

    @classmethod
    def of(cls, exchange: str, symbol: str, timeframe: str | Timeframe) -> NodeId:
        if not re.fullmatch(r"[a-z0-9_]+", exchange):
            raise InvalidNodeId(
                f"exchange id {exchange!r} must be a lower-case ccxt id such as 'binance'"
            )
        if not symbol or symbol != symbol.strip() or any(ord(c) < 32 for c in symbol):
            raise InvalidNodeId(
                f"symbol {symbol!r} must be a non-empty ccxt symbol like 'BTC/USDT'"
            )
        tf = timeframe if isinstance(timeframe, Timeframe) else Timeframe.parse(timeframe)
        return cls(exchange=exchange, symbol=symbol, timeframe=tf)

    @property
    def interval_s(self) -> int:
        return self.timeframe.seconds

    def __str__(self) -> str:
        return f"{NODE_PREFIX}:{self.exchange}:{self.symbol}:{self.timeframe.code}"

    def asset_key_path(self) -> list[str]:
        """Asset key parts: `["ohlcv", exchange, escaped symbol, timeframe]`."""
        return [
            NODE_PREFIX,
            self.exchange,
            asset_key_part(self.symbol),
            asset_key_part(self.timeframe.code),
        ]

    @classmethod
    def from_asset_key_path(cls, path: list[str] | tuple[str, ...]) -> NodeId:
        if len(path) != 4 or path[0] != NODE_PREFIX:
            raise InvalidNodeId(f"asset key {list(path)} is not an ohlcv node key")
        return cls.of(path[1], from_asset_key_part(path[2]), from_asset_key_part(path[3]))

    def partition_prefix(self, template: str) -> str:
        """The artifact prefix for this node, from the blueprint's partition template."""
        return template.format(
            exchange=path_slug(self.exchange),
            symbol=path_slug(self.symbol),
            timeframe=path_slug(self.timeframe.code),
        )
