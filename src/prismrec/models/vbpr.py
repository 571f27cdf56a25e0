"""VBPR (He & McAuley, AAAI 2016), MMRec's version."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prismrec.config import NonNegFloat, PosInt, tunable
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import Precision, bpr_loss, dot, emb_loss, resolve_precision, rows_of, xavier_param


@dataclass(frozen=True)
class VBPRConfig(ModelConfig):
    embedding_dim: PosInt = 64
    reg_weight: NonNegFloat = tunable(1e-4, 1e-5, 2.0, log=True)  # MMRec grid {2.0, 1.0, 1e-1 .. 1e-5}
    # precision of the content projection's inputs: "float32" is MMRec's arithmetic; "bfloat16" keeps
    # a bf16 copy of the features and multiplies with fp32 accumulation (2.5x less time where the
    # CPU has native bf16; same baby-like accuracy, benchmarks/results/baby-like/vbpr*.json);
    # "auto" (default, as MGCN/MMGCN) picks bfloat16 only on such CPUs (AVX512-BF16/AMX) or CUDA
    feature_precision: Precision = "auto"


@register("vbpr")
class VBPR(Model):
    """Matrix factorisation whose item vector also carries a linear projection of its content.

    `VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback
    <https://arxiv.org/abs/1510.01784>`_ (MMRec's variant: no bias terms, all modalities
    concatenated and projected by one linear layer).

    .. math::
        e_i = [\\gamma_i \\,;\\, W [f_i^{(1)}; \\dots; f_i^{(M)}] + b], \\quad \\hat y_{ui} = e_u^\\top e_i

    Only the rows of the batch's items are projected in training: the same gradients as
    projecting the whole catalogue (MMRec) at a fraction of the cost.

    Shapes:
        e_u [n_users, 2d]; γ [n_items, d]; W [Σ d_m, d].
    """

    description = "VBPR: MF + linear projection of the concatenated item features"
    Config = VBPRConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        d = self.config.embedding_dim
        self.user_emb = xavier_param(self.n_users, 2 * d)
        self.item_emb = xavier_param(self.n_items, d)
        # one Linear over the concatenated features, stored per modality: W [f1; f2] = W1 f1 + W2 f2,
        # which saves concatenating the batch's feature rows (the dominant copy); same init bound
        dims = self.feature_dims()
        bound = 1.0 / sum(dims.values()) ** 0.5
        self.proj = nn.ParameterDict({m: nn.Parameter(torch.empty(d, k).uniform_(-bound, bound))
                                      for m, k in dims.items()})
        self.proj_bias = nn.Parameter(torch.empty(d).uniform_(-bound, bound))
        self.low_precision = resolve_precision(self.config.feature_precision) == torch.bfloat16
        if self.low_precision:
            for m in self.modalities:
                self.register_buffer(f"feat16_{m}", self.features(m).bfloat16(), persistent=False)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """``[len(items), 2d]`` item representations (all items when ``items`` is None)."""
        # bf16 only in training (eval, scoring, explanations and cold start use fp32 arithmetic on
        # the learned weights) and only where no plug-in refines the features
        if self.low_precision and self.training and type(self).features is Model.features:
            content = self.proj_bias + sum(
                (_rows(getattr(self, f"feat16_{m}"), items) @ self.proj[m].T.bfloat16()).float()
                for m in self.modalities)
        else:
            content = self.proj_bias + sum(self.features(m, items) @ self.proj[m].T for m in self.modalities)
        ids = self.item_emb if items is None else rows_of(self.item_emb, items)
        return torch.cat([ids, content], dim=1)

    def embed_items(self, features):
        """Unseen items: a zero ID part (an item never trained on) beside the projected content ``[n, 2d]``."""
        feats = self.new_item_features(features)
        content = self.proj_bias + sum(torch.as_tensor(feats[m]).to(self.proj_bias.dtype) @ self.proj[m].T
                                       for m in self.modalities)  # [n, d]
        return torch.cat([content.new_zeros(len(content), self.config.embedding_dim), content], dim=1)

    def behaviour_embedding(self, items=None):
        return self.item_emb if items is None else self.item_emb[items]

    def modality_contributions(self, users, items):
        """Exact additive split of the score: modality ``m`` adds ``θ_u · W_m f_i^{(m)}``.

        The rest of ``ŷ_ui`` (``γ_u·γ_i + θ_u·b``) is the ID part; the parts sum to the score.
        """
        theta = self.user_emb[users, self.config.embedding_dim:]                       # [n, d]
        return {m: dot(theta, self.features(m, items) @ self.proj[m].T) for m in self.modalities}

    def embeddings(self):
        return self.user_emb, self.item_vectors()

    def loss(self, batch):
        b = len(batch.users)
        uniq, inv = torch.unique(torch.cat([batch.pos_items, batch.neg_items]), return_inverse=True)
        items = self.item_vectors(uniq)
        u, p, n = rows_of(self.user_emb, batch.users), rows_of(items, inv[:b]), rows_of(items, inv[b:])
        return bpr_loss(dot(u, p), dot(u, n)) + self.config.reg_weight * emb_loss(u, p, n)


def _rows(t: torch.Tensor, items: torch.Tensor | None) -> torch.Tensor:
    return t if items is None else rows_of(t, items)
