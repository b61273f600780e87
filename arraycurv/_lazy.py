"""Lazy attributes of a package (PEP 562): submodules and names imported on first use.

``import arraycurv`` stays light because the heavy or rarely used parts (SciPy operators,
the paper tools, the experiments) are imported only when one of their names is looked up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping


def lazy_getattr(package: str, modules: Iterable[str] = (), names: Mapping[str, str] | None = None):
    """A module ``__getattr__`` for ``package``: a name in ``modules`` imports that submodule;
    a name in ``names`` (name -> submodule) imports the submodule and returns its attribute,
    which is then kept in the package namespace (later look-ups skip this function)."""
    modules, names = frozenset(modules), dict(names or {})

    def __getattr__(name: str):
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
