"""The conformance flag names (the blueprint's v2 taxonomy) and their groups.

Apart from `conformance.py`, so modules that only name flags (checks, sensors) load
without pandas and pandera; `conformance.py` re-exports every name.
"""

from __future__ import annotations

from collections.abc import Mapping

CONFORMANCE_VERSION = "v2"

DUPLICATE_TS = "duplicate_ts"
GAP = "gap"
MISSING_COLUMN = "missing_column"
DTYPE_CAST = "dtype_cast"
DTYPE_MISMATCH = "dtype_mismatch"
TS_CAST = "ts_cast"
TS_TIMEZONE_NORMALIZED = "ts_timezone_normalized"
NON_FINITE = "non_finite"
INVALID_TIMESTAMP = "invalid_timestamp"
OHLC_INCONSISTENT = "ohlc_inconsistent"
NON_POSITIVE_PRICE = "non_positive_price"
ZERO_BAR = "zero_bar"

FLAGS: tuple[str, ...] = (
    DUPLICATE_TS,
    GAP,
    MISSING_COLUMN,
    DTYPE_CAST,
    DTYPE_MISMATCH,
    TS_CAST,
    TS_TIMEZONE_NORMALIZED,
    NON_FINITE,
    INVALID_TIMESTAMP,
    OHLC_INCONSISTENT,
    NON_POSITIVE_PRICE,
    ZERO_BAR,
)
# Flags that remove rows, in precedence order (a row gets the first that applies).
DROP_FLAGS: tuple[str, ...] = (
    INVALID_TIMESTAMP,
    DTYPE_MISMATCH,
    NON_FINITE,
    ZERO_BAR,
    NON_POSITIVE_PRICE,
    OHLC_INCONSISTENT,
    DUPLICATE_TS,
)
# Flags counting columns of the payload rather than rows.
COLUMN_FLAGS: tuple[str, ...] = (MISSING_COLUMN, DTYPE_CAST)


def conformance_warnings(flags: Mapping[str, int]) -> int:
    """Corrections and drops among `flags` counts: every flag except `gap` (a missing bar
    is coverage, not a correction)."""
    return sum(count for flag, count in flags.items() if flag != GAP)
