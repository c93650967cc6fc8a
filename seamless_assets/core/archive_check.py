"""A kline archive file judged by its content (data.binance.vision CSVs): parsed into the
canonical frame and checked, because neither the file nor its published `.CHECKSUM` is
trusted blindly (Binance's own checksums are known to mismatch for some files).

Parsing: an optional header line (USDⓈ-M files have one, spot files none); open and close
times in milliseconds or, in spot files from 2025, microseconds (told apart per row by
magnitude). Checks (each failure is a named problem): every open time inside the file's
period and on the bar grid, strictly increasing, `close_time` one unit before the next
bar's open, `low <= open, close <= high`, volumes >= 0 and finite prices > 0, no more rows
than the period has bars.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from .frame import Range, frame_from_arrays

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

_US_FROM = 10**14  # open times at or above this are microseconds (ms reach it in 5138)


def parse_kline_csv(
    data: bytes | str, interval_s: int, period: Range, *, origin_s: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """(the canonical bars of the file, the problems found: empty when it is sound)."""
    import numpy as np

    raw = data.encode() if isinstance(data, str) else data
    columns = _arrow_columns(raw)
    problems: list[str] = []
    if columns is None:  # not plain numbers throughout: read row by row, naming bad rows
        columns = _python_columns(raw.decode(errors="replace"), problems)
    open_t, close_t, cols = columns
    unit = np.where(open_t >= _US_FROM, 1_000_000, 1000)
    ts = open_t // unit
    o, h, lo, c, v = cols.T
    checks = {
        "open time is not a whole second": open_t % unit != 0,
        "open time outside the file's period": (ts < period.start) | (ts >= period.end),
        f"open time off the {interval_s} s grid": (ts - origin_s) % interval_s != 0,
        "close_time is not open_time + interval - 1": close_t - open_t + 1 != interval_s * unit,
        "price not finite and positive": ~(np.isfinite(cols[:, :4]) & (cols[:, :4] > 0)).all(1),
        "high below open/close or low above them": (h < np.maximum(o, c)) | (lo > np.minimum(o, c)),
        "volume negative or not finite": ~np.isfinite(v) | (v < 0),
    }
    for name, bad in checks.items():
        if bad.any():
            problems.append(
                f"{name}: {int(bad.sum())} row(s), first at row {int(bad.argmax()) + 1}"
            )
    if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        problems.append("open times are not strictly increasing")
    slots = -(-(period.end - period.start) // interval_s)
    if len(ts) > slots:
        problems.append(f"{len(ts)} rows for a period of {slots} bars")
    frame = frame_from_arrays(
        ts, dict(zip(("open", "high", "low", "close", "volume"), cols.T, strict=True))
    )
    return frame, problems


_Columns = tuple["np.ndarray", "np.ndarray", "np.ndarray"]  # open times, close times, (n, 5)


def _has_header(raw: bytes) -> bool:
    first = raw.lstrip()[:1]
    return bool(first) and not (first.isdigit() or first == b"-")


def _arrow_columns(raw: bytes) -> _Columns | None:
    """The file's columns read by Arrow's CSV reader (C++, correctly rounded floats), or
    None when some field is not a plain number (the row-by-row reading names it)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(7)]
    types = {n: pa.int64() if n in ("c0", "c6") else pa.float64() for n in names}
    try:
        table = pacsv.read_csv(
            pa.py_buffer(raw),
            read_options=pacsv.ReadOptions(
                column_names=[*names, *(f"x{i}" for i in range(5))],
                skip_rows=1 if _has_header(raw) else 0,
                use_threads=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=names, strings_can_be_null=False
            ),
            # malloc's: freed at once (Arrow's default pool keeps what it freed mapped)
            memory_pool=pa.system_memory_pool(),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if any(table.column(n).null_count for n in names):
        return None
    values = np.column_stack([table.column(f"c{i}").to_numpy() for i in range(1, 6)])
    return table.column("c0").to_numpy(), table.column("c6").to_numpy(), values


def _python_columns(text: str, problems: list[str]) -> _Columns:
    """The rows that parse, read one by one; a row that does not is a problem."""
    import numpy as np

    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # a header line
    parsed: list[tuple[Any, ...]] = []
    for i, row in enumerate(rows):
        try:
            parsed.append((int(row[0]), int(row[6]), *(float(v) for v in row[1:6])))
        except (ValueError, IndexError):
            problems.append(f"row {i + 1}: not a kline row ({','.join(row)[:80]!r})")
    table = np.array([p[2:] for p in parsed], dtype=np.float64).reshape(-1, 5)
    return (
        np.array([p[0] for p in parsed], np.int64),
        np.array([p[1] for p in parsed], np.int64),
        table,
    )
