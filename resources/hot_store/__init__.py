"""Hot stores: mutable recent bars keyed by `(node_id, ts)`, with a gap ledger."""

from .base import HotStore
from .duckdb import DuckDBHotStore

__all__ = ["DuckDBHotStore", "HotStore"]
