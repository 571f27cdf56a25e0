"""Attributes of a package imported on first use (PEP 562), so light commands skip torch and pandas."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_getattr(package: str, names: dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``names`` maps an attribute to the module that defines it
    (absolute, or relative to ``package`` when it has no dot); the value is cached in ``namespace``."""
    def __getattr__(name: str):
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = where if "." in where else f"{package}.{where}"
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later look-ups skip __getattr__
        return value
    return __getattr__
