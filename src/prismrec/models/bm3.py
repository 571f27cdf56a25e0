"""BM3 (Zhou et al., WWW 2023), as in MMRec."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosInt, Rate, tunable
from prismrec.graphs import SparseMatrix, bipartite_adjacency, propagate
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import chunked_rows, emb_loss, xavier_param


@dataclass(frozen=True)
class BM3Config(ModelConfig):
    embedding_dim: PosInt = 64
    num_layers: NonNegInt = tunable(1, 1, 2)                                    # MMRec n_layers {1, 2}
    reg_weight: NonNegFloat = tunable(0.1, 0.01, 0.1, log=True, choices=(0.1, 0.01))
    dropout: Rate = tunable(0.5, 0.3, 0.5, choices=(0.3, 0.5))                  # target-view dropout
    cl_weight: NonNegFloat = 2.0                                                # weight of the modality losses


def _neg_cos(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean cos(online, target)`` with the target as a constant."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


@register("bm3")
class BM3(Model):
    """Bootstrapped multimodal recommendation: no negatives, a dropout target view and a predictor.

    `Bootstrap Latent Representations for Multi-modal Recommendation
    <https://arxiv.org/abs/2207.05969>`_

    .. math::
        [h_U; \\bar h_I] = \\mathrm{LightGCN}(\\hat A, [E_U; E_I]), \\quad h_I = \\bar h_I + E_I, \\quad
        h^{(m)}_i = W_m f^{(m)}_i + b_m, \\quad \\tilde x = \\mathrm{sg}(\\mathrm{dropout}(x))

        \\mathcal L = c(p(h_u), \\tilde h_i) + c(p(h_i), \\tilde h_u)
            + \\lambda_{cl} \\sum_m \\big[c(p(h^{(m)}_i), \\tilde h_i) + c(p(h^{(m)}_i), \\tilde h^{(m)}_i)\\big]
            + \\lambda \\, \\frac{\\lVert h_U \\rVert + \\lVert h_I \\rVert}{n_{items}}

    with ``c(a, b) = 1 - cos(a, b)`` averaged over the batch of observed (u, i) pairs and ``p`` the
    shared linear predictor. Score: ``p(h_u)ᵀ p(h_i)``. Negatives of the sampler are ignored.
    The predictor and the projections are row-wise, so only the batch's rows go through them:
    MMRec's gradients without projecting all items' features every batch. Dropout masks are drawn
    once per distinct user/item of the batch, as MMRec's whole-table dropout then indexing does.
    As in the paper, the raw features are fixed (MMRec also lets Adam update them).

    Shapes:
        E_U [n_users, d]; E_I [n_items, d]; W_m [d_m, d]; p: [d, d].
    """

    description = "BM3: self-supervised bootstrap of graph and modality views, no negative sampling"
    Config = BM3Config
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        d = self.config.embedding_dim
        self.user_emb = xavier_param(self.n_users, d)
        self.item_emb = xavier_param(self.n_items, d)
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.proj = nn.ModuleDict({m: nn.Linear(dim, d) for m, dim in self.feature_dims().items()})
        for layer in self.proj.values():
            nn.init.xavier_normal_(layer.weight)
        self.adj = SparseMatrix(bipartite_adjacency(dataset.train), symmetric=True)

    def online(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs before the predictor: ``(h_U [n_users, d], h_I [n_items, d])``."""
        e = propagate(self.adj, torch.cat([self.user_emb, self.item_emb]), self.config.num_layers)
        return e[: self.n_users], e[self.n_users:] + self.item_emb

    def behaviour_embedding(self, items=None):
        return self.item_emb if items is None else self.item_emb[items]

    def embeddings(self):
        u, i = self.online()
        return self.predictor(u), self.predictor(i)

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.dropout(x, self.config.dropout, training=True)

    def loss(self, batch):
        cfg = self.config
        h_u, h_i = self.online()
        users, u_inv = torch.unique(batch.users, return_inverse=True)
        items, i_inv = torch.unique(batch.pos_items, return_inverse=True)
        hu, hi = h_u[users], h_i[items]                                  # [U_b, d], [I_b, d]
        t_u, t_i = self._target(hu)[u_inv], self._target(hi)[i_inv]      # [B, d]
        p_u, p_i = self.predictor(hu)[u_inv], self.predictor(hi)[i_inv]  # [B, d]
        loss = _neg_cos(p_u, t_i) + _neg_cos(p_i, t_u)
        cl = 0.0
        for m in self.modalities:
            z = chunked_rows(lambda s, m=m: self.proj[m](self.features(m, items[s])), len(items),
                             self.proj[m].in_features)                   # [I_b, d]
            p_m, t_m = self.predictor(z)[i_inv], self._target(z)[i_inv]
            cl = cl + _neg_cos(p_m, t_i) + _neg_cos(p_m, t_m)
        return loss + cfg.reg_weight * emb_loss(h_u, h_i) + cfg.cl_weight * cl
