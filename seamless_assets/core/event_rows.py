"""What the exchange-event tables (`core.funding`, `core.trade_rows`) share: reading
ccxt's row dicts into typed columns (integers and numbers, exact or cast, with what could
not be read marked), the result of a conformance (`ConformedEvents`: kept frame, flag
counts, dropped rows with their one flag, rows that needed a cast), schema validation and
the fingerprint of a table of any columns (`table_fingerprint`: the same canonical-bytes
rule as `core.fingerprint.dataset_fingerprint`, whose column reader is tied to OHLCV).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from .conformance import CanonicalFrameError, ConformanceInputError
from .fingerprint import hash_columns
from .flags import DTYPE_CAST
from .frame import TS, Range

_INT64_LIMIT = 2**63


def empty_table(dtypes: Mapping[str, str]) -> pd.DataFrame:
    """A table of these columns (in this order) and dtypes with no rows."""
    return pd.DataFrame({c: np.empty(0, dtype=dtype) for c, dtype in dtypes.items()})


def table_schema(
    name: str, columns: Mapping[str, pa.Column], check: pa.Check
) -> pa.DataFrameSchema:
    """The pandera contract of a canonical table: exactly `columns` in order, their own
    dtypes (nothing coerced), and the table-wide `check` (its ordering)."""
    return pa.DataFrameSchema(
        dict(columns), checks=[check], strict=True, ordered=True, coerce=False, name=name
    )


def validate_table(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """`frame` if `schema` accepts it, else `CanonicalFrameError` naming the failed check."""
    try:
        schema.validate(frame, lazy=False)
    except (SchemaError, SchemaErrors) as raised:
        error = raised.schema_errors[0] if isinstance(raised, SchemaErrors) else raised
        check = getattr(error.check, "name", None) or str(error.check)
        raise CanonicalFrameError(str(check), str(error).splitlines()[0]) from None
    return frame


class IntColumn(NamedTuple):
    values: np.ndarray  # int64, 0 where not ok
    ok: np.ndarray  # an exact integer within int64
    cast: np.ndarray  # read from a string or a float


class NumberColumn(NamedTuple):
    values: np.ndarray  # float64; NaN where absent (None, "") or unreadable
    mismatch: np.ndarray  # present but not a number ("abc", True, a dict)
    cast: np.ndarray  # read from a string


def records(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`rows` as a list, or `ConformanceInputError` when some row is not a mapping."""
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Sequence):
        raise ConformanceInputError(f"expected a list of dicts, not {type(rows).__name__}")
    items = list(rows)
    bad = next((r for r in items if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise ConformanceInputError(f"each row must be a dict, got {type(bad).__name__}")
    return items


def _read_int(value: object) -> tuple[int, bool, bool]:
    if isinstance(value, bool | np.bool_):
        return 0, False, False
    if isinstance(value, int | np.integer):
        in_range = -_INT64_LIMIT <= int(value) < _INT64_LIMIT
        return (int(value), True, False) if in_range else (0, False, False)
    number: float | int
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return 0, False, False
    elif isinstance(value, float | np.floating):
        number = float(value)
    else:
        return 0, False, False
    if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
        return 0, False, False
    if not -_INT64_LIMIT <= int(number) < _INT64_LIMIT:
        return 0, False, False
    return int(number), True, True


def integer_column(values: Sequence[object]) -> IntColumn:
    """Integers (timestamps, ids): ints as they are; integral floats and integer strings
    cast; anything else (bool, None, 1.5, "abc") not ok."""
    n = len(values)
    if set(map(type, values)) <= {int}:
        try:
            ints = np.array(values, dtype=np.int64).reshape(n)
            return IntColumn(ints, np.ones(n, bool), np.zeros(n, bool))
        except OverflowError:
            pass
    read = [_read_int(v) for v in values]
    ints = np.fromiter((r[0] for r in read), np.int64, n)
    ok = np.fromiter((r[1] for r in read), bool, n)
    return IntColumn(ints, ok, ok & np.fromiter((r[2] for r in read), bool, n))


def _read_number(value: object) -> tuple[float, bool, bool]:
    if value is None:
        return math.nan, False, False
    if isinstance(value, bool | np.bool_):
        return math.nan, True, False
    if isinstance(value, int | float | np.integer | np.floating):
        try:
            return float(value), False, False
        except OverflowError:  # an int beyond float64: not a finite number
            return (math.inf if value > 0 else -math.inf), False, False
    if isinstance(value, str):
        if not value.strip():
            return math.nan, False, False  # "": the exchange's way of giving no value
        try:
            return float(value), False, True
        except ValueError:
            return math.nan, True, False
    return math.nan, True, False


def number_column(values: Sequence[object]) -> NumberColumn:
    """Floats: JSON numbers as they are, None and "" as NaN (absent), numeric strings
    cast ("nan"/"inf" strings too: they are non-finite, not mismatched)."""
    n = len(values)
    if set(map(type, values)) <= {int, float, type(None)}:
        try:
            floats = np.array(values, dtype=np.float64).reshape(n)
            return NumberColumn(floats, np.zeros(n, bool), np.zeros(n, bool))
        except OverflowError:
            pass
    read = [_read_number(v) for v in values]
    return NumberColumn(
        np.fromiter((r[0] for r in read), np.float64, n),
        np.fromiter((r[1] for r in read), bool, n),
        np.fromiter((r[2] for r in read), bool, n),
    )


def window_ms(ts: IntColumn, window: Range) -> np.ndarray:
    """Rows whose timestamp (ms) is readable and inside `window` (seconds)."""
    return ts.ok & (ts.values >= window.start * 1000) & (ts.values < window.end * 1000)


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class ConformedEvents:
    """A canonical event frame plus the account of what conformance did to get it.

    `flags` holds every flag of the table with its count. `dropped` lists every removed
    row: `row` (its position in the input), `ts` (its own ms timestamp, or the window's
    start for an `invalid_timestamp`), `flag` and `raw` (the row as given). `corrected`
    lists the kept rows counted in `dtype_cast` (`row`, `ts`, `flag`).
    """

    frame: pd.DataFrame
    flags: dict[str, int]
    dropped: pd.DataFrame
    corrected: pd.DataFrame


def account(
    rows: Sequence[object],
    code: np.ndarray,
    drop_flags: Sequence[str],
    listed_ts: np.ndarray,
    cast: np.ndarray,
    frame: pd.DataFrame,
) -> ConformedEvents:
    """The result of a conformance: `code[i]` is 0 for a kept row, else 1 + the index of
    its drop flag in `drop_flags`; `cast` marks rows that needed a cast."""
    names = np.array(["", *drop_flags], dtype=object)
    counts = np.bincount(code, minlength=len(names))
    flags = {flag: int(counts[i + 1]) for i, flag in enumerate(drop_flags)}
    gone, fixed = np.flatnonzero(code), np.flatnonzero(cast & (code == 0))
    flags[DTYPE_CAST] = int(fixed.size)
    dropped = pd.DataFrame(
        {
            "row": gone.astype(np.int64),
            TS: listed_ts[gone].astype(np.int64),
            "flag": names[code[gone]],
            "raw": pd.Series([rows[i] for i in gone.tolist()], dtype=object),
        }
    )
    corrected = pd.DataFrame(
        {
            "row": fixed.astype(np.int64),
            TS: listed_ts[fixed].astype(np.int64),
            "flag": np.full(fixed.size, DTYPE_CAST, dtype=object),
        }
    )
    return ConformedEvents(frame, flags, dropped, corrected)


def _header(
    columns: Sequence[str], dtypes: Mapping[str, str], identity: Mapping[str, Any]
) -> bytes:
    if "columns" in identity:
        raise ValueError("`columns` is reserved in a fingerprint identity")

    def plain(value: object) -> object:
        if isinstance(value, Range):
            return [value.start, value.end]
        raise TypeError(f"cannot put {type(value).__name__} in a fingerprint identity")

    meta = {"columns": [[c, dtypes[c]] for c in columns], **identity}
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), default=plain).encode() + b"\n"


def table_fingerprint(
    frame: pd.DataFrame,
    columns: Sequence[str],
    dtypes: Mapping[str, str],
    identity: Mapping[str, Any],
) -> str:
    """`sha256:<hex>` over the header (`identity` plus the column names and dtypes as
    sorted-key compact JSON; a `Range` as `[start, end]`), the row count (8 bytes LE) and
    each column in order as little-endian bytes, floats with NaN and -0.0 normalised by
    `core.fingerprint`'s rule. Same canonical-bytes approach as `dataset_fingerprint`,
    whose column reader is tied to the OHLCV columns."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"cannot fingerprint a frame without columns {missing}")
    return hash_columns(frame, _header(columns, dtypes, identity), {c: dtypes[c] for c in columns})
