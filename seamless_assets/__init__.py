"""seamless: crypto OHLCV history that is always ready, provably complete, reproducible."""

__version__ = "0.1.0"
