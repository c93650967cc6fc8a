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
    import pandas as pd

_US_FROM = 10**14  # open times at or above this are microseconds (ms reach it in 5138)


def parse_kline_csv(
    text: str, interval_s: int, period: Range, *, origin_s: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """(the canonical bars of the file, the problems found: empty when it is sound)."""
    import numpy as np

    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # a header line
    problems: list[str] = []
    parsed: list[tuple[Any, ...]] = []  # (open time, close_time error, o, h, l, c, v)
    for i, row in enumerate(rows):
        try:
            open_t, close_t = int(row[0]), int(row[6])
            values = [float(v) for v in row[1:6]]
        except (ValueError, IndexError):
            problems.append(f"row {i + 1}: not a kline row ({','.join(row)[:80]!r})")
            continue
        unit = 1_000_000 if open_t >= _US_FROM else 1000
        parsed.append((open_t, close_t - open_t + 1 - interval_s * unit, *values))
        if open_t % unit:
            problems.append(f"row {i + 1}: open time {open_t} is not a whole second")
    ts = np.array([p[0] // (1_000_000 if p[0] >= _US_FROM else 1000) for p in parsed], np.int64)
    cols = np.array([p[2:] for p in parsed], dtype=np.float64).reshape(-1, 5)
    o, h, lo, c, v = cols.T
    checks = {
        "open time outside the file's period": (ts < period.start) | (ts >= period.end),
        f"open time off the {interval_s} s grid": (ts - origin_s) % interval_s != 0,
        "close_time is not open_time + interval - 1": np.array([p[1] != 0 for p in parsed]),
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
