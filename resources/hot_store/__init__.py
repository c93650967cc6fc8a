"""Hot stores: mutable recent bars keyed by `(node_id, ts)`, with a gap ledger.

The names below are imported on first use (PEP 562): importing one backend, or the
protocol, does not import the others' drivers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import HotStore
    from .duckdb import DuckDBHotStore

__all__ = ["DuckDBHotStore", "HotStore"]

_MODULE_OF = {"HotStore": ".base", "DuckDBHotStore": ".duckdb"}


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
