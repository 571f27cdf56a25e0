"""Contrastive dual encoder (two towers trained with InfoNCE), the discriminative baseline."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from prismrec.config import Checked, PosFloat, PosInt, Rate, tunable
from prismrec.tasks.music.layers import mlp, symmetric_info_nce
from prismrec.tasks.music.model import MatchBatch, MatchModel, register


@dataclass(frozen=True)
class DualEncoderConfig(Checked):
    embedding_dim: PosInt = tunable(64, 16, 256, log=True)
    hidden: tuple[int, ...] = (512, 256)   # same widths as CMVAE's encoders, for a fair comparison
    dropout: Rate = tunable(0.2, 0.0, 0.5)
    temperature: PosFloat = tunable(0.07, 0.02, 0.5, log=True)   # CLIP's initial value

    def validate(self):
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be widths >= 1 (at least one), got {self.hidden}")


class Tower(nn.Module):
    """Per-modality input projections averaged over the available modalities, then an MLP.

    Averaging (rather than concatenating) lets a tower embed an input that lacks a modality.
    """

    def __init__(self, dims: dict[str, int], hidden: tuple[int, ...], out_dim: int, dropout: float):
        super().__init__()
        self.inputs = nn.ModuleDict({m: nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden[0]))
                                     for m, d in dims.items()})
        self.body = nn.Sequential(nn.ReLU(), mlp([*hidden, out_dim], dropout))

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        h = torch.stack([self.inputs[m](x) for m, x in feats.items()]).mean(0)   # [B, hidden[0]]
        return self.body(h)                                                       # [B, out_dim]


@register
class DualEncoder(MatchModel):
    """Video tower ``f`` and track tower ``g`` trained with symmetric in-batch InfoNCE.

    .. math::
        \\mathcal{L} = -\\tfrac12 \\sum_i \\Big[\\log \\frac{e^{c(f_i, g_i)/T}}{\\sum_j e^{c(f_i, g_j)/T}}
        + \\log \\frac{e^{c(f_i, g_i)/T}}{\\sum_j e^{c(f_j, g_i)/T}}\\Big]

    with ``c`` the cosine similarity. A track used by several videos of a batch is not its own
    negative. Scores are cosine similarities.

    Shapes:
        embed_videos: [N, d_m] per modality -> [N, embedding_dim]; embed_tracks likewise.
    """

    name = "dual-encoder"
    description = "two-tower contrastive (InfoNCE) content matcher"
    Config = DualEncoderConfig

    def __init__(self, config, video_dims, track_dims, n_tracks):
        super().__init__(config, video_dims, track_dims, n_tracks)
        c = config
        self.video_tower = Tower(video_dims, c.hidden, c.embedding_dim, c.dropout)
        self.track_tower = Tower(track_dims, c.hidden, c.embedding_dim, c.dropout)

    @property
    def similarity(self) -> str:
        return "cosine"

    def loss(self, batch: MatchBatch) -> torch.Tensor:
        v = self.video_tower(self.video_norm(batch.video_features))
        t = self.track_tower(self.track_norm(batch.track_features))
        same = batch.tracks[:, None] == batch.tracks[None, :]
        return symmetric_info_nce(v, t, self.config.temperature, same)

    def embed_videos(self, feats):
        return self.video_tower(self.video_norm(self.check_modalities(feats, "video")))

    def embed_tracks(self, feats):
        return self.track_tower(self.track_norm(self.check_modalities(feats, "track")))
