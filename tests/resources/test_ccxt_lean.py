"""The lean ccxt packages: the same ccxt for the project, one exchange loaded per run."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
lean = {lean}
if lean:
    from resources.ccxt_lean import ccxt_errors
import ccxt, ccxt.async_support as ccxt_async
from ccxt.base import errors
from ccxt import kraken
import ccxt.async_support.binanceusdm  # imports the binance module too, binding it
exchange = ccxt_async.binance({{}})
print(json.dumps({{
    "version": ccxt.__version__,
    "exchanges": ccxt_async.exchanges,
    "sync_exchanges": ccxt.exchanges,
    "errors_same": ccxt.NetworkError is errors.NetworkError is ccxt_async.NetworkError,
    "lean_errors_same": (not lean) or ccxt_errors is errors,
    "binance_mro": [c.__name__ for c in type(exchange).__mro__],
    "binance_urls": exchange.urls["api"]["public"],
    "kraken": kraken.__module__,
    "okx_async": getattr(ccxt_async, "okx").__module__,
    "bound_classes": [type(getattr(ccxt_async, n)).__name__ for n in ("binance", "binanceusdm")],
    "modules": sum(1 for m in sys.modules if m.startswith("ccxt.")),
}}))
"""


def _probe(lean: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(lean=lean)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_lean_ccxt_is_the_same_ccxt_with_fewer_modules_loaded() -> None:
    lean, full = _probe(True), _probe(False)
    assert lean["modules"] < full["modules"] / 2, (lean["modules"], full["modules"])
    for key in ("version", "exchanges", "sync_exchanges", "binance_mro", "binance_urls",
                "kraken", "okx_async", "bound_classes"):  # fmt: skip
        assert lean[key] == full[key], key
    assert lean["errors_same"] and lean["lean_errors_same"] and full["errors_same"]
    assert "binance" in lean["exchanges"] and len(lean["exchanges"]) > 50
    assert lean["bound_classes"] == ["type", "type"]  # classes, not modules


def test_unknown_attributes_still_raise() -> None:
    code = (
        "from resources.ccxt_lean import install\n"
        "import ccxt.async_support as a\n"
        "try:\n    a.no_such_exchange\nexcept AttributeError as e:\n    print('raised', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "raised" in out.stdout and "no_such_exchange" in out.stdout
