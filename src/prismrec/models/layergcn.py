"""LayerGCN (Zhou et al., ICDE 2023), as in MMRec."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prismrec.config import NonNegFloat, PosInt, Rate, tunable
from prismrec.graphs import (
    SparseMatrix,
    binary_csr,
    bipartite_adjacency,
    degree_prune,
    refined_propagate,
    uniform_prune,
)
from prismrec.models.base import EpochPrunedGraph, JointTable, Model, ModelConfig, register
from prismrec.models.layers import dot, l2_loss


@dataclass(frozen=True)
class LayerGCNConfig(ModelConfig):
    # defaults: the first value of each list in MMRec's LayerGCN.yaml
    embedding_dim: PosInt = 64                    # MMRec embedding_size
    num_layers: PosInt = 4                        # MMRec n_layers (its grid holds 4 alone)
    reg_weight: NonNegFloat = tunable(1e-2, 1e-5, 1e-2, log=True, choices=(1e-2, 1e-3, 1e-4, 1e-5))
    dropout: Rate = tunable(0.0, 0.0, 0.2, choices=(0.0, 0.1, 0.2))  # share of user-item edges pruned per epoch


@register("layergcn")
class LayerGCN(EpochPrunedGraph, JointTable, Model):
    """Graph convolution whose every layer is re-weighted by its agreement with the ego layer.

    `Layer-refined Graph Convolutional Networks for Recommendation
    <https://arxiv.org/abs/2207.11088>`_

    .. math::
        \\tilde E^{(l)} = \\hat A E^{(l-1)}, \\quad
        \\alpha^{(l)}_n = \\cos(\\tilde e^{(l)}_n, e^{(0)}_n), \\quad
        e^{(l)}_n = \\alpha^{(l)}_n \\tilde e^{(l)}_n, \\quad
        E = \\sum_{l=1}^{L} E^{(l)}

        \\mathcal L = \\sum_{(u, i^+, i^-)} -\\ln \\sigma(e_u \\cdot e_{i^+} - e_u \\cdot e_{i^-})
            + \\lambda \\, \\tfrac12 \\big(\\|e^{(0)}_u\\|^2 + \\|e^{(0)}_{i^+}\\|^2 + \\|e^{(0)}_{i^-}\\|^2\\big)

    The ego layer ``E^{(0)}`` only steers the weights and is left out of the sum. In training
    ``Â`` is the normalised graph of the edges kept after pruning a share ``dropout`` of them,
    redrawn each epoch; scoring uses the full graph. Where MMRec's code and the paper differ
    we follow the code: (1) pruning alternates between epochs, even epochs draw the kept edges
    with probability ∝ 1/sqrt(d_u d_i) (the paper's degree-sensitive pruning) and odd epochs
    uniformly; (2) the BPR term and the ½‖·‖² term are sums over the batch, not means, and
    ``reg_weight`` multiplies that sum (``λ`` above).

    Shapes:
        E^{(0)} [n_users + n_items, d]; Â sparse [(n_users + n_items)², ≤ 2·nnz(train)];
        α^{(l)} [n_users + n_items].
    """

    description = "LayerGCN: layer-refined graph convolution with degree-sensitive edge pruning (ID only)"
    Config = LayerGCNConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json

    def setup(self, dataset):
        self.init_joint_table(self.config.embedding_dim)
        self.train_matrix = binary_csr(dataset.train)
        self.full_adj = SparseMatrix(bipartite_adjacency(self.train_matrix), symmetric=True)

    def on_epoch_start(self, epoch):
        """Prune the training graph (degree-sensitive on even epochs, uniform on odd ones), driven
        by torch's global RNG."""
        self.prune_epoch(1.0 - self.config.dropout, degree_prune if epoch % 2 == 0 else uniform_prune)

    def propagate(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``E`` (the sum of the refined layers), or only its ``rows`` ``[len(rows), d]``."""
        adj = self.adjacency()
        return refined_propagate(adj, self.embedding, self.config.num_layers, rows)

    def embeddings(self):
        e = self.propagate()
        return e[: self.n_users], e[self.n_users:]

    def loss(self, batch):
        b = len(batch.users)
        idx = torch.cat([batch.users, self.n_users + batch.pos_items, self.n_users + batch.neg_items])
        rows = self.propagate(idx)                                       # [3B, d]
        u, p, n = rows[:b], rows[b: 2 * b], rows[2 * b:]
        bpr = -F.logsigmoid(dot(u, p) - dot(u, n)).sum()
        ego = self.embedding[idx]
        reg = l2_loss(ego[:b], ego[b: 2 * b], ego[2 * b:], denom=1.0)
        return bpr + self.config.reg_weight * reg
