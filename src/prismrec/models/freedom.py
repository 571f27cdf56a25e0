"""FREEDOM (Zhou & Shen, MM 2023), as in MMRec."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosInt, Rate, UnitFloat, tunable
from prismrec.graphs import (
    NewItemRows,
    SparseMatrix,
    bipartite_adjacency,
    modality_graph,
    propagate,
    propagate_new_items,
)
from prismrec.models.base import EpochPrunedGraph, Model, ModelConfig, register
from prismrec.models.layers import bpr_loss, chunked_rows, dot, xavier_param

IMAGE_NAMES = ("image", "visual")  # the modality that mm_image_weight applies to


@dataclass(frozen=True)
class FREEDOMConfig(ModelConfig):
    embedding_dim: PosInt = 64
    feat_embed_dim: PosInt = 64     # modality projection size (MMRec feat_embed_dim)
    knn_k: PosInt = 10
    mm_image_weight: UnitFloat = 0.1
    modality_weights: tuple[float, ...] = ()  # explicit graph weights in dataset modality order; () = rule below
    num_mm_layers: PosInt = 1       # item-item propagation steps (MMRec n_mm_layers)
    num_ui_layers: NonNegInt = 2    # LightGCN layers (MMRec n_ui_layers)
    dropout: Rate = tunable(0.8, 0.8, 0.9, choices=(0.8, 0.9))        # fraction of user-item edges pruned
    reg_weight: NonNegFloat = tunable(1e-3, 1e-5, 1e-3, log=True, choices=(0.0, 1e-5, 1e-4, 1e-3))


def modality_weights(modalities: list[str], mm_image_weight: float, explicit: tuple[float, ...] = ()) -> list[float]:
    """Weights of the modality graphs in ``S = Σ_m w_m S_m``.

    ``explicit`` (one per modality) wins. Otherwise the image modality (named ``image`` or
    ``visual``) gets ``mm_image_weight`` and the others share ``1 - mm_image_weight`` equally —
    MMRec's ``w S_v + (1 - w) S_t`` for image+text. A lone modality, or several without an
    image one, get equal weights.
    """
    if explicit:
        if len(explicit) != len(modalities):
            raise ValueError(f"modality_weights has {len(explicit)} values for {len(modalities)} "
                             f"modalities {modalities}")
        return list(explicit)
    image = [m for m in modalities if m in IMAGE_NAMES][:1]
    if not image or len(modalities) == 1:
        return [1.0 / len(modalities)] * len(modalities)
    rest = (1.0 - mm_image_weight) / (len(modalities) - 1)
    return [mm_image_weight if m in image else rest for m in modalities]


@register("freedom")
class FREEDOM(EpochPrunedGraph, Model):
    """Frozen modality item-item graph + degree-sensitively pruned user-item graph.

    `A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal Recommendation
    <https://arxiv.org/abs/2211.06924>`_

    .. math::
        S = \\sum_m w_m \\, \\mathrm{norm}(\\mathrm{kNN}_k(f^{(m)})), \\quad
        h = S^{L_m} E_I, \\quad
        [e_U; \\bar e_I] = \\mathrm{LightGCN}(\\tilde A, [E_U; E_I]), \\quad e_i = \\bar e_i + h_i

        \\mathcal L = \\mathrm{BPR}(e_u, e_{i^+}, e_{i^-})
            + \\lambda \\sum_m \\mathrm{BPR}(e_u, W_m f^{(m)}_{i^+} + b_m, W_m f^{(m)}_{i^-} + b_m)

    ``Ã`` is the user-item graph after degree-sensitive pruning (a fraction ``dropout`` of the
    edges is dropped, each epoch, keeping edges with probability ∝ 1/sqrt(d_u d_i)); scoring
    uses the full graph. Cold start (not in the paper): an unseen item gets the row of ``S`` its
    features give it (:class:`~prismrec.graphs.NewItemRows`) and no ID embedding, so its vector is
    ``h`` from its nearest known items alone. ``S`` is binarised, normalised and frozen (built once from the raw
    features). The modality BPR terms (weighted by ``reg_weight``) read only ``W_m (f_{i+} - f_{i-})``:
    the bias cancels, so one projection of the difference gives MMRec's gradients without
    projecting the whole catalogue every batch. As in the paper, the raw features are fixed
    (MMRec also lets Adam update them, which only moves these ``reg_weight``-scaled terms).

    Shapes:
        E_U [n_users, d]; E_I [n_items, d]; S sparse [n_items, n_items]; W_m [d_m, d].
    """

    description = "FREEDOM: frozen kNN item graph + degree-pruned user-item LightGCN"
    Config = FREEDOMConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg = self.config
        d = cfg.embedding_dim
        self.user_emb = xavier_param(self.n_users, d)
        self.item_emb = xavier_param(self.n_items, d)
        self.proj = nn.ModuleDict({m: nn.Linear(dim, cfg.feat_embed_dim) for m, dim in self.feature_dims().items()})
        self.train_matrix = sp.csr_matrix(dataset.train, dtype=np.float32)
        self.full_adj = SparseMatrix(bipartite_adjacency(self.train_matrix), symmetric=True)
        self.weights = modality_weights(self.modalities, cfg.mm_image_weight, cfg.modality_weights)
        self.mm_graphs = {m: modality_graph(self.features(m).detach().numpy(), cfg.knn_k, weighted=False)
                          for m in self.modalities}
        self.mm_adj = SparseMatrix(sum(w * self.mm_graphs[m] for m, w in zip(self.modalities, self.weights)))

    def on_epoch_start(self, epoch):
        """Degree-sensitive pruning of the user-item graph, driven by torch's global RNG."""
        self.prune_epoch(1.0 - self.config.dropout)

    def behaviour_embedding(self, items=None):
        return self.item_emb if items is None else self.item_emb[items]

    def embed_items(self, features):
        """Unseen items: ``h = S'^{L_m} E_I`` with their own ID row (and LightGCN part) zero."""
        rows = NewItemRows({m: Model.features(self, m) for m in self.modalities}, features, self.config.knn_k,
                           self.weights)
        own = self.item_emb.new_zeros(len(rows.neighbours[0]), self.item_emb.shape[1])
        return propagate_new_items(self.mm_adj, rows, self.item_emb, own, self.config.num_mm_layers)

    def embeddings(self):
        adj = self.adjacency()
        h = propagate(self.mm_adj, self.item_emb, self.config.num_mm_layers, mean=False)  # [n_items, d]
        e = propagate(adj, torch.cat([self.user_emb, self.item_emb]), self.config.num_ui_layers)
        return e[: self.n_users], e[self.n_users:] + h

    def loss(self, batch):
        users, items = self.embeddings()
        u = users[batch.users]                                                     # [B, d]
        loss = bpr_loss(dot(u, items[batch.pos_items]), dot(u, items[batch.neg_items]))
        if self.config.reg_weight == 0.0:
            return loss
        mm = 0.0
        for m in self.modalities:
            margin = dot(u, self._projected_difference(m, batch.pos_items, batch.neg_items))  # [B]
            mm = mm + bpr_loss(margin, torch.zeros_like(margin))
        return loss + self.config.reg_weight * mm

    def _projected_difference(self, m: str, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """``W_m (f_pos - f_neg)`` ``[B, d']``, in row chunks (see ``chunked_rows``)."""
        w = self.proj[m].weight
        return chunked_rows(lambda s: F.linear(self.features(m, pos[s]) - self.features(m, neg[s]), w),
                            len(pos), w.shape[1])

    def modality_contributions(self, users, items):
        """Each modality's additive share ``e_u · (w_m S_m S^{L-1} E_I)_i`` of the item-item score part."""
        with self.evaluating():
            u, _ = self.embeddings()
            base = propagate(self.mm_adj, self.item_emb, self.config.num_mm_layers - 1, mean=False)
            return {m: dot(u[users], (SparseMatrix(w * self.mm_graphs[m]) @ base)[items])
                    for m, w in zip(self.modalities, self.weights)}
