"""Plug-ins wrap any model class without editing it (``--plugin NAME``).

A plug-in is a function ``wrap(model_cls) -> model_cls`` registered under a name; it works through
the model contract (features from the dataset, ``loss``/``embeddings``), never attribute names.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable

from prismrec.errors import PrismrecError, UnknownNameError

_PLUGINS: dict[str, Callable] = {}


def register_plugin(name: str):
    def deco(fn):
        _PLUGINS[name] = fn
        return fn
    return deco


def feature_host(model_cls, plugin: str, verb: str, marker: str):
    """The model class a feature plug-in may wrap (``model_cls`` or its registered name).

    Raises a clear error for a model that reads no modality features (``verb`` says what the
    plug-in does to them) or one already wrapped by this plug-in (its class has ``marker`` set).
    """
    from prismrec.models.base import get_model_class
    if isinstance(model_cls, str):
        model_cls = get_model_class(model_cls)
    if not getattr(model_cls, "uses_features", False):
        raise PrismrecError(f"plug-in '{plugin}' {verb} modality features, but model '{model_cls.name}' reads "
                            "none; use it with a multimodal model (see `prismrec models`)")
    if not getattr(model_cls, "features_in_training", True):
        raise PrismrecError(f"plug-in '{plugin}' {verb} modality features during training, but model "
                            f"'{model_cls.name}' reads them only once, to build fixed graphs, so it would "
                            "change nothing; use it with a model whose training reads the features")
    if getattr(model_cls, marker, None) is not None:
        raise PrismrecError(f"model '{model_cls.name}' is already wrapped by {plugin}")
    return model_cls


def plugin_class(model_cls: type, mixin: type, cold_start: type | None, *, suffix: str, marker: str,
                 fields: list, doc: str, description: str) -> type:
    """The class a feature plug-in returns: ``mixin`` (and ``cold_start``, its ``new_item_features``
    refinement of unseen items' features) placed before ``model_cls`` in the method order, so each ``super()`` call in the
    mixin reaches the host; its ``Config`` is the host's extended with ``fields`` (frozen, ranges
    checked like every config); ``marker`` names the host on the class (one wrap per plug-in)."""
    config = dataclasses.make_dataclass(f"{model_cls.Config.__name__}{suffix}", fields, bases=(model_cls.Config,),
                                        frozen=True, namespace={"__module__": mixin.__module__})
    bases = (mixin, cold_start) if cold_start is not None else (mixin,)
    return type(f"{model_cls.__name__}{suffix}", (*bases, model_cls), {
        "__doc__": f"{model_cls.__name__} {doc}", "__module__": mixin.__module__, "Config": config,
        "description": f"{model_cls.description} + {description}", marker: model_cls,
        # on a GPU only where host and plug-in were both checked there
        "runs_on_cuda": model_cls.runs_on_cuda and getattr(mixin, "runs_on_cuda", False)})


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
