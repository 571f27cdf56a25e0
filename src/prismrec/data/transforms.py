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
features of items that arrive later (cold start) and written to JSON.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from prismrec.data.dataset import Dataset
from prismrec.errors import ConfigError, DataError

FEATURE_NORMS = ("none", "l2", "standardize")


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
    """

    mode: str = "none"
    shift: dict[str, np.ndarray] = field(default_factory=dict)
    scale: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: dict[str, np.ndarray], mode: str) -> "FeatureNorm":
        """Fit the statistics of ``mode`` on ``features`` (modality -> ``[n_items, d_m]``)."""
        check_feature_norm(mode)
        if mode != "standardize":
            return cls(mode)
        shift, scale = {}, {}
        for m, f in features.items():
            f = np.asarray(f, dtype=np.float64)
            mean, std = f.mean(axis=0), f.std(axis=0)
            # a constant column carries no information: it maps to 0 rather than to inf or nan
            inv = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0) / np.sqrt(max(f.shape[1], 1))
            shift[m], scale[m] = mean.astype(np.float32), inv.astype(np.float32)
        return cls(mode, shift, scale)

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
        """A JSON-ready description (lists of floats), the inverse of :meth:`from_json`."""
        return {"mode": self.mode, "shift": {m: v.tolist() for m, v in self.shift.items()},
                "scale": {m: v.tolist() for m, v in self.scale.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureNorm":
        """Rebuild a :class:`FeatureNorm` written by :meth:`to_json`."""
        mode = check_feature_norm(d.get("mode", "none"))
        return cls(mode, {m: np.asarray(v, dtype=np.float32) for m, v in d.get("shift", {}).items()},
                   {m: np.asarray(v, dtype=np.float32) for m, v in d.get("scale", {}).items()})


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
