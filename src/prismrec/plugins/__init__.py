"""Plug-ins wrap any model class without editing it (``--plugin NAME``).

A plug-in is a function ``wrap(model_cls) -> model_cls`` registered under a name; it works through
the model contract (features from the dataset, ``loss``/``embeddings``), never attribute names.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from prismrec.errors import UnknownNameError

_PLUGINS: dict[str, Callable] = {}


def register_plugin(name: str):
    def deco(fn):
        _PLUGINS[name] = fn
        return fn
    return deco


def _load_all():
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


def get_plugin(name: str) -> Callable:
    _load_all()
    if name not in _PLUGINS:
        raise UnknownNameError(f"unknown plug-in '{name}'; known: {', '.join(sorted(_PLUGINS)) or '(none)'}")
    return _PLUGINS[name]


def registered_plugins() -> dict[str, Callable]:
    _load_all()
    return dict(sorted(_PLUGINS.items()))
