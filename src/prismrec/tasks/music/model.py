"""The contract every music-matching model follows, and the registry of those models.

A model embeds videos and tracks from their content features into one space and scores a pair by
a similarity there (``dot``, ``cosine`` or ``neg_sqdist``, see :func:`metrics.similarity`). Ranking,
metrics, training loop and serving are written once, outside the models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn as nn

from prismrec.config import build_config
from prismrec.errors import UnknownNameError

_REGISTRY: dict[str, type["MatchModel"]] = {}


class MatchBatch(NamedTuple):
    """Matched (video, track) pairs: internal indices and their (standardised) content features."""

    videos: torch.Tensor                      # int64 [B]
    tracks: torch.Tensor                      # int64 [B]
    video_features: dict[str, torch.Tensor]   # modality -> [B, d_m]
    track_features: dict[str, torch.Tensor]   # modality -> [B, d_m]


class FeatureNorm(nn.Module):
    """Per-modality standardisation with statistics of the training rows, kept as buffers."""

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        for m, d in dims.items():
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"std_{m}", torch.ones(d))

    def fit(self, feats: dict[str, np.ndarray]) -> None:
        for m, f in feats.items():
            getattr(self, f"mean_{m}").copy_(torch.as_tensor(f.mean(0)))
            getattr(self, f"std_{m}").copy_(torch.as_tensor(f.std(0) + 1e-6))

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: (x - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}") for m, x in feats.items()}


class MatchModel(nn.Module):
    """Base class: embeds videos and tracks by content.

    Args:
        config: the model's ``Config`` dataclass.
        video_dims, track_dims: modality -> feature dimension on each side.
        n_tracks: catalogue size (used by ID-based rankers such as popularity).

    Subclasses define ``name``, ``description``, ``Config``, ``loss(batch)``, ``embed_videos(feats)``
    and ``embed_tracks(feats)``; ``similarity`` names how embeddings are compared. Features given to
    ``embed_*`` are raw (the model standardises them); a video may lack some modalities.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type]
    trainable: ClassVar[bool] = True

    def __init__(self, config, video_dims: dict[str, int], track_dims: dict[str, int], n_tracks: int):
        super().__init__()
        self.config, self.n_tracks = config, n_tracks
        self.video_dims, self.track_dims = dict(video_dims), dict(track_dims)
        self.video_norm, self.track_norm = FeatureNorm(video_dims), FeatureNorm(track_dims)

    @property
    def similarity(self) -> str:
        return "dot"

    def setup(self, dataset) -> None:
        """Once before training: statistics of the training videos (and of all tracks)."""
        train = dataset.videos("train")
        self.video_norm.fit({m: f[train] for m, f in dataset.video_features.items()})
        self.track_norm.fit(dataset.track_features)

    def on_epoch_start(self, epoch: int) -> None:
        """Hook before each epoch (KL warm-up etc.)."""

    def loss(self, batch: MatchBatch) -> torch.Tensor:
        raise NotImplementedError

    def embed_videos(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw video features (any non-empty subset of the modalities) -> embeddings ``[N, K]``."""
        raise NotImplementedError

    def embed_tracks(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw features of all tracks -> embeddings ``[n_tracks, K]``."""
        raise NotImplementedError

    def check_modalities(self, feats: dict[str, torch.Tensor], side: str) -> dict[str, torch.Tensor]:
        """Known modalities only, at least one; a wrong dimension names the modality."""
        dims = self.video_dims if side == "video" else self.track_dims
        unknown = set(feats) - set(dims)
        if unknown:
            raise ValueError(f"unknown {side} modality {sorted(unknown)}; this model knows {sorted(dims)}")
        if not feats:
            raise ValueError(f"no {side} features given; expected at least one of {sorted(dims)}")
        for m, x in feats.items():
            if x.ndim != 2 or x.shape[1] != dims[m]:
                raise ValueError(f"{side} modality '{m}': expected features [N, {dims[m]}], got {list(x.shape)}")
        return feats


def register(cls: type[MatchModel]) -> type[MatchModel]:
    """Class decorator: make a model available by ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    from prismrec.tasks.music import cmvae, dual_encoder, pop  # noqa: F401  (registers the built-in models)


def registered() -> dict[str, type[MatchModel]]:
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


def model_class(name: str) -> type[MatchModel]:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown music model '{name}'; known: {', '.join(registered())}") from None


def build(name: str, values: dict, video_dims: dict[str, int], track_dims: dict[str, int],
          n_tracks: int) -> MatchModel:
    """Model ``name`` with its config built from ``values`` (strings allowed; unknown keys are errors)."""
    cls = model_class(name)
    return cls(build_config(cls.Config, values, f"'{name}' model"), video_dims, track_dims, n_tracks)


@dataclass(frozen=True)
class NoConfig:
    """For models without settings."""


__all__ = ["MatchBatch", "MatchModel", "FeatureNorm", "register", "registered", "model_class", "build",
           "NoConfig"]
