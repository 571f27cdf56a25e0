"""Config dataclasses check the ranges their field types declare (prismrec.config.Checked)."""
from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Literal

import annotated_types as at
import pytest

from prismrec.config import (Checked, Fraction, NonNegInt, PosFloat, PosInt, Rate, TrainConfig, UnitFloat,
                             _field_rules, build_config)
from prismrec.errors import ConfigError
from prismrec.models.base import registered_models
from prismrec.plugins import get_plugin


@dataclasses.dataclass(frozen=True)
class Example(Checked):
    k: PosInt = 1
    n: NonNegInt = 0
    t: PosFloat = 0.5
    w: UnitFloat = 0.5
    p: Rate = 0.5
    keep: Fraction = 0.5
    half: Annotated[float, at.Interval(gt=0, le=0.5)] = 0.25
    mode: Literal["a", "b"] = "a"
    free: int = -3                      # no range: anything goes

    def validate(self):
        if self.k > 100:
            raise ConfigError("k must be <= 100 when checked across fields")


@pytest.mark.parametrize("field,value,message", [
    ("k", 0, "k must be >= 1, got 0"),
    ("n", -1, "n must be >= 0, got -1"),
    ("t", 0.0, "t must be > 0, got 0.0"),
    ("w", 1.5, r"w must be in \[0, 1\], got 1.5"),
    ("p", 1.0, r"p must be in \[0, 1\), got 1.0"),
    ("keep", 0.0, r"keep must be in \(0, 1\], got 0.0"),
    ("half", 0.6, r"half must be in \(0, 0.5\], got 0.6"),
    ("mode", "c", "mode must be one of a, b; got 'c'"),
    ("k", 101, "k must be <= 100 when checked across fields"),
])
def test_a_value_outside_its_declared_range_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        Example(**{field: value})


def test_values_on_the_edges_and_unranged_fields_pass():
    Example(k=1, n=0, t=1e-9, w=0.0, p=0.0, keep=1.0, half=0.5, mode="b", free=-10**6)
    Example(w=1.0)


def test_train_config_and_overrides_coerce_then_check():
    assert build_config(TrainConfig, {"epochs": "3", "feature_norm": "l2"}).epochs == 3
    with pytest.raises(ConfigError, match="epochs must be >= 1, got 0"):
        build_config(TrainConfig, {"epochs": "0"})
    with pytest.raises(ConfigError, match="feature_norm must be one of none, l2, standardize"):
        TrainConfig(feature_norm="z")


def _bad_value(bounds, choices):
    """A value that breaks the first rule of a field."""
    if choices is not None:
        return "not-a-choice"
    c = bounds[0]
    for attr, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
        bound = getattr(c, attr, None)
        if bound is not None:
            return bound + step
    raise AssertionError(c)


def _configs():
    out = []
    for name, cls in registered_models().items():
        out.append((name, cls.Config))
        if cls.uses_features and cls.features_in_training:
            out += [(f"{name}+{p}", get_plugin(p)(cls).Config) for p in ("befa", "erl")]
    return out


@pytest.mark.parametrize("name,config", _configs(), ids=[n for n, _ in _configs()])
def test_every_model_and_plugin_config_refuses_each_out_of_range_field(name, config):
    config()                                         # the defaults are valid
    rules = _field_rules(config)
    hints = typing.get_type_hints(config)
    if name not in ("pop", "lightgcn", "bpr"):
        assert rules, f"{name}: no field declares a range"
    for field, bounds, choices in rules:
        bad = _bad_value(bounds, choices)
        if hints[field] is int and isinstance(bad, float):
            bad = int(bad)
        with pytest.raises(ConfigError, match=f"^{field} must be"):
            config(**{field: bad})


def test_cross_field_checks_still_run_in_wrapped_configs():
    cls = get_plugin("befa")(registered_models()["metammf"])
    with pytest.raises(ConfigError, match="id_dim must be in"):
        cls.Config(id_dim=64, embedding_dim=64)
    with pytest.raises(ConfigError, match=r"befa_dropout must be in \[0, 1\)"):
        cls.Config(befa_dropout=1.0)
