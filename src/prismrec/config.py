"""Typed configuration: the training config, model configs, YAML files and ``key=value`` overrides.

Defaults, then the model's training defaults, then a YAML file, then CLI ``--set`` overrides are
merged in one place (:func:`resolve`). Unknown keys and wrong types are errors naming the key.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import yaml

from prismrec.errors import ConfigError


# Field types that carry their valid range: a config dataclass deriving from :class:`Checked`
# declares ``knn_k: PosInt = 10`` or ``aggr_mode: Literal["add", "mean"] = "add"`` and gets the
# check and its error message (naming the field) without writing them out.
PosInt = Annotated[int, at.Ge(1)]
NonNegInt = Annotated[int, at.Ge(0)]
PosFloat = Annotated[float, at.Gt(0)]
NonNegFloat = Annotated[float, at.Ge(0)]
UnitFloat = Annotated[float, at.Interval(ge=0, le=1)]      # a weight or share in [0, 1]
Rate = Annotated[float, at.Interval(ge=0, lt=1)]           # a dropout or masking rate in [0, 1)
Fraction = Annotated[float, at.Interval(gt=0, le=1)]       # a kept share in (0, 1]
FeatureNorm = Literal["none", "l2", "standardize"]          # item-feature transforms (data/transforms.py)


def _bounds_text(c) -> str:
    """``at.Interval(ge=0, lt=1)`` -> ``'in [0, 1)'``; ``at.Ge(1)`` -> ``'>= 1'``."""
    lo = (f"[{c.ge}" if getattr(c, "ge", None) is not None else
          f"({c.gt}" if getattr(c, "gt", None) is not None else None)
    hi = (f"{c.le}]" if getattr(c, "le", None) is not None else
          f"{c.lt})" if getattr(c, "lt", None) is not None else None)
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + lo[1:]
    return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]


def _violates(c, v) -> bool:
    return any(bound is not None and not ok(v, bound) for bound, ok in (
        (getattr(c, "ge", None), lambda v, b: v >= b), (getattr(c, "gt", None), lambda v, b: v > b),
        (getattr(c, "le", None), lambda v, b: v <= b), (getattr(c, "lt", None), lambda v, b: v < b)))


@functools.cache
def _field_rules(cls) -> tuple:
    """(name, bound constraints, Literal choices) of each annotated field of dataclass ``cls``."""
    rules = []
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if name not in cls.__dataclass_fields__:
            continue
        bounds, choices = (), None
        if typing.get_origin(hint) is Annotated:
            hint, *meta = typing.get_args(hint)
            bounds = tuple(m for m in meta if isinstance(m, (at.Ge, at.Gt, at.Le, at.Lt, at.Interval)))
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
        if bounds or choices:
            rules.append((name, bounds, choices))
    return tuple(rules)


class Checked:
    """Mixin for config dataclasses: values are checked against their field types on construction.

    Bounds come from the ``Annotated`` aliases above (``PosInt``, ``UnitFloat``, ...), choices from
    ``Literal[...]``; a check that spans several fields goes into :meth:`validate`. A violation raises
    :class:`~prismrec.errors.ConfigError` (a ``ValueError``) naming the field, its range and the value.
    """

    def __post_init__(self):
        for name, bounds, choices in _field_rules(type(self)):
            v = getattr(self, name)
            if choices is not None and v not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {v!r}")
            for c in bounds:
                if _violates(c, v):
                    raise ConfigError(f"{name} must be {_bounds_text(c)}, got {v}")
        try:
            self.validate()
        except ConfigError:
            raise
        except ValueError as e:  # a validate() written with plain ValueError still reads as a config error
            raise ConfigError(str(e)) from None

    def validate(self) -> None:
        """Checks across fields (override); the per-field ranges are already checked."""


@dataclass(frozen=True)
class TrainConfig(Checked):
    """Settings of the training loop; defaults are MMRec's (``specs/protocol.md`` §8)."""

    epochs: PosInt = 1000
    batch_size: PosInt = 2048
    learning_rate: PosFloat = 1e-3
    weight_decay: float = 0.0
    patience: PosInt = 20           # stop after this many evaluations without a new best (MMRec stopping_step)
    # no early stopping before this many epochs: a warm-up for models whose validation metric sits on
    # a plateau before it takes off (0 = MMRec's rule, stopping may come at any epoch)
    min_epochs: NonNegInt = 0
    valid_metric: str = "recall@20"
    eval_ks: tuple[int, ...] = (5, 10, 20, 50)
    eval_batch_size: PosInt = 128   # users per scoring block (128 was fastest on baby-like; see ranking.py)
    eval_test_every_epoch: bool = True  # MMRec reports test at the best-valid epoch; costs nothing extra
    mask_valid_in_test: bool = False
    seed: int = 999
    num_threads: int = 0            # 0 = torch's default
    checkpoint: bool = True         # write a checkpoint after each epoch (for --resume)
    clip_grad_norm: float = 0.0     # 0 = off
    # where training runs: "cpu", or "cuda" / "cuda:N" (a GPU, for models with runs_on_cuda);
    # the trained model comes back to the CPU, where bundles are saved and served
    device: str = "cpu"
    # item features before Model.setup (data/transforms.py)
    feature_norm: FeatureNorm = "none"

    def validate(self):
        if self.min_epochs > self.epochs:
            raise ConfigError(f"min_epochs ({self.min_epochs}) must be at most epochs ({self.epochs})")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):  # refuse rather than silently train on the CPU
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N' (a GPU index), got {self.device!r}")
        if "@" not in self.valid_metric:
            raise ConfigError(f"valid_metric must look like 'recall@20', got {self.valid_metric!r}")
        k = int(self.valid_metric.split("@")[1])
        if k not in self.eval_ks:
            object.__setattr__(self, "eval_ks", tuple(sorted(set(self.eval_ks) | {k})))


def search_space(low, high, *, log: bool = False, choices=None) -> dict:
    """Field metadata describing a tuning range (read by ``prismrec tune``)."""
    return {"search": {"low": low, "high": high, "log": log, "choices": choices}}


def tunable(default, low=None, high=None, *, log: bool = False, choices=None):
    """A dataclass field with a default and a search range for the tuner."""
    return field(default=default, metadata=search_space(low, high, log=log, choices=choices))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], key)
    if origin is tuple:
        (inner, *_) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(v, inner, key) for v in value)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, str):
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                return int(f)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}") from None
    return value


def build_config(cls, values: dict[str, Any], where: str = "config"):
    """Instantiate dataclass ``cls`` from ``values`` (strings allowed), checking keys and types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {k: _coerce(v, hints[k], k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a pair without ``=`` is an error."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"override {p!r} must look like key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file: a flat mapping, or sections ``train:`` and ``model:`` (plus ``model_name``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value")
    flat = {}
    for k, v in data.items():
        if k in ("train", "model") and isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    return flat


def resolve(model_cls, values: dict[str, Any]) -> tuple[TrainConfig, Any]:
    """Split merged ``values`` into (TrainConfig, model config); unknown keys are errors.

    The model's ``train_defaults`` (e.g. LATTICE's learning rate) apply under ``values``.
    """
    train_keys = {f.name for f in fields(TrainConfig)}
    model_keys = {f.name for f in fields(model_cls.Config)}
    unknown = set(values) - train_keys - model_keys
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} for model '{model_cls.name}'; "
                          f"training keys: {', '.join(sorted(train_keys))}; "
                          f"model keys: {', '.join(sorted(model_keys)) or '(none)'}")
    train_vals = dict(getattr(model_cls, "train_defaults", {}))
    train_vals.update({k: v for k, v in values.items() if k in train_keys and k not in model_keys})
    model_vals = {k: v for k, v in values.items() if k in model_keys}
    return build_config(TrainConfig, train_vals, "training"), build_config(model_cls.Config, model_vals,
                                                                          f"'{model_cls.name}' model")


def to_dict(cfg) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
