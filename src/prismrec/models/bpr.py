"""BPR matrix factorisation (Rendle et al., UAI 2009), as in MMRec."""
from __future__ import annotations

from dataclasses import dataclass

from prismrec.config import tunable
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import bpr_loss, dot, emb_loss, xavier_param


@dataclass(frozen=True)
class BPRConfig(ModelConfig):
    embedding_dim: int = 64
    reg_weight: float = tunable(1e-4, 1e-6, 1e-1, log=True)  # MMRec grid {1e-5..1e-1}


@register("bpr")
class BPR(Model):
    """Matrix factorisation trained with the BPR loss.

    `BPR: Bayesian Personalized Ranking from Implicit Feedback <https://arxiv.org/abs/1205.2618>`_

    .. math::
        \\hat y_{ui} = e_u^\\top e_i, \\quad
        L = -\\log \\sigma(\\hat y_{ui} - \\hat y_{uj}) + \\lambda \\,\\mathrm{EmbLoss}(e_u, e_i, e_j)

    Shapes:
        user embeddings [n_users, d], item embeddings [n_items, d].
    """

    description = "Matrix factorisation with the BPR pairwise loss (ID only)"
    Config = BPRConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json

    def setup(self, dataset):
        d = self.config.embedding_dim
        self.user_emb = xavier_param(self.n_users, d)
        self.item_emb = xavier_param(self.n_items, d)

    def loss(self, batch):
        u, p, n = self.user_emb[batch.users], self.item_emb[batch.pos_items], self.item_emb[batch.neg_items]
        return bpr_loss(dot(u, p), dot(u, n)) + self.config.reg_weight * emb_loss(u, p, n)

    def embeddings(self):
        return self.user_emb, self.item_emb
