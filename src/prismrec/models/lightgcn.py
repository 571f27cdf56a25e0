"""LightGCN (He et al., SIGIR 2020), as in MMRec."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prismrec.config import tunable
from prismrec.graphs import SparseMatrix, bipartite_adjacency, propagate
from prismrec.models.base import JointTable, Model, ModelConfig, register
from prismrec.models.layers import bpr_loss, dot, emb_loss


@dataclass(frozen=True)
class LightGCNConfig(ModelConfig):
    embedding_dim: int = 64
    num_layers: int = tunable(2, 1, 4)                        # MMRec grid {1, 2, 3, 4}
    reg_weight: float = tunable(1e-4, 1e-6, 1e-2, log=True)   # MMRec grid {1e-2 .. 1e-6}


@register("lightgcn")
class LightGCN(JointTable, Model):
    """Linear propagation of ID embeddings over the normalised user-item graph.

    `LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation
    <https://arxiv.org/abs/2002.02126>`_

    .. math::
        E^{(l+1)} = \\hat A E^{(l)}, \\quad E = \\frac{1}{L+1} \\sum_{l=0}^{L} E^{(l)}, \\quad
        \\hat A = D^{-1/2} A D^{-1/2}

    Loss: BPR on the final embeddings + ``reg_weight`` · EmbLoss of the batch's layer-0 embeddings.

    Shapes:
        E^{(0)} [n_users + n_items, d]; Â sparse [(n_users + n_items)², ~2·nnz(train)].
    """

    description = "LightGCN: linear graph convolution over the user-item graph (ID only)"
    Config = LightGCNConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json

    def setup(self, dataset):
        d = self.config.embedding_dim
        self.init_joint_table(d)
        self.adj = SparseMatrix(bipartite_adjacency(dataset.train), symmetric=True)

    def embeddings(self):
        e = propagate(self.adj, self.embedding, self.config.num_layers)
        return e[: self.n_users], e[self.n_users:]

    def loss(self, batch):
        # only the batch's rows of the propagated table are read: one fused propagate-and-gather
        b = len(batch.users)
        idx = torch.cat([batch.users, self.n_users + batch.pos_items, self.n_users + batch.neg_items])
        rows, ego = propagate(self.adj, self.embedding, self.config.num_layers, rows=idx, with_input=True)
        u, p, n = rows[:b], rows[b: 2 * b], rows[2 * b:]
        reg = emb_loss(ego[:b], ego[b: 2 * b], ego[2 * b:])
        return bpr_loss(dot(u, p), dot(u, n)) + self.config.reg_weight * reg
