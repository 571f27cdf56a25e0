"""SelfCF_ed with a LightGCN encoder (Zhou et al., ACM TORS 2023), as in MMRec."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, PosInt, Rate, UnitFloat, tunable
from prismrec.graphs import SparseMatrix, _index_dtype, bipartite_adjacency, propagate, spmm
from prismrec.models.base import JointTable, Model, ModelConfig, register
from prismrec.models.layers import l2_loss


@dataclass(frozen=True)
class SelfCFEDConfig(ModelConfig):
    # defaults: MMRec's SELFCFED_LGN.yaml, whose grid lists hold one value each; the ranges are the
    # grid of the authors' own SelfCF repository (n_layers 1-4, dropout 0.05-0.2)
    embedding_dim: PosInt = 64
    num_layers: PosInt = tunable(2, 1, 4)
    dropout: Rate = tunable(0.5, 0.05, 0.5, choices=(0.05, 0.1, 0.15, 0.2))   # target-view embedding dropout
    reg_weight: NonNegFloat = 0.0
    edge_dropout: UnitFloat = 1.0   # encoder edge-dropout rate ~ U(0, edge_dropout) per batch (MMRec fixes 1)


class _DroppedGraph:
    """A torch CSR pair ``(A, Aᵀ)`` with the attributes :func:`prismrec.graphs.propagate` reads."""

    def __init__(self, a: torch.Tensor, at: torch.Tensor):
        self.a, self.at = a, at

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return spmm(self.a, x)


class _EdgeDropout:
    """Edge dropout of a fixed normalised graph ``Â`` whose pattern is symmetric, redrawn in torch.

    ``draw(r)`` keeps each stored entry of ``Â`` with probability ``1 - r`` (torch's global RNG),
    scales the kept ones by ``1/(1 - r)`` and returns the result with its transpose as CSR tensors.
    The two directions of an edge are separate entries and are dropped independently.
    """

    def __init__(self, adj: sp.csr_matrix):
        adj = sp.csr_matrix(adj, dtype=np.float32)
        adj.sort_indices()
        ids = sp.csr_matrix((np.arange(1, adj.nnz + 1, dtype=np.float64), adj.indices, adj.indptr), adj.shape)
        flipped = ids.T.tocsr()
        flipped.sort_indices()                     # the same pattern as Â's, as Â's pattern is symmetric
        self.mirror = torch.from_numpy(flipped.data.astype(np.int64) - 1)  # entry k of Âᵀ is entry mirror[k] of Â
        self.itype = torch.int32 if _index_dtype(adj) is np.int32 else torch.int64  # graphs' int32-where-it-fits rule
        self.indptr = torch.from_numpy(adj.indptr.astype(np.int64))
        self.cols = torch.from_numpy(adj.indices).to(self.itype)
        self.values = torch.from_numpy(adj.data)
        self.values_t = self.values[self.mirror]
        self.shape, self.nnz = adj.shape, adj.nnz

    def _csr(self, keep: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
        before = F.pad(keep.cumsum(0), (1, 0))                                  # kept entries before each [nnz + 1]
        crow = before[self.indptr].to(self.itype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(crow, self.cols[keep], values[keep] * scale, self.shape)

    def draw(self, rate: float) -> _DroppedGraph:
        keep = (torch.rand(self.nnz) >= rate).to(self.indptr.device)          # [nnz] in Â's CSR order (CPU draw)
        scale = 1.0 / (1.0 - rate)
        return _DroppedGraph(self._csr(keep, self.values, scale),
                             self._csr(keep[self.mirror], self.values_t, scale))


def _neg_cos(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-mean cos(online, target)`` over the rows."""
    return -F.cosine_similarity(online, target, dim=-1).mean()


@register("selfcfed_lgn")
class SelfCFED(JointTable, Model):
    """Self-supervised CF without negatives: a predictor matches a dropout-perturbed copy of the other side.

    `SelfCF: A Simple Framework for Self-supervised Collaborative Filtering
    <https://arxiv.org/abs/2107.03019>`_

    .. math::
        \\hat A_r = \\tfrac{1}{1-r}\\, M \\odot \\hat A, \\quad M_{nm} \\sim \\mathrm{Bernoulli}(1-r), \\quad
        r \\sim U(0, \\rho), \\quad
        E = \\frac{1}{L+1} \\sum_{l=0}^{L} \\hat A_r^{\\,l} E^{(0)}

        h(e) = W e + b, \\quad \\tilde e = \\mathrm{sg}(\\mathrm{dropout}_p(e))

        \\mathcal L = -\\tfrac12 \\cos(h(e_u), \\tilde e_i) - \\tfrac12 \\cos(h(e_i), \\tilde e_u)
            + \\lambda \\, \\tfrac12 \\big(\\lVert e_u \\rVert^2 + \\lVert e_i \\rVert^2\\big), \\quad
        s(u, i) = h(e_u)^\\top e_i + e_u^\\top h(e_i)

    The cosines are means over the batch's observed (u, i) pairs, the ½‖·‖² term a sum; the
    sampler's negatives are ignored. ``r`` and ``M`` are drawn afresh for every batch (``ρ`` is
    ``edge_dropout``); scoring uses the full graph ``Â`` and no dropout, so ``s`` is the dot
    product of ``[h(e_u); e_u]`` with ``[e_i; h(e_i)]``. Where MMRec's code and the paper differ
    we follow the code: (1) the encoder is BUIR's LightGCN, which also drops the entries of ``Â``
    (each direction of an edge independently, at a rate drawn per batch from U(0, 1), the kept
    ones rescaled, not renormalised); the paper's SelfCF_ed perturbs only the output embeddings
    (``edge_dropout=0`` gives that); (2) the dropout masks are drawn per batch row, so a user
    twice in a batch gets two masks; (3) the ½‖·‖² term on the propagated batch rows (its
    weight is 0 in MMRec's config). "ed" is the paper's embedding dropout, not edge dropout.

    Shapes:
        E^{(0)} [n_users + n_items, d]; Â sparse [(n_users + n_items)², 2·nnz(train)]; W [d, d];
        scoring factors [n_users, 2d] and [n_items, 2d].
    """

    description = "SelfCF_ed: self-supervised LightGCN without negatives (predictor vs a dropout target view, ID only)"
    Config = SelfCFEDConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json

    def setup(self, dataset):
        d = self.config.embedding_dim
        self.init_joint_table(d)
        self.predictor = nn.Linear(d, d)           # PyTorch's default init, as MMRec leaves it
        adj = bipartite_adjacency(dataset.train)
        self.full_adj = SparseMatrix(adj, symmetric=True)
        self.edges = _EdgeDropout(adj)

    def training_graph(self) -> SparseMatrix | _DroppedGraph:
        """``Â_r`` for one batch, ``r ~ U(0, edge_dropout)`` from torch's global RNG (``Â`` at 0)."""
        if self.config.edge_dropout == 0.0:
            return self.full_adj
        return self.edges.draw(torch.rand(()).item() * self.config.edge_dropout)

    def embeddings(self):
        e = propagate(self.full_adj, self.embedding, self.config.num_layers)
        u, i = e[: self.n_users], e[self.n_users:]
        return torch.cat([self.predictor(u), u], dim=1), torch.cat([i, self.predictor(i)], dim=1)

    def loss(self, batch):
        cfg, b = self.config, len(batch.users)
        idx = torch.cat([batch.users, self.n_users + batch.pos_items])
        rows = propagate(self.training_graph(), self.embedding, cfg.num_layers, rows=idx)   # [2B, d]
        u, i = rows[:b], rows[b:]
        # detach, not only no_grad: at p = 0 dropout hands back its input, graph and all
        t_u, t_i = F.dropout(u.detach(), cfg.dropout), F.dropout(i.detach(), cfg.dropout)  # [B, d] each
        h = self.predictor(rows)                                                           # [2B, d]
        loss = 0.5 * (_neg_cos(h[:b], t_i) + _neg_cos(h[b:], t_u))
        return loss + cfg.reg_weight * l2_loss(u, i, denom=1.0)
