"""`StoredBars`: a run's stored-bar counts added chunk by chunk equal the same counts over
the run's whole frame (what the inline checks judged before the run stopped keeping it),
however the bars are split, with duplicates, disorder and bad rows anywhere, including
across chunk edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seamless_assets.core.coverage import ranges_from_timestamps
from seamless_assets.core.frame import VALUE_COLUMNS
from seamless_assets.run_outcome import StoredBars, insane_rows

T0 = 1_704_067_200


def bars(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """`n` bars on a 1m grid with holes, some ts repeated or stepping back, some bad rows."""
    ts = T0 + 60 * np.cumsum(rng.choice([1, 1, 1, 2, 7], size=n))
    odd = rng.random(n)
    ts[odd < 0.02] = np.roll(ts, 1)[odd < 0.02]  # equal to the one before
    ts[(odd >= 0.02) & (odd < 0.03)] -= 600  # steps back
    close = 100 + rng.random(n)
    frame = pd.DataFrame(
        {"ts": ts, "open": close, "high": close + 1, "low": close - 1, "close": close}
    )
    frame["volume"] = rng.random(n)
    frame.loc[rng.random(n) < 0.01, "high"] = 0.0  # high below the rest
    frame.loc[rng.random(n) < 0.01, "volume"] = np.nan
    return frame


@pytest.mark.parametrize("seed", range(8))
def test_chunked_counts_equal_whole_frame_counts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = bars(rng, int(rng.integers(1, 3000)))
    edges = sorted(set(rng.integers(0, len(frame) + 1, size=int(rng.integers(0, 12)))))
    stored = StoredBars()
    for lo, hi in zip([0, *edges], [*edges, len(frame)], strict=True):
        stored = stored.add(frame.iloc[lo:hi], 60)  # empty chunks too
    ts = frame["ts"].to_numpy()
    steps = np.diff(ts)
    assert stored.rows == len(frame)
    assert stored.duplicates == np.count_nonzero(steps == 0)
    assert stored.out_of_order == np.count_nonzero(steps < 0)
    assert stored.bad_rows == insane_rows(*(frame[c].to_numpy() for c in VALUE_COLUMNS)) > 0
    assert list(stored.covered) == ranges_from_timestamps(ts, 60)


def test_sorted_chunks_cover_what_the_whole_frame_covers() -> None:
    rng = np.random.default_rng(5)
    ts = np.unique(T0 + 60 * rng.integers(0, 5000, size=3000))
    frame = pd.DataFrame({"ts": ts, **{c: np.ones(len(ts)) for c in VALUE_COLUMNS}})
    stored = StoredBars()
    for lo in range(0, len(ts), 250):
        stored = stored.add(frame.iloc[lo : lo + 250], 60)
    assert list(stored.covered) == ranges_from_timestamps(ts, 60)
    assert (stored.duplicates, stored.out_of_order, stored.bad_rows) == (0, 0, 0)
