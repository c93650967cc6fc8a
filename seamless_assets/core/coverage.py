"""Coverage and gap math over half-open ranges of epoch seconds (pure, vectorized)."""

from __future__ import annotations

from dataclasses import dataclass

from .frame import Range


@dataclass(frozen=True, order=True)
class LedgerGap:
    """A window the exchange confirmed empty (maintenance, no trades, before listing)."""

    range: Range
    reason: str
