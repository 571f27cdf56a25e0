"""Popularity ranker: every video gets the tracks most used by training videos."""
from __future__ import annotations

import numpy as np
import torch

from prismrec.tasks.music.model import MatchModel, NoConfig, register


@register
class MusicPop(MatchModel):
    """Ranks tracks by how many training videos use them (content is ignored).

    Scores are ``log(1 + count_j)`` through a 1-d dot product (video embedding 1, track embedding the
    score), so popularity runs through the same ranking and serving path as the content models.
    Ties (unused tracks) fall back to catalogue order, as in every ranking here.
    """

    name = "pop"
    description = "most used tracks in training (no content)"
    Config = NoConfig
    trainable = False

    def __init__(self, config, video_dims, track_dims, n_tracks):
        super().__init__(config, video_dims, track_dims, n_tracks)
        self.register_buffer("log_count", torch.zeros(n_tracks))

    def setup(self, dataset) -> None:
        super().setup(dataset)
        self.log_count.copy_(torch.as_tensor(np.log1p(dataset.track_counts("train")), dtype=torch.float32))

    def embed_videos(self, feats):
        n = len(next(iter(self.check_modalities(feats, "video").values())))
        return torch.ones(n, 1)

    def embed_tracks(self, feats):
        return self.log_count[:, None]
