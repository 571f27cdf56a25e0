"""Model-independent preprocessing of a Dataset's item features (the ``feature_norm`` training key).

Real feature files come at very different scales: on TikTok (DiffMM's copy) the image rows have a
mean L2 norm of ~33 and the audio rows ~4.5, so any model that concatenates or sums modalities is
dominated by the larger one before it has learnt anything. ``feature_norm`` rescales every
modality once, before ``Model.setup``, so every model sees the same inputs:

- ``none``: the features as loaded (the default).
- ``l2``: each item row divided by its L2 norm (an all-zero row stays zero).
- ``standardize``: each column shifted to mean 0 and divided by its standard deviation over the
  items (a constant column becomes 0), then each modality divided by ``sqrt(d_m)`` so that its
  mean squared row norm is 1 whatever its width.

The transform is an affine map per modality, ``f' = (f - shift) * scale`` (``l2`` is per row and
has no fitted statistics), described by :class:`FeatureNorm`, which can also be applied to the
features of items that arrive later (cold start) and written to JSON: a bundle keeps it in
``feature_norm.json``, so that ``POST /items`` and :meth:`prismrec.Recommender.embed_items` can
transform a new item's raw features exactly as the training items' were.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

import numpy as np

from prismrec.config import FeatureNorm
from prismrec.data.dataset import Dataset
from prismrec.errors import ConfigError, DataError

FEATURE_NORMS = typing.get_args(FeatureNorm)


def check_feature_norm(mode: str) -> str:
    """``mode`` if it is one of :data:`FEATURE_NORMS`, else a :class:`ConfigError` naming them."""
    if mode not in FEATURE_NORMS:
        raise ConfigError(f"feature_norm must be one of {', '.join(FEATURE_NORMS)}; got {mode!r}")
    return mode


@dataclass(frozen=True)
class FeatureNorm:
    """A fitted per-modality feature transform.

    Attributes:
        mode: one of :data:`FEATURE_NORMS`.
        shift: modality -> ``[d_m]`` value subtracted from each column (``standardize`` only).
        scale: modality -> ``[d_m]`` factor applied after the shift (``standardize`` only).
        input_abs_max: modality -> the largest absolute value of the raw features it was fitted on
            (``l2`` and ``standardize``): the scale new items' raw features are expected at, e.g.
            for the range ``POST /items`` accepts. Empty for a transform rebuilt without it.
    """

    mode: str = "none"
    shift: dict[str, np.ndarray] = field(default_factory=dict)
    scale: dict[str, np.ndarray] = field(default_factory=dict)
    input_abs_max: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: dict[str, np.ndarray], mode: str) -> "FeatureNorm":
        """Fit the statistics of ``mode`` on ``features`` (modality -> ``[n_items, d_m]``)."""
        check_feature_norm(mode)
        if mode == "none":
            return cls(mode)
        abs_max = {m: float(np.abs(f).max(initial=0.0)) for m, f in features.items()}
        if mode != "standardize":
            return cls(mode, input_abs_max=abs_max)
        shift, scale = {}, {}
        for m, f in features.items():
            f = np.asarray(f, dtype=np.float64)
            mean, std = f.mean(axis=0), f.std(axis=0)
            # a constant column carries no information: it maps to 0 rather than to inf or nan
            inv = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0) / np.sqrt(max(f.shape[1], 1))
            shift[m], scale[m] = mean.astype(np.float32), inv.astype(np.float32)
        return cls(mode, shift, scale, abs_max)

    def apply(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The transformed copy of ``features`` (new arrays; the input is not modified)."""
        if self.mode == "none":
            return dict(features)
        out = {}
        for m, f in features.items():
            f = np.asarray(f, dtype=np.float32)
            if self.mode == "l2":
                norms = np.linalg.norm(f, axis=1, keepdims=True)
                out[m] = f / np.where(norms > 0, norms, 1.0)
                continue
            if m not in self.shift:
                raise DataError(f"no fitted feature_norm statistics for modality '{m}' "
                                f"(fitted on {sorted(self.shift)})", field=f"{m} features")
            if f.shape[-1] != len(self.shift[m]):
                raise DataError(f"expected {len(self.shift[m])} columns, got {f.shape[-1]}", field=f"{m} features")
            out[m] = (f - self.shift[m]) * self.scale[m]
        return out

    def to_json(self) -> dict:
        """A JSON-ready description (lists of floats), the inverse of :meth:`from_json`.

        float32 values written as JSON numbers read back bit for bit, so the transform of a loaded
        bundle is the one that was fitted.
        """
        return {"mode": self.mode, "shift": {m: v.tolist() for m, v in self.shift.items()},
                "scale": {m: v.tolist() for m, v in self.scale.items()},
                "input_abs_max": dict(self.input_abs_max)}

    @classmethod
    def from_json(cls, d, *, modalities: dict[str, int] | None = None, file: str | None = None) -> "FeatureNorm":
        """Rebuild and check a :class:`FeatureNorm` written by :meth:`to_json`.

        Args:
            d: the parsed JSON.
            modalities: modality -> dimension the transform must cover exactly (a bundle's), when
                given.
            file: named in errors.

        Raises:
            DataError: naming ``file`` and the field, for anything but an object with a known
                ``mode`` and, for ``standardize``, finite ``shift``/``scale`` vectors of each
                modality's dimension (``input_abs_max``: finite non-negative numbers).
        """
        if not isinstance(d, dict):
            raise DataError(f"expected a JSON object, got {type(d).__name__}", file=file)
        mode = d.get("mode")
        if mode not in FEATURE_NORMS:
            raise DataError(f"expected one of {', '.join(FEATURE_NORMS)}, got {_json_text(mode)}", file=file,
                            field="mode")
        stats = {}
        for key in ("shift", "scale"):
            stats[key] = {m: _vector(v, file, f"{key}.{m}") for m, v in _object(d, key, file).items()}
            if mode == "standardize" and modalities is not None and set(stats[key]) != set(modalities):
                raise DataError(f"expected the modalities {sorted(modalities)}, got {sorted(stats[key])}",
                                file=file, field=key)
            if mode != "standardize" and stats[key]:
                raise DataError(f"expected no statistics for mode {mode!r}, got {sorted(stats[key])}",
                                file=file, field=key)
        if set(stats["shift"]) != set(stats["scale"]):
            raise DataError(f"'shift' has modalities {sorted(stats['shift'])}, 'scale' {sorted(stats['scale'])}",
                            file=file, field="scale")
        for m, v in stats["shift"].items():
            want = (modalities or {}).get(m, len(v))
            for key in ("shift", "scale"):
                if len(stats[key][m]) != want:
                    raise DataError(f"expected {want} numbers (the modality's dimension), got {len(stats[key][m])}",
                                    file=file, field=f"{key}.{m}")
        abs_max = {}
        for m, v in _object(d, "input_abs_max", file).items():
            if type(v) not in (int, float) or not np.isfinite(v) or v < 0:
                raise DataError(f"expected a finite number >= 0, got {_json_text(v)}", file=file,
                                field=f"input_abs_max.{m}")
            abs_max[m] = float(v)
        if modalities is not None and set(abs_max) - set(modalities):
            raise DataError(f"unknown modalities {sorted(set(abs_max) - set(modalities))}; expected some of "
                            f"{sorted(modalities)}", file=file, field="input_abs_max")
        return cls(mode, stats["shift"], stats["scale"], abs_max)


def _json_text(v, limit: int = 80) -> str:
    """``v`` as JSON text, cut to ``limit`` characters, for error messages."""
    return json.dumps(v)[:limit]


def _object(d: dict, key: str, file: str | None) -> dict:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise DataError(f"expected an object of modality -> values, got {_json_text(v)}", file=file, field=key)
    return v


def _vector(v, file: str | None, where: str) -> np.ndarray:
    if not isinstance(v, list) or not all(type(x) in (int, float) for x in v):
        raise DataError(f"expected a list of numbers, got {_json_text(v)}", file=file, field=where)
    arr = np.asarray(v, dtype=np.float64)
    if not np.isfinite(arr).all() or (np.abs(arr) > np.finfo(np.float32).max).any():
        raise DataError("expected finite float32 numbers", file=file, field=where)
    return arr.astype(np.float32)


def normalize_dataset(dataset: Dataset, mode: str) -> tuple[Dataset, FeatureNorm]:
    """``dataset`` with its features transformed by ``mode``, and the fitted transform.

    The statistics are fitted on every item's features: they are content, known for every item
    whether or not it has interactions, so no interaction from valid or test is read.
    ``mode="none"`` (or a dataset without features) returns ``dataset`` itself.
    """
    norm = FeatureNorm.fit(dataset.features, mode)
    if mode == "none" or not dataset.features:
        return dataset, norm
    return dataclasses.replace(dataset, features=norm.apply(dataset.features)), norm
