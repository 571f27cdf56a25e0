"""MENTOR (Xu et al., AAAI 2025): multi-level self-supervised learning, as in the authors' code."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Rate, UnitFloat, tunable
from prismrec.graphs import SparseMatrix, bipartite_adjacency, modality_graph, propagate
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.freedom import modality_weights
from prismrec.models.layers import (WIDE, Precision, Workspace, dot, info_nce_all, log2_bpr_loss, project_fixed,
                                    resolve_precision)


@dataclass(frozen=True)
class MENTORConfig(ModelConfig):
    # defaults: the authors' MENTOR.yaml (first value of each grid, as peers.md does for MMRec's models)
    # and the constants hard-coded in their mentor.py; learning rate 1e-4 (train_defaults)
    embedding_dim: PosInt = 64          # every encoder's output size (the code's dim_latent)
    hidden_mult: PosInt = 4             # encoder MLP d_m -> hidden_mult·d -> d
    num_ui_layers: NonNegInt = 2        # user-item graph convolutions (fixed at 2 in the code)
    num_mm_layers: NonNegInt = 1        # item-item propagation steps (n_mm_layers)
    knn_k: PosInt = 10
    mm_image_weight: UnitFloat = 0.1
    modality_weights: tuple[float, ...] = ()   # explicit item-graph weights in modality order; () = as FREEDOM
    reg_weight: NonNegFloat = tunable(1e-3, 1e-5, 1e-1, log=True)
    align_weight: NonNegFloat = tunable(0.1, 1e-2, 1.0, log=True)      # grid [0.1, 0.2, 0.3]
    mask_weight_g: NonNegFloat = tunable(1e-4, 1e-5, 1e-2, log=True)   # graph perturbation; grid [1e-4, 1e-3]
    temperature: PosFloat = tunable(0.2, 0.1, 1.0)                     # temp, grid [0.2, 0.4, 0.6]
    noise_eps: NonNegFloat = 0.1        # perturbation size (hard-coded 0.1)
    mask_weight_f: NonNegFloat = 1.5    # feature masking; trains nothing with feature_mask="code"
    dropout: Rate = 0.5                 # feature-masking rate
    feature_mask: Literal["code", "gradient"] = "code"
    feature_precision: Precision = "auto"   # of the wide feature-MLP products
    cl_precision: Precision = "auto"        # of the all-pairs InfoNCE products


class _Encoders(nn.Module):
    """``copies`` independent encoders of one input table: ``x_c = norm([P_c; W_2c σ(W_1c X + b_1c) + b_2c])``.

    The first layers of all copies are one product of ``X`` with their stacked weights (the table is
    read once); ``σ`` is LeakyReLU and ``norm`` scales every row to unit length.
    """

    def __init__(self, n_users: int, d_in: int, d: int, hidden: int, copies: int):
        super().__init__()
        self.hidden = hidden
        self.preference = nn.Parameter(torch.stack([nn.init.xavier_normal_(torch.empty(n_users, d))
                                                    for _ in range(copies)]))        # [C, N, d]
        self.first = nn.Linear(d_in, copies * hidden)
        self.second = nn.ModuleList(nn.Linear(hidden, d) for _ in range(copies))

    def forward(self, x: torch.Tensor, copies: int, cache: dict, key: str, bf16: bool) -> list[torch.Tensor]:
        rows = copies * self.hidden
        h = F.leaky_relu(project_fixed(x, self.first.weight[:rows], self.first.bias[:rows], cache, key, bf16))
        blocks = h.split(self.hidden, dim=1)
        return [F.normalize(torch.cat([self.preference[c], self.second[c](blocks[c])]), dim=1) for c in range(copies)]


def _moments(x: torch.Tensor, repeats: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of all entries of ``x`` tiled ``repeats`` times along its columns."""
    mean = x.mean()
    n = x.numel() * repeats
    return mean, (x - mean).square().sum() * repeats / (n - 1)


@register
class MENTOR(Model):
    """Modality encoders on the user-item graph, an item semantic graph, ID-guided distribution
    alignment of the modalities at several levels and a graph-perturbation contrast.

    `MENTOR: Multi-level Self-supervised Learning for Multimodal Recommendation
    <https://arxiv.org/abs/2402.19407>`_

    .. math::
        x_e = \\mathrm{norm}([P_e;\\ \\mathrm{MLP}_e(X_e)]), \\quad
        r_e = \\sum_{l=0}^{L} \\hat A^l x_e, \\quad
        z_e = [r_{e,U};\\ r_{e,I} + S^{L_m} r_{e,I}], \\quad e \\in \\{m\\} \\cup \\{id\\}

        u = \\Vert_m\\, \\beta_{u,m}\\, z_{m,u}, \\quad i = \\Vert_m\\, z_{m,i}, \\quad
        \\mathrm{score}(u, i) = u^\\top i, \\quad S = \\sum_m w_m\\, \\mathrm{norm}(\\mathrm{kNN}_k(X_m))

        \\mathcal L = -\\overline{\\log_2 \\sigma(u^\\top i^+ - u^\\top i^-)}
            + \\lambda \\big(\\sum_m \\overline{P_{m,u}^2} + \\overline{\\beta^2}\\big)
            + \\alpha \\sum_{a < b} |\\mu_a - \\mu_b| + |\\sigma^2_a - \\sigma^2_b|
            + \\gamma\\, (\\mathrm{NCE}_\\tau(\\tilde u', \\tilde u'') + \\mathrm{NCE}_\\tau(\\tilde i', \\tilde i''))

    ``X_id`` is a trainable item table; ``μ, σ²`` are the mean and variance of all entries of a
    level's ``[U + I, M·d]`` representation, the levels being the fused ``[u; i]``, the ID one
    (``z_id`` tiled M times) and each modality's (``z_m`` tiled); all pairs are aligned (``α``:
    ``align_weight``). ``ũ', ũ''`` (``ĩ', ĩ''``) are two perturbed fused views: encoders whose every
    graph layer adds ``ε · sign(h) ⊙ norm(noise)``, noise ~ U[0, 1) (SimGCL), compared by InfoNCE of
    every user (item) against all users (items) (``γ``: ``mask_weight_g``; 0 skips the views).

    Where paper and code differ, the code is followed (it produced the published numbers): the
    perturbed views come from their own encoder copies (own ``P``, own MLPs, shared ``β``), so the
    contrast reaches the scores only through ``β``; the feature-masking term
    ``1 - cos(dropout(h), MLP(h))`` is computed under ``no_grad`` and trains nothing, so with
    ``feature_mask="code"`` it is left out (the loss differs by a constant), while ``"gradient"``
    trains it with weight ``mask_weight_f``; the code's edge-dropped graphs and user-user sample are
    never read by its forward and are absent here. The raw features are fixed (the code's trainable
    copies are unused). Scoring uses the current parameters (MMRec reuses the last batch's forward).
    Generalised from image + text to any M ≥ 1 modalities.

    Shapes:
        X_m [n_items, d_m]; P_e [n_users, d]; x_e, r_e, z_e [n_users + n_items, d]; u, i [M·d]; β [n_users, M].
    """

    name = "mentor"
    description = "MENTOR: modality GCNs + item graph, ID-guided multi-level alignment, graph-perturbation contrast"
    Config = MENTORConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True
    min_modalities = 1
    train_defaults: ClassVar[dict] = {"learning_rate": 1e-4}   # MENTOR.yaml's learning_rate
    nce_rows = 4096  # anchors per all-pairs InfoNCE block (bounds the [rows, n] similarity buffer)

    def setup(self, dataset):
        cfg, d = self.config, self.config.embedding_dim
        self.adj = SparseMatrix(bipartite_adjacency(dataset.train), symmetric=True)
        weights = modality_weights(self.modalities, cfg.mm_image_weight, cfg.modality_weights)
        raw = {m: self.features(m).detach().numpy() for m in self.modalities}
        self.item_graph = SparseMatrix(sum(w * modality_graph(raw[m], cfg.knn_k, weighted=False)
                                           for m, w in zip(self.modalities, weights)), symmetric=False)
        self.copies = 3 if cfg.mask_weight_g > 0 else 1      # scored encoder + two perturbed views
        hidden = cfg.hidden_mult * d
        self.encoders = nn.ModuleDict({m: _Encoders(self.n_users, dim, d, hidden, self.copies)
                                       for m, dim in self.feature_dims().items()})
        self.id_encoder = _Encoders(self.n_users, d, d, hidden, 1)
        self.id_table = nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_items, d)))
        beta = nn.init.xavier_normal_(torch.empty(self.n_users, len(self.modalities), 1))
        self.user_weight = nn.Parameter(torch.softmax(beta, dim=1).squeeze(2))          # β [N, M]
        if cfg.feature_mask == "gradient":
            width = len(self.modalities) * d
            self.mask_mlp = nn.Linear(width, width)
        low = resolve_precision(cfg.feature_precision) == torch.bfloat16
        self.bf16 = {m: low and dim >= WIDE for m, dim in self.feature_dims().items()}
        self._bf16_cache: dict = {}
        self.cl_dtype = resolve_precision(cfg.cl_precision)
        self._nce_work = Workspace()   # the contrast's [rows, all] matrices, reused step after step

    def inputs(self, full: bool) -> tuple[torch.Tensor, int]:
        """The encoders' inputs ``x_e`` side by side ``[N + I, E·d]`` and how many lead unperturbed:
        the modalities in order, then (``full``) the ID encoder and the two perturbed views' modalities."""
        copies = self.copies if full else 1
        views = [self.encoders[m](self.features(m), copies, self._bf16_cache, m, self.bf16[m])
                 for m in self.modalities]
        cols = [v[0] for v in views]
        if full:
            cols += self.id_encoder(self.id_table, 1, self._bf16_cache, "id", False)
        clean = len(cols)
        cols += [v[c] for c in range(1, copies) for v in views]
        return torch.cat(cols, dim=1), clean

    def graph_reps(self, x: torch.Tensor, clean: int) -> torch.Tensor:
        """``z_e`` for every encoder ``[N + I, E·d]``: ``Σ_l Â^l x_e`` (perturbed after each layer past
        the first ``clean`` encoders), then the item rows plus their item-graph propagation."""
        cfg, d, n = self.config, self.config.embedding_dim, self.n_users
        layers = cfg.num_ui_layers
        r = propagate(self.adj, x[:, : clean * d].contiguous(), layers) * (layers + 1)   # the layers' sum
        if x.shape[1] > clean * d:
            out = h = x[:, clean * d:].contiguous()
            for _ in range(layers):
                h = self.adj @ h
                with torch.no_grad():  # sign(h) has no gradient: the noise is a constant of the step
                    blocks = h.view(len(h), -1, d)                     # [N + I, views, d]
                    noise = torch.sign(blocks) * F.normalize(torch.rand_like(blocks), dim=-1) * cfg.noise_eps
                h = h + noise.view_as(h)
                out = out + h
            r = torch.cat([r, out], dim=1)
        items = r[n:]
        return torch.cat([r[:n], items + propagate(self.item_graph, items, cfg.num_mm_layers, mean=False)])

    def fuse_users(self, z_users: torch.Tensor) -> torch.Tensor:
        """``Vert_m β_{u,m} z_{m,u}`` ``[N, M·d]`` from the modality blocks ``[N, M·d]``."""
        m = len(self.modalities)
        return (z_users.view(len(z_users), m, -1) * self.user_weight[:, :, None]).flatten(1)

    def embeddings(self):
        z = self.graph_reps(*self.inputs(full=False))
        return self.fuse_users(z[: self.n_users]), z[self.n_users:]

    def alignment(self, fused: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``Σ_{a<b} |μ_a - μ_b| + |σ²_a - σ²_b|`` over the fused, ID and per-modality levels."""
        m, d = len(self.modalities), self.config.embedding_dim
        stats = [_moments(fused)] + [_moments(z[:, k * d:(k + 1) * d], repeats=m) for k in (m, *range(m))]
        total = fused.new_zeros(())
        for a in range(len(stats)):
            for b in range(a + 1, len(stats)):
                total = total + (stats[a][0] - stats[b][0]).abs() + (stats[a][1] - stats[b][1]).abs()
        return total

    def all_pairs_nce(self, a: torch.Tensor, b: torch.Tensor, side: str) -> torch.Tensor:
        """Mean InfoNCE of every row of ``a`` against all rows of ``b``, in blocks of anchors."""
        idx = torch.arange(len(a), device=a.device)
        return sum(info_nce_all(a, b, idx[s:s + self.nce_rows], self.config.temperature, self.cl_dtype,
                                self._nce_work, (side, s))
                   for s in range(0, len(a), self.nce_rows)) / len(a)

    def loss(self, batch):
        cfg, n, m, d = self.config, self.n_users, len(self.modalities), self.config.embedding_dim
        z = self.graph_reps(*self.inputs(full=True))                   # [N + I, E·d]
        users, items = self.fuse_users(z[:n, : m * d]), z[n:, : m * d]
        u = users[batch.users]                                         # [B, M·d]
        margin = dot(u, items[batch.pos_items]) - dot(u, items[batch.neg_items])
        loss = log2_bpr_loss(margin)
        reg = sum(self.encoders[k].preference[0][batch.users].square().mean() for k in self.modalities)
        loss = loss + cfg.reg_weight * (reg + self.user_weight.square().mean())
        if cfg.align_weight > 0:
            loss = loss + cfg.align_weight * self.alignment(torch.cat([users, items]), z)
        if cfg.feature_mask == "gradient" and cfg.mask_weight_f > 0:
            cos = [F.cosine_similarity(F.dropout(h, cfg.dropout), self.mask_mlp(h)).mean() for h in (users, items)]
            loss = loss + cfg.mask_weight_f * (2 - cos[0] - cos[1])
        if self.copies > 1:
            views = [z[:, (m + 1 + k * m) * d:(m + 1 + (k + 1) * m) * d] for k in range(2)]
            u1, u2 = (self.fuse_users(v[:n]) for v in views)
            nce = self.all_pairs_nce(u1, u2, "users") + self.all_pairs_nce(views[0][n:], views[1][n:], "items")
            loss = loss + cfg.mask_weight_g * nce
        return loss
