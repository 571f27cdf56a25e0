"""DRAGON (Zhou et al., ECAI 2023), as in the authors' code / MMRec."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from prismrec.config import NonNegFloat, NonNegInt, PosInt, UnitFloat, tunable
from prismrec.graphs import SampledUserGraph, SparseMatrix, modality_graph, propagate
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.dualgnn import PreferenceGCN
from prismrec.models.freedom import modality_weights
from prismrec.models.layers import Precision, dot, log2_bpr_loss


@dataclass(frozen=True)
class DRAGONConfig(ModelConfig):
    embedding_dim: PosInt = 64      # per-modality representation size (the code's dim_latent)
    hidden_mult: PosInt = 4         # feature MLP: d_m -> hidden_mult·d -> d
    num_ui_layers: NonNegInt = 2    # heterogeneous-graph convolutions (config n_layers; fixed at 2 in the code)
    num_mm_layers: PosInt = 1       # item-item propagation steps (config n_mm_layers)
    knn_k: PosInt = 10
    mm_image_weight: UnitFloat = 0.1
    modality_weights: tuple[float, ...] = ()   # explicit item-graph weights in modality order; () = as FREEDOM
    user_knn_k: PosInt = 40         # co-occurring users sampled per user each epoch (the code's k)
    aggr_mode: Literal["add", "mean"] = "add"  # "add": D^-1/2 A D^-1/2 sums; "mean": neighbour means
    reg_weight: NonNegFloat = tunable(1e-3, 1e-5, 1e-1, log=True, choices=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5))
    # precision of the wide feature-MLP products (see MGCNConfig.feature_precision)
    feature_precision: Precision = "auto"


@register("dragon")
class DRAGON(PreferenceGCN, Model):
    """Dual representations on a heterogeneous user-item graph plus homogeneous user-user and
    item-item graphs.

    `Enhancing Dyadic Relations with Homogeneous Graphs for Multimodal Recommendation
    <https://arxiv.org/abs/2301.12097>`_

    .. math::
        x_m = \\mathrm{norm}([P_m;\\ W_{2,m}\\,\\mathrm{LeakyReLU}(W_{1,m} X_m)]), \\quad
        r_m = \\sum_{l=0}^{L} \\hat A^l x_m

        u = \\Vert_m\\, \\beta_{u,m}\\, r_{m,u}, \\quad i = \\Vert_m\\, r_{m,i}, \\quad
        e_u = u + \\sum_{v \\in N_k(u)} \\mathrm{softmax}_v(c_{uv})\\, v, \\quad
        e_i = i + (S^{L_m} [i])_i, \\quad S = \\sum_m w_m\\, \\mathrm{norm}(\\mathrm{kNN}_k(X_m))

        \\mathcal L = -\\frac{1}{B}\\sum \\log_2 \\sigma(e_u^\\top e_{i^+} - e_u^\\top e_{i^-})
            + \\lambda \\big(\\sum_m \\overline{P_{m,u}^2} + \\overline{\\beta^2}\\big)

    ``Â`` is the normalised user-item graph (``aggr_mode``), ``P_m`` a user preference table per
    modality, ``β`` a per-user modality weight (initialised to a softmax, as the code), ``c_uv`` the
    number of training items users ``u`` and ``v`` share and ``N_k(u)`` ``user_knn_k`` of the user's
    most co-occurring users (MMRec's ``user_graph_dict``: the top 200, of which the code reads the
    first 40), drawn again each epoch: a user with fewer is padded with repeats of its own
    neighbours. ``∥`` concatenates the modalities, so the scores are ``M·d``-dimensional.

    Choices where paper and code differ, or the code is silent: the code (followed here) uses the
    two modalities' concatenation (``construction='cat'``) and the user weights ``β`` only then;
    with one modality there is no ``β``. The raw features are fixed: the code also builds trainable
    copies (``from_pretrained(freeze=False)``) and projections that its forward never reads.
    Scoring uses the current parameters (MMRec reuses the last training batch's forward). The
    sampled user graph is kept in persistent buffers, so a loaded bundle scores as the trained model.

    Shapes:
        X_m [n_items, d_m]; P_m [n_users, d]; x_m, r_m [n_users + n_items, d]; e_u, e_i [M·d].
    """

    description = "DRAGON: user-user co-occurrence + modality item-item graphs beside the user-item graph"
    Config = DRAGONConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg, d = self.config, self.config.embedding_dim
        self.init_preference_gcn(dataset, d, cfg.hidden_mult, cfg.aggr_mode, cfg.feature_precision)
        weights = modality_weights(self.modalities, cfg.mm_image_weight, cfg.modality_weights)
        raw = {m: self.features(m).detach().numpy() for m in self.modalities}
        self.item_graph = SparseMatrix(sum(w * modality_graph(raw[m], cfg.knn_k, weighted=False)
                                           for m, w in zip(self.modalities, weights)), symmetric=False)
        self.user_graph = SampledUserGraph(dataset.train, cfg.user_knn_k)  # persistent: bundles keep the sample

    def on_epoch_start(self, epoch):
        """A fresh user-user sample for the epoch, from torch's global RNG (MMRec's pre_epoch_processing)."""
        self.user_graph.resample()

    def dual_reps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u [N, M·d], i [I, M·d])`` before the homogeneous graphs."""
        reps = [self.modality_rep(m, self.config.num_ui_layers) for m in self.modalities]
        n = self.n_users
        if len(reps) == 1:
            return reps[0][:n], reps[0][n:]
        users = torch.cat([r[:n] * self.user_weight[:, k: k + 1] for k, r in enumerate(reps)], dim=1)
        return users, torch.cat([r[n:] for r in reps], dim=1)

    def item_side(self, items: torch.Tensor) -> torch.Tensor:
        """``e_I = i + S^{L_m} i`` ``[I, M·d]``."""
        return items + propagate(self.item_graph, items, self.config.num_mm_layers, mean=False)

    def embeddings(self):
        users, items = self.dual_reps()
        return users + self.user_graph.matrix() @ users, self.item_side(items)

    def loss(self, batch):
        cfg = self.config
        users, items = self.dual_reps()
        ids, at = torch.unique(batch.users, return_inverse=True)
        e_u = (users[ids] + self.user_graph.matrix(ids) @ users)[at]   # [B, M·d]; the batch's rows of the user graph
        e_i = self.item_side(items)
        margin = dot(e_u, e_i[batch.pos_items]) - dot(e_u, e_i[batch.neg_items])
        loss = log2_bpr_loss(margin)
        reg = sum(self.preference[m][batch.users].pow(2).mean() for m in self.modalities)
        if len(self.modalities) > 1:
            reg = reg + self.user_weight.pow(2).mean()
        return loss + cfg.reg_weight * reg
