"""PGL (Yu et al., AAAI 2025): principal graph learning, as in MMRec's implementation."""
from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Annotated, Literal

import numpy as np
import scipy.sparse as sp
import annotated_types as at
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, Rate, UnitFloat, tunable
from prismrec.graphs import (
    NewItemRows,
    SparseMatrix,
    bipartite_adjacency,
    modality_graph,
    propagate,
    propagate_new_items,
    prune_from_torch_rng,
    svd_principal_graph,
)
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.freedom import modality_weights
from prismrec.models.layers import Precision, TrainableTables, batch_rows, dot, info_nce

Mode = Literal["local", "global"]
MODES = typing.get_args(Mode)


@dataclass(frozen=True)
class PGLConfig(ModelConfig):
    # defaults: MMRec's PGL.yaml (first grid values: reg_weight 0, dropout 0.2, mode local)
    embedding_dim: PosInt = 64       # per modality: user block and projection (embedding_size = feat_embed_dim)
    knn_k: PosInt = tunable(10, 5, 20)
    mm_image_weight: UnitFloat = tunable(0.1, 0.0, 1.0)
    modality_weights: tuple[float, ...] = ()  # explicit item-graph weights in dataset modality order (see FREEDOM)
    num_mm_layers: NonNegInt = 1     # item-item propagation steps (n_mm_layers)
    num_ui_layers: NonNegInt = 2     # LightGCN layers on the user-item graph (n_ui_layers)
    mode: Mode = tunable("local", choices=MODES)  # principal subgraph: "local" sampling or "global" SVD
    keep_ratio: Fraction = tunable(0.3, 0.1, 0.9)  # local: fraction of edges kept each epoch (0.3 in the code)
    svd_rank: PosInt = 64            # global: singular triplets computed (the code uses embedding_size)
    # global: fraction of them kept in the reconstruction (a quarter in the code)
    svd_share: Annotated[float, at.Interval(gt=0, le=0.5)] = 0.25
    svd_threshold: NonNegFloat = 1e-3  # global: entries below this magnitude are dropped
    dropout: Rate = tunable(0.2, 0.0, 0.5)        # on the two views of the contrastive term
    reg_weight: NonNegFloat = tunable(0.0, choices=(0.0, 1e-4, 1e-3, 1e-2, 0.1))  # weight of the contrastive term
    temperature: PosFloat = 0.2      # hard-coded 0.2 in the code
    lr_decay: PosFloat = 0.96        # learning_rate_scheduler [0.96, 50]: lr · 0.96^(epoch/50)
    lr_decay_epochs: PosInt = 50
    feature_precision: Precision = "auto"  # of the wide feature-table products (see MGCN)


@register("pgl")
class PGL(TrainableTables, Model):
    """Principal graph learning: message passing on a principal subgraph of the user-item graph in
    training and on the complete graph at inference, plus a frozen modality item-item graph.

    `Mind Individual Information! Principal Graph Learning for Multimedia Recommendation
    <https://doi.org/10.1609/aaai.v39i12.33429>`_ (AAAI 2025; code: github.com/demonph10/PGL)

    .. math::
        x_i = \\Vert_m \\mathrm{norm}(W_m f^{(m)}_i + b_m), \\quad
        e_u = \\Vert_m E^{(m)}_u, \\quad
        h = S^{L_m} X, \\quad S = \\sum_m w_m \\, \\mathrm{norm}(\\mathrm{kNN}_k(f^{(m)}))

        [\\bar e_U; \\bar e_I] = \\mathrm{mean}_{l \\le L}\\, \\mathcal A^l [E_U; X], \\quad
        \\mathcal A = \\mathcal F(\\hat A) \\text{ (training)}, \\ \\hat A \\text{ (inference)}, \\quad
        s_{ui} = \\bar e_u \\cdot (\\bar e_i + h_i)

        \\mathcal L = \\mathrm{BPR} + \\lambda \\tfrac12 \\big(
            \\mathrm{InfoNCE}(\\delta(\\bar e_u), \\delta'(\\bar e_u))
            + \\mathrm{InfoNCE}(\\delta(e_{i^+}), \\delta'(e_{i^+}))\\big)

    The principal subgraph ``F(Â)``: ``mode="local"`` keeps ``keep_ratio`` of the edges, drawn
    afresh each epoch without replacement with probability ∝ ``1/sqrt(d_u d_i)``, and normalises
    what is kept; ``mode="global"`` is the fixed low-rank reconstruction of
    :func:`~prismrec.graphs.svd_principal_graph` (built on first use in training). ``δ, δ'`` are two
    independent dropout masks (rate ``dropout``) and ``λ = reg_weight``; InfoNCE takes in-batch
    negatives at ``temperature``. Items have no ID embedding: their representation is the
    normalised projections of their features, one ``d``-block per modality, facing a user table
    with one ``d``-block per modality.

    Where the paper and MMRec's code differ, this follows the code (MMRec's 5-epoch figures in
    ``peers.md`` come from it): keep ratio 0.3, the global reconstruction scales the top quarter of
    the singular values by the bottom quarter (the paper truncates the spectrum), the raw feature
    tables are trainable, ``S`` is built once from the initial features, and the item graph sums
    are generalised from image + text to any modalities with FREEDOM's weights.

    Cold start (not in the paper): items have no ID rows, so an unseen item's vector is the one it
    would have as a training item without interactions: ``x/(L+1) + h`` from its projected
    features and its row of ``S`` (:class:`~prismrec.graphs.NewItemRows`, searched among the
    features ``S`` was built from).

    Shapes:
        E_U [n_users, M·d]; f^(m) [n_items, d_m]; W_m [d, d_m]; X, h [n_items, M·d]; S [n_items²].
    """

    description = "PGL: principal (locally sampled / low-rank) user-item subgraph in training + kNN item graph"
    Config = PGLConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg, d = self.config, self.config.embedding_dim
        blocks = [nn.init.xavier_uniform_(torch.empty(self.n_users, d)) for _ in self.modalities]
        self.user_emb = nn.Parameter(torch.cat(blocks, dim=1))                     # [U, M·d]
        self.train_matrix = sp.csr_matrix(dataset.train, dtype=np.float32)
        self._full = bipartite_adjacency(self.train_matrix)
        self.full_adj = SparseMatrix(self._full, symmetric=True)
        self.train_adj: SparseMatrix | None = None
        self.weights = modality_weights(self.modalities, cfg.mm_image_weight, cfg.modality_weights)
        self.graph_features = {m: dataset.features[m] for m in self.modalities}  # S's (the tables get trained)
        self.mm_graphs = {m: modality_graph(getattr(self, f"feat_{m}").numpy(), cfg.knn_k, weighted=False)
                          for m in self.modalities}
        self.mm_adj = SparseMatrix(sum(w * self.mm_graphs[m] for m, w in zip(self.modalities, self.weights)))
        self.init_trainable_tables(cfg.feature_precision)
        self.proj = nn.ModuleDict({m: nn.Linear(dim, d) for m, dim in self.feature_dims().items()})

    def lr_factor(self, epoch):
        return self.config.lr_decay ** (epoch / self.config.lr_decay_epochs)

    def on_epoch_start(self, epoch):
        """The principal subgraph of this epoch (local: a fresh draw from torch's global RNG)."""
        cfg = self.config
        if cfg.mode == "global":
            if self.train_adj is None:
                self.train_adj = SparseMatrix(svd_principal_graph(self._full, cfg.svd_rank, cfg.svd_share,
                                                                  cfg.svd_threshold), symmetric=False).to(self.device)
            return
        if cfg.keep_ratio >= 1.0:
            self.train_adj = self.full_adj
            return
        self.train_adj = prune_from_torch_rng(self.train_matrix, cfg.keep_ratio).to(self.device)

    def _graph(self) -> SparseMatrix:
        if not self.training:
            return self.full_adj
        if self.train_adj is None:
            self.on_epoch_start(0)
        return self.train_adj

    def item_inputs(self) -> torch.Tensor:
        """``X``: the items' normalised feature projections side by side ``[n_items, M·d]``."""
        return torch.cat([F.normalize(self.project_table(m, self.proj[m])) for m in self.modalities], dim=1)

    def embeddings(self):
        x = self.item_inputs()
        h = propagate(self.mm_adj, x, self.config.num_mm_layers, mean=False)
        e = propagate(self._graph(), torch.cat([self.user_emb, x]), self.config.num_ui_layers)
        return e[: self.n_users], e[self.n_users:] + h

    def loss(self, batch):
        cfg, b, r = self.config, len(batch.users), batch_rows(batch, self.n_users)
        x = self.item_inputs()
        # only the batch's rows of the layer mean and of S^L X (same values as the full products)
        e = propagate(self._graph(), torch.cat([self.user_emb, x]), cfg.num_ui_layers, rows=r.rows)
        e = torch.cat([e[: len(r.users)], e[len(r.users):] + propagate(self.mm_adj, x, cfg.num_mm_layers,
                                                                        mean=False, rows=r.items)])
        u, p, n = e[r.user_at], e[r.item_at[:b]], e[r.item_at[b:]]
        loss = -F.logsigmoid(dot(u, p) - dot(u, n)).mean()
        if cfg.reg_weight == 0.0:
            return loss
        drop = lambda t: F.dropout(t, cfg.dropout, training=self.training)  # noqa: E731
        cl = (info_nce(drop(u), drop(u), cfg.temperature) + info_nce(drop(p), drop(p), cfg.temperature)) / 2
        return loss + cfg.reg_weight * cl

    def embed_items(self, features):
        """Unseen items: ``x/(L+1) + h`` with ``h`` their rows of ``S'^{L_m} [X; x]``."""
        feats = self.new_item_features(features)
        x = torch.cat([F.normalize(self.proj[m](torch.as_tensor(feats[m], dtype=torch.float32)))
                       for m in self.modalities], dim=1)
        rows = NewItemRows(self.graph_features, features, self.config.knn_k, self.weights)
        h = propagate_new_items(self.mm_adj, rows, self.item_inputs(), x, self.config.num_mm_layers)
        return x / (self.config.num_ui_layers + 1) + h

    def modality_contributions(self, users, items):
        """Each modality's ``d``-block of the score: ``ē_u^{(m)} · (ē_i + h_i)^{(m)}`` (they sum to the score)."""
        with self.evaluating():
            u, i = self.embeddings()
            d = self.config.embedding_dim
            u, i = u[users], i[items]
            return {m: dot(u[:, k * d:(k + 1) * d], i[:, k * d:(k + 1) * d]) for k, m in enumerate(self.modalities)}
