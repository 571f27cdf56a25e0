"""Model registry and built-in models. Importing this package registers every model file in it."""
import importlib
import pkgutil

from prismrec.models.base import Model, ModelConfig, build_model, get_model_class, register, registered_models

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "layers"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Model", "ModelConfig", "build_model", "get_model_class", "register", "registered_models"]
