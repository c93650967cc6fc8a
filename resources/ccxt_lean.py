"""ccxt without importing every exchange it ships.

`import ccxt` (and `import ccxt.async_support`, which imports `ccxt` first) executes both
packages' `__init__`, which import each of the ~100 exchange classes twice (sync and
async): about 0.9 s and 60 MiB per process, of which a run needs one exchange. `install()`
puts both packages in `sys.modules` built from their own `__init__` source without those
exchange imports (everything else — version, errors, `exchanges`, `Exchange`, precision
helpers — runs unchanged) and with a module `__getattr__` that imports an exchange class
the first time it is asked for (`ccxt.async_support.binance`, `getattr(ccxt, "okx")`,
`from ccxt import kraken`). Code that imports ccxt afterwards gets the same modules and the
same classes. When ccxt is already imported, `install()` leaves it alone.

Importing this module installs it; import ccxt's errors from here (`ccxt_errors`) so
that no module of the project imports ccxt before it is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

# `from ccxt.binance import binance` (with a lint pragma) and its async twin, per exchange
_EXCHANGE_IMPORT = re.compile(
    r"^from ccxt\.(?:async_support\.)?(?P<name>[a-z0-9_]+) import (?P=name)\b.*$", re.MULTILINE
)
PACKAGES = ("ccxt", "ccxt.async_support")


def install() -> bool:
    """Load ccxt's two packages lean unless ccxt is imported already; True if it did."""
    if "ccxt" in sys.modules:
        return False
    spec = importlib.util.find_spec("ccxt")
    if spec is None or spec.origin is None:  # not installed: let the real import say so
        return False
    root = Path(spec.origin).parent
    loaded: list[str] = []
    try:
        for name in PACKAGES:
            init = root.joinpath(*name.split(".")[1:], "__init__.py")
            _load_package(name, init)
            loaded.append(name)
    except BaseException:
        for name in loaded:
            sys.modules.pop(name, None)
        raise
    return True


def _load_package(name: str, init: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    source = _EXCHANGE_IMPORT.sub("", init.read_text(encoding="utf-8"))
    sys.modules[name] = module
    if "." in name:  # bind the subpackage on its parent, as the import system does
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, module)
    try:
        exec(compile(source, str(init), "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    module.__getattr__ = _exchange_loader(module)  # type: ignore[method-assign]
    module.__class__ = _LeanPackage
    return module


class _LeanPackage(types.ModuleType):
    """A lean package keeps its exchange names bound to the classes: importing an exchange
    module (`import ccxt.async_support.binance`, or ccxt's own `binanceusdm` importing
    `binance`) binds the module on its package, as in the full package it is the class."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("exchanges", ()):
            value = getattr(value, name, value)
        super().__setattr__(name, value)


def _exchange_loader(package: types.ModuleType) -> Any:
    def __getattr__(attr: str) -> Any:
        if attr in package.__dict__.get("exchanges", ()):
            submodule = importlib.import_module(f"{package.__name__}.{attr}")
            exchange_class = getattr(submodule, attr)
            setattr(package, attr, exchange_class)  # the import bound the module: the class
            return exchange_class
        raise AttributeError(f"module {package.__name__!r} has no attribute {attr!r}")

    return __getattr__


install()
# imported after install(), so that this first import of ccxt is the lean one
from ccxt.base import errors as ccxt_errors  # noqa: E402

__all__ = ["PACKAGES", "ccxt_errors", "install"]
