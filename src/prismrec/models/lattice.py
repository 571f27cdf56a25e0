"""LATTICE (Zhang et al., ACM MM 2021), as in MMRec (``cf_model: lightgcn``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosFloat, PosInt, UnitFloat, tunable
from prismrec.graphs import (
    SparseMatrix,
    bipartite_adjacency,
    knn_topk,
    modality_graph,
    propagate,
)
from prismrec.models.base import JointTable, Model, ModelConfig, register
from prismrec.models.layers import dot, l2_loss


@dataclass(frozen=True)
class LATTICEConfig(ModelConfig):
    embedding_dim: PosInt = 64
    feat_embed_dim: PosInt = 64                               # projected features the learned graphs come from
    num_ui_layers: PosInt = 2                                 # len(weight_size)
    num_ii_layers: NonNegInt = 1                              # config n_layers
    knn_k: PosInt = 10
    lambda_coeff: UnitFloat = 0.9                             # weight of the fixed raw-feature graph
    reg_weight: NonNegFloat = tunable(1e-4, 1e-5, 1e-3, log=True)  # MMRec grid {0, 1e-5, 1e-4, 1e-3}
    reg_batch_size: PosInt = 2048  # the code divides the L2 term by the configured batch size
    lr_decay: PosFloat = 0.96   # learning_rate_scheduler [0.96, 50]: lr · 0.96^(epoch/50)
    lr_decay_epochs: PosInt = 50


Edges = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # rows [E], cols [E], values [E]; duplicates add up


def _edges(m: sp.csr_matrix) -> Edges:
    coo = m.tocoo()
    return torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64)), \
        torch.from_numpy(coo.data.astype(np.float32))


def _sym_normalize(edges: Edges, n: int) -> Edges:
    """``D^{-1/2} S D^{-1/2}`` with D the row sums of S (differentiable in the values)."""
    rows, cols, vals = edges
    deg = vals.new_zeros(n).index_add_(0, rows, vals)
    dinv = deg.pow(-0.5).masked_fill_(deg == 0, 0.0)
    return rows, cols, vals * dinv[rows] * dinv[cols]


def _spmm(edges: Edges, x: torch.Tensor) -> torch.Tensor:
    """``S @ x`` from an edge list, differentiable in the values and in ``x``."""
    rows, cols, vals = edges
    return torch.zeros_like(x).index_add_(0, rows, vals[:, None] * x[cols])


@register("lattice")
class LATTICE(JointTable, Model):
    """LightGCN plus item-item propagation over learned modality graphs.

    `Mining Latent Structures for Multimedia Recommendation <https://arxiv.org/abs/2104.09036>`_

    .. math::
        \\hat S_m = \\mathrm{kNN}_k(\\cos(X_m W_m)), \\quad
        S = (1-\\lambda)\\, D^{-1/2} \\Big(\\sum_m \\alpha_m \\hat S_m\\Big) D^{-1/2}
            + \\lambda \\sum_m \\alpha_m S_m^0, \\quad \\alpha = \\mathrm{softmax}(w)

        e_u = \\mathrm{LightGCN}_u, \\quad e_i = \\mathrm{LightGCN}_i + \\frac{S^L E_i^{id}}{\\lVert S^L E_i^{id} \\rVert}

    ``S_m^0`` is the sym-normalised weighted top-k cosine graph of the raw features (fixed);
    kNN graphs keep the similarity values (MMRec's ``build_knn_neighbourhood``). The LightGCN
    backbone uses MMRec's ``D^{-1}(A + I)`` adjacency. As in MMRec the item graph is rebuilt in the
    first batch of each epoch (the only batch whose gradient reaches the projections, the raw
    feature tables and ``w``) and held fixed for the others.

    Unlike MMRec (a dense ``I x I`` graph rebuilt for every evaluation batch), the learned graph is
    built by blocked top-k, kept sparse (≤ 2k|M| entries per row), and built once per evaluation.

    Shapes:
        [E_u; E_i^{id}] [n_users + n_items, d]; X_m [n_items, d_m]; W_m [d_m, feat_embed_dim]; S sparse [n_items²].
    """

    description = "LATTICE: LightGCN + item-item propagation over learned modality kNN graphs"
    Config = LATTICEConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True
    train_defaults: ClassVar[dict] = {"learning_rate": 5e-4}
    knn_block_size = 1024  # rows per block of the learned top-k search

    def setup(self, dataset):
        cfg, d = self.config, self.config.embedding_dim
        self.init_joint_table(d)
        a = bipartite_adjacency(dataset.train, normalize=False) + sp.eye(self.n_users + self.n_items, dtype=np.float32)
        self.adj = SparseMatrix(sp.diags(1.0 / np.asarray(a.sum(axis=1)).ravel()) @ a, symmetric=False)
        self.raw_graphs = {}
        for m in self.modalities:
            raw = getattr(self, f"feat_{m}")  # the initial features: fixed graph and table init
            self.raw_graphs[m] = _edges(modality_graph(raw.numpy(), cfg.knn_k, weighted=True))
            setattr(self, f"feat_{m}", nn.Parameter(raw))  # trainable table, as from_pretrained(freeze=False)
        dims = self.feature_dims()
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], cfg.feat_embed_dim) for m in self.modalities})
        self.modal_weight = nn.Parameter(torch.full((len(self.modalities),), 1.0 / len(self.modalities)))
        self._fixed: SparseMatrix | None = None  # this epoch's item graph, after its first batch

    def on_epoch_start(self, epoch):
        self._fixed = None

    def learned_knn(self, m: str) -> Edges:
        """Top-k cosine graph of the projected features of ``m``: indices by blocked search, values differentiable."""
        h = self.proj[m](self.features(m))                                         # [I, d']
        k = min(self.config.knn_k, self.n_items)
        cols = knn_topk(h, k, self.knn_block_size)[1].view(-1)                     # [I * k]
        rows = torch.arange(self.n_items, device=h.device).repeat_interleave(k)
        hn = F.normalize(h, dim=1)
        return rows, cols, (hn[rows] * hn[cols]).sum(dim=1)

    def item_graph(self) -> Edges:
        """The mixed item-item graph ``S`` as an edge list (duplicates add up)."""
        lam, alpha = self.config.lambda_coeff, torch.softmax(self.modal_weight, dim=0)
        learned = [self.learned_knn(m) for m in self.modalities]
        learned = _sym_normalize((torch.cat([r for r, _, _ in learned]), torch.cat([c for _, c, _ in learned]),
                                  torch.cat([alpha[k] * v for k, (_, _, v) in enumerate(learned)])), self.n_items)
        raw = [self.raw_graphs[m] for m in self.modalities]
        return (torch.cat([learned[0]] + [r for r, _, _ in raw]), torch.cat([learned[1]] + [c for _, c, _ in raw]),
                torch.cat([(1 - lam) * learned[2]] + [lam * alpha[k] * v for k, (_, _, v) in enumerate(raw)]))

    def _fix(self, edges: Edges) -> SparseMatrix:
        rows, cols, vals = (t.detach().cpu().numpy() for t in edges)
        return SparseMatrix(sp.csr_matrix((vals, (rows, cols)), shape=(self.n_items, self.n_items)),
                            symmetric=False).to(self.device)

    def item_side(self) -> torch.Tensor:
        """``S^L E_i^{id}`` ``[I, d]``. Training: the graph is built in an epoch's first batch (with
        gradient through its values) and reused, fixed, by the others; evaluation: built afresh."""
        h = self.item_emb
        if self.training and self._fixed is not None:
            graph = self._fixed
        else:
            edges = self.item_graph()
            graph = self._fix(edges)
            if self.training:
                self._fixed = graph
                for _ in range(self.config.num_ii_layers):
                    h = _spmm(edges, h)
                return h
        for _ in range(self.config.num_ii_layers):
            h = graph @ h
        return h

    def embeddings(self):
        e = propagate(self.adj, self.embedding, self.config.num_ui_layers)
        return e[: self.n_users], e[self.n_users:] + F.normalize(self.item_side(), dim=1)

    def loss(self, batch):
        users, items = self.embeddings()
        u, p, n = users[batch.users], items[batch.pos_items], items[batch.neg_items]
        reg = l2_loss(u, p, n, denom=self.config.reg_batch_size)
        return -F.logsigmoid(dot(u, p) - dot(u, n)).mean() + self.config.reg_weight * reg
