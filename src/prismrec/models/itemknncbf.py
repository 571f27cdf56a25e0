"""ItemKNNCBF: content-based item kNN (Dacrema et al., RecSys 2019), as MMRec ships it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prismrec.config import NonNegFloat, PosInt, tunable
from prismrec.graphs import binary_csr, knn_graph
from prismrec.models.base import Model, ModelConfig, register


@dataclass(frozen=True)
class ItemKNNCBFConfig(ModelConfig):
    # defaults: MMRec's ItemKNNCBF.yaml (knn_k [10], shrink [10])
    knn_k: PosInt = tunable(10, choices=(5, 10, 20, 50, 100, 200))  # neighbours kept per item (itself included)
    # damping of the cosine's denominator; its scale follows the feature norms (4,096-d CNN rows: ~64 each)
    shrink: NonNegFloat = tunable(10.0, 0.1, 1000.0, log=True)


@register("itemknncbf")
class ItemKNNCBF(Model):
    """Content-only item kNN: a user's score for an item sums its content similarity to the items
    the user interacted with. No training, no ID embeddings: the baseline that says how far the
    content features alone go.

    `Are We Really Making Much Progress? A Worrying Analysis of Recent Neural Recommendation
    Approaches <https://arxiv.org/abs/1907.06902>`_ (the content-based kNN baseline)

    .. math::
        x_i = [x_i^{(1)}; \\dots; x_i^{(M)}], \\quad
        s_{ij} = \\frac{x_i^\\top x_j}{\\lVert x_i\\rVert \\lVert x_j\\rVert + h}, \\quad
        S_{ij} = s_{ij}\\ \\text{if } j \\in \\mathrm{top}_k(s_{i\\cdot})\\ \\text{else } 0, \\quad
        \\mathrm{score}(u, j) = \\sum_{i \\in \\mathcal I_u} S_{ij}

    ``x_i`` concatenates the item's raw modality features (as in MMRec: a modality with larger
    norms, e.g. 4,096-d CNN features beside unit-length text vectors, dominates; ``--set
    feature_norm=l2`` gives each modality unit rows first), ``h`` is ``shrink``, ``k`` is ``knn_k``.
    The numerator splits over the modalities, so the score is an exact sum of per-modality parts
    (:meth:`modality_contributions`).

    Shapes:
        x_i [Σ_m d_m]; S sparse [n_items, n_items], k entries per row; score(users) [len(users), n_items].
    """

    description = "ItemKNNCBF: content-only item kNN over the concatenated raw features (no training)"
    Config = ItemKNNCBFConfig
    uses_features = True
    features_in_training = False   # read once to build S: a feature plug-in would change nothing
    trainable = False

    def setup(self, dataset):
        cfg = self.config
        x = torch.cat([self.features(m) for m in self.modalities], dim=1)
        self.sim = knn_graph(x, cfg.knn_k, shrink=cfg.shrink)                      # S, k entries a row
        self.sim_t = self.sim.T.tocsr()                                             # Sᵀ: an item's column as a row
        r = binary_csr(dataset.train)
        self.history = r                                                            # binary R [N, I]
        self.user_scores = (r @ self.sim).tocsr()                                   # R S [N, I], sparse
        self.register_buffer("norms", x.norm(dim=1), persistent=False)

    def prepare_scoring(self):
        self._cache = None   # the scores are precomputed in setup (R S)

    def score(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.from_numpy(self.user_scores[users.numpy()].toarray())
        return rows if out is None else out.copy_(rows)

    def modality_contributions(self, users, items):
        """Exact split of ``score(u, j) = Σ_i S_ij``: modality ``m`` adds
        ``Σ_{i ∈ I_u, S_ij ≠ 0} x_i^{(m)}·x_j^{(m)} / (‖x_i‖ ‖x_j‖ + h)``; the parts sum to the score."""
        users, items = users.numpy(), items.numpy()
        # (pair, history item) where the history item has the pair's item among its k neighbours
        both = self.history[users].multiply(self.sim_t[items]).tocoo()  # [P, I]
        p, i = both.row, both.col
        j = items[p]
        denom = self.norms[i] * self.norms[j] + self.config.shrink
        out = {}
        for m in self.modalities:
            f = self.features(m)
            part = (f[i] * f[j]).sum(dim=1) / denom
            out[m] = torch.zeros(len(users)).index_add_(0, torch.from_numpy(p).long(), part)
        return out
