"""MMGCF (multimodal graph collaborative filtering), MMRec's baseline."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosInt, Rate, tunable
from prismrec.graphs import SparseMatrix, binary_csr, bipartite_adjacency, propagate
from prismrec.models.base import EpochPrunedGraph, JointTable, Model, ModelConfig, register
from prismrec.models.layers import batch_rows, chunked_rows, dot, l2_loss

FusionMode = Literal["mean", "sum", "concat"]
Weighting = Literal["equal", "alpha", "normalized"]


@dataclass(frozen=True)
class MMGCFConfig(ModelConfig):
    # defaults: the first value of each list in MMRec's MMGCF.yaml; ranges: its grid
    embedding_dim: PosInt = 64                    # MMRec embedding_size
    feat_embed_dim: PosInt = 64                   # projected modality size; = embedding_dim unless concat
    num_layers: NonNegInt = tunable(1, 1, 3)      # MMRec n_ui_layers
    reg_weight: NonNegFloat = tunable(1e-1, 1e-4, 1e-1, log=True, choices=(1e-1, 1e-2, 1e-3, 1e-4))
    fusion_mode: FusionMode = tunable("mean", choices=typing.get_args(FusionMode))
    weighting: Weighting = tunable("equal", choices=typing.get_args(Weighting))
    dropout: Rate = tunable(0.2, 0.2, 0.8, choices=(0.2, 0.5, 0.8))  # share of user-item edges pruned per epoch

    def validate(self):
        if self.fusion_mode != "concat" and self.feat_embed_dim != self.embedding_dim:
            raise ValueError(f"feat_embed_dim ({self.feat_embed_dim}) must equal embedding_dim "
                             f"({self.embedding_dim}) with fusion_mode '{self.fusion_mode}' (element-wise "
                             f"fusion); set them equal or use fusion_mode 'concat'")


@register("mmgcf")
class MMGCF(EpochPrunedGraph, JointTable, Model):
    """LightGCN over the user-item graph; each item's graph embedding is fused late with its
    projected modality features. MMRec's baseline (no paper).

    .. math::
        [e_U; \\bar e_I] = \\frac{1}{L+1} \\sum_{l=0}^{L} \\tilde A^l [E_U; E_I], \\quad
        h^m_i = W_m f^m_i + b_m \\quad (m = 1..M)

        \\phi_{\\text{mean}}(x_1..x_K) = \\tfrac1K \\textstyle\\sum_k x_k, \\quad
        \\phi_{\\text{sum}} = \\textstyle\\sum_k x_k, \\quad
        \\phi_{\\text{concat}} = W_c [x_1 \\| \\dots \\| x_K] + b_c

        \\text{equal:} \\ e_i = \\phi(\\bar e_i, \\phi'(h^1_i..h^M_i)), \\quad
        \\text{alpha:} \\ e_i = \\phi(a \\bar e_i, (1-a) h^1_i, .., (1-a) h^M_i), \\ a = \\sigma(\\theta)

        \\text{normalized:} \\ e_i = \\phi(M \\hat{\\bar e}_i, \\hat h^1_i, .., \\hat h^M_i),
            \\quad \\hat x = x / \\|x\\|

        \\mathcal L = \\tfrac1B \\sum_{(u, i^+, i^-)} -\\ln \\sigma(e_u \\cdot e_{i^+} - e_u \\cdot e_{i^-})
            + \\frac{\\lambda}{2B} \\sum \\big(\\|e^{(0)}_u\\|^2 + \\|e^{(0)}_{i^+}\\|^2
            + \\|e^{(0)}_{i^-}\\|^2\\big)

    ``φ`` is ``fusion_mode``; under ``equal`` the inner ``φ'`` (its own ``W_c`` for concat) is
    skipped for a single modality. Users are not fused: ``e_u`` is the LightGCN output. ``Ã``
    is the training graph after degree-sensitive pruning, redrawn each epoch: a share
    ``dropout`` of the edges is dropped, kept ones drawn without replacement with probability
    ∝ 1/sqrt(d_u d_i) and renormalised by their new degrees. This is FREEDOM's rule, so
    :func:`~prismrec.graphs.degree_prune` does it. Scoring uses the full graph. The L2 term
    reads only the batch's layer-0 ID rows (not the projections); ``θ`` starts at 0.
    The loss propagates and fuses only the batch's distinct rows (fusion is per item), which
    gives the same values and gradients as fusing the whole catalogue.

    Shapes:
        E^{(0)} [n_users + n_items, d]; W_m [f, d_m]; W_c [d, d + f] and inner [f, M f] (equal) or [d, d + M f];
        Ã sparse [(n_users + n_items)², ≤ 2·nnz(train)].
    """

    description = "MMGCF: LightGCN ID embeddings late-fused with projected modality features"
    Config = MMGCFConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg = self.config
        d, f, n_mod = cfg.embedding_dim, cfg.feat_embed_dim, len(self.modalities)
        self.init_joint_table(d)
        self.proj = nn.ModuleDict({m: nn.Linear(dim, f) for m, dim in self.feature_dims().items()})
        if cfg.weighting == "alpha":
            self.alpha_logit = nn.Parameter(torch.zeros(()))          # a = σ(0) = ½ at the start
        if cfg.fusion_mode == "concat":
            two_step = cfg.weighting == "equal"
            self.mm_fuser = nn.Linear(n_mod * f, f) if two_step and n_mod > 1 else None
            self.out_fuser = nn.Linear(d + (f if two_step else n_mod * f), d)
        self.train_matrix = binary_csr(dataset.train)
        self.full_adj = SparseMatrix(bipartite_adjacency(self.train_matrix), symmetric=True)

    def on_epoch_start(self, epoch):
        """Degree-sensitive pruning of the user-item graph, driven by torch's global RNG."""
        self.prune_epoch(1.0 - self.config.dropout)

    def project(self, m: str, items: torch.Tensor | None = None) -> torch.Tensor:
        """``h^m`` of ``items`` (all when None) ``[len, feat_embed_dim]``."""
        lin = self.proj[m]
        if items is None:
            return lin(self.features(m))
        return chunked_rows(lambda s: lin(self.features(m, items[s])), len(items), lin.in_features)

    def _combine(self, parts: list[torch.Tensor], layer: nn.Linear | None) -> torch.Tensor:
        mode = self.config.fusion_mode
        if mode == "concat":
            return layer(torch.cat(parts, dim=1))
        total = torch.stack(parts).sum(dim=0)
        return total / len(parts) if mode == "mean" else total

    def fuse(self, graph_items: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """``e_i`` from the graph embeddings ``ē_i`` ``[n, d]`` of ``items`` (all when None) ``[n, d]``."""
        h = [self.project(m, items) for m in self.modalities]
        weighting, concat = self.config.weighting, self.config.fusion_mode == "concat"
        if weighting == "alpha":
            a = torch.sigmoid(self.alpha_logit)
            return self._combine([a * graph_items] + [(1 - a) * x for x in h], self.out_fuser if concat else None)
        if weighting == "normalized":
            parts = [F.normalize(graph_items, dim=1) * len(h)] + [F.normalize(x, dim=1) for x in h]
            return self._combine(parts, self.out_fuser if concat else None)
        content = h[0] if len(h) == 1 else self._combine(h, self.mm_fuser if concat else None)
        return self._combine([graph_items, content], self.out_fuser if concat else None)

    def embeddings(self):
        e = propagate(self.adjacency(), self.embedding, self.config.num_layers)
        return e[: self.n_users], self.fuse(e[self.n_users:])

    def loss(self, batch):
        b = len(batch.users)
        r = batch_rows(batch, self.n_users)
        rows, ego = propagate(self.adjacency(), self.embedding, self.config.num_layers, rows=r.rows, with_input=True)
        n_u = len(r.users)
        table = torch.cat([rows[:n_u], self.fuse(rows[n_u:], r.items)])    # [U + I, d]
        u, p, n = table[r.user_at], table[r.item_at[:b]], table[r.item_at[b:]]
        bpr = -F.logsigmoid(dot(u, p) - dot(u, n)).mean()
        reg = l2_loss(ego[r.user_at], ego[r.item_at[:b]], ego[r.item_at[b:]], denom=b)
        return bpr + self.config.reg_weight * reg
