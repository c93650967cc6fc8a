"""Archive CSVs judged by content: the fast (Arrow) and row-by-row readings agree, and
each kind of unsound content is named."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.core.archive_check import _arrow_columns, _python_columns, parse_kline_csv
from seamless_assets.core.frame import Range

DAY0 = 1_735_689_600  # 2025-01-01
PERIOD = Range(DAY0, DAY0 + 86_400)
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,count,tbbv,tbqv,ignore"


def _csv(
    n: int, *, unit: int = 1000, header: bool = False, prices: list[float] | None = None
) -> str:
    lines = [HEADER] if header else []
    for i in range(n):
        t = (DAY0 + 60 * i) * unit
        p = prices[i] if prices else 100.0 + i * 0.01
        lines.append(f"{t},{p},{p + 1},{p - 1},{p + 0.5},{1.25 + i},{t + 60 * unit - 1},1,2,3,4,0")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.floats(min_value=1e-8, max_value=1e7, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=50,
    ),
    st.sampled_from([1000, 1_000_000]),
    st.booleans(),
)
def test_arrow_and_row_by_row_readings_agree_bit_for_bit(
    prices: list[float], unit: int, header: bool
) -> None:
    text = _csv(len(prices), unit=unit, header=header, prices=prices)
    fast = _arrow_columns(text.encode())
    assert fast is not None
    slow = _python_columns(text, problems := [])
    assert problems == []
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("unit", [1000, 1_000_000])
def test_a_sound_file_in_ms_or_us_gives_its_bars(unit: int) -> None:
    bars, problems = parse_kline_csv(_csv(1440, unit=unit).encode(), 60, PERIOD)
    assert problems == []
    np.testing.assert_array_equal(bars["ts"].to_numpy(), DAY0 + 60 * np.arange(1440))


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda rows: rows.__setitem__(5, "not,a,kline"), "row 6: not a kline row"),
        (lambda rows: rows.__setitem__(3, rows[3].replace(",100.03,", ",nan,", 1)), "price"),
        (lambda rows: rows.pop(8), None),
        (lambda rows: rows.insert(9, rows[9]), "strictly increasing"),
        (
            lambda rows: rows.__setitem__(2, str(int(rows[2].split(",")[0]) + 1) + rows[2][13:]),
            "whole second",
        ),
    ],
)
def test_unsound_content_is_named(edit: object, named: str | None) -> None:
    rows = _csv(20).splitlines()
    edit(rows)  # type: ignore[operator]
    _bars, problems = parse_kline_csv("\n".join(rows).encode(), 60, PERIOD)
    if named is None:  # a row dropped: a hole, not a problem (coverage reports it)
        assert problems == []
    else:
        assert any(named in p for p in problems), problems


def test_rows_outside_the_period_or_off_grid_or_with_a_wrong_close_time() -> None:
    _bars, problems = parse_kline_csv(_csv(10).encode(), 60, Range(DAY0 + 60, DAY0 + 86_400))
    assert any("outside the file's period" in p for p in problems)
    _bars, problems = parse_kline_csv(_csv(10).encode(), 120, PERIOD)
    assert any("off the 120 s grid" in p for p in problems)
    assert any("close_time" in p for p in problems)
