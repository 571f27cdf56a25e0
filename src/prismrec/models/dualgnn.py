"""DualGNN (Wang et al., IEEE TMM 2021), with MMRec's semantics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosInt, tunable
from prismrec.graphs import SampledUserGraph, SparseMatrix, bipartite_adjacency, mean_aggregators, propagate
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import WIDE, Precision, dot, log2_bpr_loss, project_fixed, resolve_precision, xavier_normal_param


@dataclass(frozen=True)
class DualGNNConfig(ModelConfig):
    # defaults: MMRec's DualGNN.yaml (first value of each grid) and the constants of its model file;
    # the learning rate is the trainer's (the yaml's grid 0.1 .. 1e-5 is a tuning range, as GRCN's)
    embedding_dim: PosInt = 64     # embedding_size (the code's dim_latent is 64 too)
    hidden_mult: PosInt = 4        # feature MLP: d_m -> hidden_mult·d -> d
    num_layers: NonNegInt = 2      # user-item propagations per modality: two in the code (its num_layer=1 is unread)
    user_knn_k: PosInt = 40        # co-occurring users per user (the code's k)
    aggr_mode: Literal["add", "mean"] = "add"  # "add": D^-1/2 A D^-1/2 sums; "mean": neighbour means
    reg_weight: NonNegFloat = tunable(0.1, 1e-5, 1e-1, log=True, choices=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5))
    feature_precision: Precision = "auto"  # wide feature-MLP products in bf16 ("auto": where native)


class PreferenceGCN:
    """Mixin: the single-modality graph networks DualGNN introduced and DRAGON keeps.

    Per modality ``m`` a free user preference table ``P_m`` and a two-layer feature MLP give
    ``x_m = ℓ2([P_m; W_2 LeakyReLU(W_1 X_m + b_1) + b_2])``, summed over ``L`` propagations on the
    user-item graph: ``r_m = Σ_{l≤L} Â^l x_m`` (``Â`` as ``aggr_mode``: ``"add"`` the symmetric
    normalisation, ``"mean"`` neighbour means on both sides). With several modalities the users also
    get modality weights ``w [N, M]``, initialised to a softmax of Xavier-normal draws.
    """

    def init_preference_gcn(self, dataset, d: int, hidden_mult: int, aggr_mode: str, precision: str) -> None:
        if aggr_mode == "add":
            self.adj = SparseMatrix(bipartite_adjacency(dataset.train), symmetric=True)
        else:  # PyG mean aggregation on both sides of the bipartite graph
            ui, iu = mean_aggregators(dataset.train)
            self.adj = SparseMatrix(sp.bmat([[None, ui.scipy], [iu.scipy, None]], format="csr"), symmetric=False)
        self.preference = nn.ParameterDict({m: xavier_normal_param(self.n_users, d) for m in self.modalities})
        hidden = hidden_mult * d
        self.mlp_in = nn.ModuleDict({m: nn.Linear(dim, hidden) for m, dim in self.feature_dims().items()})
        self.mlp_out = nn.ModuleDict({m: nn.Linear(hidden, d) for m in self.modalities})
        if len(self.modalities) > 1:
            w = nn.init.xavier_normal_(torch.empty(self.n_users, len(self.modalities), 1))
            self.user_weight = nn.Parameter(torch.softmax(w, dim=1).squeeze(2))     # [N, M]
        low = resolve_precision(precision) == torch.bfloat16
        self.bf16 = {m: low and dim >= WIDE for m, dim in self.feature_dims().items()}
        self._bf16_cache: dict = {}

    def modality_rep(self, m: str, layers: int) -> torch.Tensor:
        """``r_m = Σ_{l≤L} Â^l x_m`` ``[N + I, d]``."""
        hidden = F.leaky_relu(project_fixed(self.features(m), self.mlp_in[m].weight, self.mlp_in[m].bias,
                                            self._bf16_cache, m, self.bf16[m]))           # [I, h·d]
        x = F.normalize(torch.cat([self.preference[m], self.mlp_out[m](hidden)]), dim=1)  # [N + I, d]
        return propagate(self.adj, x, layers) * (layers + 1)  # the layers' sum, not their mean


@register("dualgnn")
class DualGNN(PreferenceGCN, Model):
    """One graph network per modality on the user-item graph, fused by per-user modality weights,
    then smoothed over a user co-occurrence graph.

    `DualGNN: Dual Graph Neural Network for Multimedia Recommendation
    <https://doi.org/10.1109/TMM.2021.3138298>`_ (IEEE TMM 2021), as re-implemented in MMRec
    (``models/dualgnn.py``). Per modality ``m``, with a free user preference table ``P_m``:

    .. math::
        x_m = \\ell_2\\big([P_m;\\ W_{2,m}\\,\\mathrm{LeakyReLU}(W_{1,m} X_m + b_{1,m}) + b_{2,m}]\\big),
        \\quad r_m = \\sum_{l=0}^{L} \\hat A^l x_m

        u = w_{u,1} \\sum_{m=1}^{M} r_{m,u} + \\sum_{m=2}^{M} w_{u,m}\\, r_{m,u}, \\quad
        i = \\sum_{m=1}^{M} r_{m,i}

        e_u = u + \\sum_{v \\in N_k(u)} \\mathrm{softmax}_v(c_{uv})\\, v, \\quad \\hat y_{ui} = e_u^\\top i

        \\mathcal L = -\\frac{1}{B}\\sum \\log_2 \\sigma(\\hat y_{ui^+} - \\hat y_{ui^-})
            + \\lambda \\big(\\sum_m \\overline{P_{m,u}^2} + \\overline{w^2}\\big)

    ``Â`` is the user-item graph (``aggr_mode``), ``w [N, M]`` per-user modality weights
    (initialised to a softmax over modalities), ``c_uv`` the number of training items users ``u``
    and ``v`` share and ``N_k(u)`` the ``user_knn_k`` users sharing the most (a user with fewer is
    padded with repeats of its own, drawn again each epoch; :class:`prismrec.graphs.SampledUserGraph`).

    Where the paper and MMRec's code differ, this follows the code. The single-modal module is a
    parameter-free sum of ``L = 2`` propagations of the normalised ``[P_m; MLP(X_m)]``. The fusion is
    the code's ``weighted_sum``, in which an in-place sum makes the first modality's slot the sum of
    all modalities (hence ``w_{u,1}`` weighs ``Σ_m r_m``, not ``r_1`` as in the paper's weighted
    sum); items sum their modalities unweighted, and the code's item weights, which only its
    regulariser reads, are left out (they change no score). The code builds per-modality graphs
    with 10% of the items' edges dropped (``drop_rate``, the paper's defence against missing
    modalities) but its forward never reads them, so there is no dropout here. The user graph has one
    layer with softmax weights (``user_aggr_mode='softmax'``). With one modality there are no
    weights ``w``. Scoring uses the current parameters and user graph (MMRec reuses the last training
    batch's forward). MMRec's two modalities (image, text) are generalised to any number, in the
    dataset's order (image before text in an MMRec folder, as in MMRec).

    Speed: the feature MLP's wide first products run in bf16 where the CPU has it natively
    (``feature_precision``); the user graph is a CSR product over only the batch's rows.

    Shapes:
        X_m [n_items, d_m]; P_m [n_users, d]; x_m, r_m [n_users + n_items, d]; w [n_users, M];
        e_u, i [d].
    """

    description = "DualGNN: per-modality GCNs fused by per-user weights, plus a user co-occurrence graph"
    Config = DualGNNConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg = self.config
        self.init_preference_gcn(dataset, cfg.embedding_dim, cfg.hidden_mult, cfg.aggr_mode, cfg.feature_precision)
        self.user_graph = SampledUserGraph(dataset.train, cfg.user_knn_k)

    def on_epoch_start(self, epoch):
        """A fresh user-graph draw for the epoch, from torch's global RNG (MMRec's pre_epoch_processing)."""
        self.user_graph.resample()

    def fused(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(u [N, d], [r_{m,I} [I, d] per modality])``: the fused users before the user graph and
        each modality's item part (``i`` is their sum)."""
        reps, n = [self.modality_rep(m, self.config.num_layers) for m in self.modalities], self.n_users
        items = [r[n:] for r in reps]
        if len(reps) == 1:
            return reps[0][:n], items
        w = self.user_weight
        users = w[:, :1] * sum(r[:n] for r in reps)   # MMRec's in-place sum: slot 1 holds every modality
        for k in range(1, len(reps)):
            users = users + w[:, k: k + 1] * reps[k][:n]
        return users, items

    def embeddings(self):
        users, items = self.fused()
        return users + self.user_graph.matrix() @ users, sum(items)

    def loss(self, batch):
        users, parts = self.fused()
        items = sum(parts)                                                  # [I, d]
        ids, at = torch.unique(batch.users, return_inverse=True)
        e_u = (users[ids] + self.user_graph.matrix(ids) @ users)[at]       # [B, d]
        margin = dot(e_u, items[batch.pos_items]) - dot(e_u, items[batch.neg_items])
        loss = log2_bpr_loss(margin)
        reg = sum(self.preference[m][batch.users].pow(2).mean() for m in self.modalities)
        if len(self.modalities) > 1:
            reg = reg + self.user_weight.pow(2).mean()
        return loss + self.config.reg_weight * reg

    def modality_contributions(self, users, items):
        """Each modality's share of the score, ``e_u · r_{m,i}`` (the item side sums the modalities)."""
        with self.evaluating():
            fused, parts = self.fused()
            e_u = (fused + self.user_graph.matrix() @ fused)[users]
            return {m: dot(e_u, p[items]) for m, p in zip(self.modalities, parts)}
