"""The canonical OHLCV frame and half-open time ranges: the values every module exchanges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where frames are built: `Range` and the names load light
    import numpy as np
    import pandas as pd

TS = "ts"
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
CANONICAL_COLUMNS: tuple[str, ...] = (TS, *VALUE_COLUMNS)
CANONICAL_DTYPES: dict[str, str] = {TS: "int64", **{c: "float64" for c in VALUE_COLUMNS}}


def empty_frame() -> pd.DataFrame:
    """A canonical frame with no rows."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame({c: np.empty(0, dtype=CANONICAL_DTYPES[c]) for c in CANONICAL_COLUMNS})


def frame_from_arrays(ts: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Build a canonical frame from column arrays without copying more than needed."""
    import numpy as np
    import pandas as pd

    data = {TS: np.asarray(ts, dtype=np.int64)}
    data.update({c: np.asarray(values[c], dtype=np.float64) for c in VALUE_COLUMNS})
    return pd.DataFrame(data, columns=list(CANONICAL_COLUMNS))


def is_canonical(frame: pd.DataFrame) -> bool:
    """True when columns and dtypes are exactly canonical (order included)."""
    return tuple(frame.columns) == CANONICAL_COLUMNS and all(
        str(frame[c].dtype) == CANONICAL_DTYPES[c] for c in CANONICAL_COLUMNS
    )


def iso_utc(epoch_s: int) -> str:
    """Epoch seconds as ISO-8601 UTC with a `Z` suffix (the form used in manifests)."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, order=True)
class Range:
    """A half-open interval `[start, end)` of epoch seconds."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"range end {self.end} is before its start {self.start}")

    @property
    def duration_s(self) -> int:
        return self.end - self.start

    @property
    def empty(self) -> bool:
        return self.end == self.start

    def contains(self, ts: int) -> bool:
        return self.start <= ts < self.end

    def intersect(self, other: Range) -> Range | None:
        start, end = max(self.start, other.start), min(self.end, other.end)
        return Range(start, end) if start < end else None

    def first_slot(self, interval_s: int, *, origin_s: int = 0) -> int:
        """The first bar open time `origin_s + k * interval_s` at or after `start`."""
        return -(-(self.start - origin_s) // interval_s) * interval_s + origin_s

    def bars(self, interval_s: int, *, origin_s: int = 0) -> int:
        """Number of bar open times `origin_s + k * interval_s` inside the range."""
        first = self.first_slot(interval_s, origin_s=origin_s)
        return max(0, -(-(self.end - first) // interval_s))

    def to_json(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "start_iso": iso_utc(self.start),
            "end_iso": iso_utc(self.end),
        }

    def __str__(self) -> str:
        return f"[{iso_utc(self.start)}, {iso_utc(self.end)})"
