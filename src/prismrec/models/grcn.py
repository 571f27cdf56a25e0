"""GRCN (Wei et al., ACM MM 2020): graph-refined convolution, with MMRec's semantics."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, PosInt, tunable
from prismrec.graphs import UserItemEdges
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import WIDE, Precision, dot, project_fixed, resolve_precision, xavier_normal_param


@dataclass(frozen=True)
class GRCNConfig(ModelConfig):
    # defaults: MMRec's GRCN.yaml, first value of each grid list (learning rate and batch: the trainer's)
    embedding_dim: PosInt = 64    # ID embedding (embedding_size)
    latent_dim: PosInt = 64       # per-modality prototype width (latent_embedding)
    num_layers: PosInt = 2        # ID-graph convolutions: MMRec's EGCN hard-codes two (its n_layers: 3 is the routing)
    reg_weight: NonNegFloat = tunable(0.1, 1e-5, 0.1, log=True)  # MMRec grid {0.1, 0.01, 1e-3, 1e-4, 1e-5}
    feature_precision: Precision = "auto"  # wide feature-projection products in bf16 ("auto": where native)


@register("grcn")
class GRCN(Model):
    """Graph refining by modality prototypes, then graph convolution of ID embeddings on the refined graph.

    `Graph-Refined Convolutional Network for Multimedia Recommendation with Implicit Feedback
    <https://arxiv.org/abs/2111.02036>`_, as re-implemented in MMRec (``models/grcn.py``). Per modality
    ``m``, with prototypes ``f^m_i = \\ell_2(\\mathrm{LeakyReLU}(W_m x^m_i + b_m))`` and user preferences
    ``p^m_u = \\ell_2(P^m_u)``:

    .. math::
        s^m_{ui} = p^{m\\top}_u f^m_i, \\quad
        \\alpha^m_{u \\leftarrow i} = \\mathrm{softmax}_{i \\in N_u}(s^m_{ui}), \\quad
        \\alpha^m_{i \\leftarrow u} = \\mathrm{softmax}_{u \\in N_i}(s^m_{ui})

        c^m_u = p^m_u + \\sum_{i \\in N_u} \\alpha^m_{u \\leftarrow i} f^m_i, \\quad
        c^m_i = f^m_i + \\sum_{u \\in N_i} \\alpha^m_{i \\leftarrow u} p^m_u

        w_{u \\leftarrow i} = \\mathrm{ReLU}(\\max_m \\alpha^m_{u \\leftarrow i} \\kappa_{i m}), \\quad
        w_{i \\leftarrow u} = \\mathrm{ReLU}(\\max_m \\alpha^m_{i \\leftarrow u} \\kappa_{u m})

        h^{(0)} = \\ell_2(E), \\quad h^{(l+1)}_v = \\sum_{v' \\in N_v} w_{v \\leftarrow v'} h^{(l)}_{v'}, \\quad
        e_v = \\Big[\\sum_{l=0}^{L} h^{(l)}_v \\,\\Big\\Vert\\, c^1_v \\Vert \\cdots \\Vert c^M_v\\Big], \\quad
        \\hat y_{ui} = e_u^\\top e_i

    with the confidences ``κ [N + I, M]`` a free table (MMRec's ``weight_mode='confid'``; the
    sender's row weights an edge). Loss: BPR + ``reg_weight`` · (mean squares of the batch's ID
    embeddings, of the first modality's whole preference table and of each modality's batch preferences).

    Where the paper and MMRec's code differ, this follows the code: the paper refines the user
    preferences by neighbour routing, but MMRec's routing passes messages from users to items only,
    so the users receive nothing and their preferences stay as initialised (their ``n_layers: 3``
    is that loop's count; it is left out here); the prototype layer is one attention step on the
    bipartite graph, without activation; the ID graph has MMRec's two layers (``num_layers``),
    summed, on the pruned weights (``ReLU``, the original code's ``is_pruning=True``); the prediction concatenates
    the ID and every modality representation (``fusion_mode='concat'``); no edge dropout (0 in
    MMRec). MMRec scores with the representation of the last training batch (one optimiser step
    stale); here scoring recomputes it. The two modalities of MMRec (image, text) are generalised
    to any number; the "first modality" of the regulariser is MMRec's image.

    Speed: the edge softmaxes, the attention sums and the weighted ID convolution are CSR products
    and sampled dense products over the ``E`` training edges (:class:`prismrec.graphs.UserItemEdges`); the wide
    feature projections run in bf16 where the CPU has it natively (``feature_precision``).

    Shapes:
        x^m [n_items, d_m]; P^m [n_users, C]; f^m [n_items, C]; E [n_users + n_items, d];
        κ [n_users + n_items, M]; α, w [E]; e [n_users + n_items, d + M·C].
    """

    description = "GRCN: modality prototypes prune the user-item graph, ID GCN on the refined graph"
    Config = GRCNConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg, dims = self.config, self.feature_dims()
        self.edges = UserItemEdges(dataset.train)
        self.id_emb = xavier_normal_param(self.n_users + self.n_items, cfg.embedding_dim)
        self.preference = nn.ParameterDict({m: xavier_normal_param(self.n_users, cfg.latent_dim) for m in dims})
        self.proj = nn.ModuleDict({m: nn.Linear(d, cfg.latent_dim) for m, d in dims.items()})
        for lin in self.proj.values():
            nn.init.xavier_normal_(lin.weight)
        self.confidence = xavier_normal_param(self.n_users + self.n_items, len(self.modalities))
        low = resolve_precision(cfg.feature_precision) == torch.bfloat16
        self.bf16 = {m: low and d >= WIDE for m, d in dims.items()}
        self._bf16_cache: dict = {}

    def prototypes(self, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p^m [N, C], f^m [I, C])``: the normalised preferences and item prototypes of modality ``m``."""
        lin = self.proj[m]
        f = F.leaky_relu(project_fixed(self.features(m), lin.weight, lin.bias, self._bf16_cache, m, self.bf16[m]))
        return F.normalize(self.preference[m], dim=1), F.normalize(f, dim=1)

    def refine(self) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The modalities' content representations ``c^m [N + I, C]`` and the pruned edge weights
        ``(w_{u←i}, w_{i←u})`` ``[E]`` each."""
        e, n = self.edges, self.n_users
        contents, to_user, to_item = [], [], []
        for k, m in enumerate(self.modalities):
            p, f = self.prototypes(m)
            score = e.dot(p, f).exp()  # cosines (|s| <= 1): the softmaxes need no max shift
            a_user = score / score.new_zeros(n).index_add(0, e.users, score)[e.users]
            a_item = score / score.new_zeros(self.n_items).index_add(0, e.items, score)[e.items]
            contents.append(torch.cat([p + e.to_users(a_user, f), f + e.to_items(a_item, p)]))
            to_user.append(a_user * self.confidence[n + e.items, k])   # the item's confidence
            to_item.append(a_item * self.confidence[e.users, k])       # the user's confidence
        w_user = torch.stack(to_user, 1).max(dim=1).values.relu()
        w_item = torch.stack(to_item, 1).max(dim=1).values.relu()
        return contents, w_user, w_item

    def forward(self) -> torch.Tensor:
        """``e [N + I, d + M·C]``: the refined-graph ID representation beside each modality's."""
        contents, w_user, w_item = self.refine()
        n = self.n_users
        h = F.normalize(self.id_emb, dim=1)
        out = h
        for _ in range(self.config.num_layers):
            h = torch.cat([self.edges.to_users(w_user, h[n:]), self.edges.to_items(w_item, h[:n])])
            out = out + h
        return torch.cat([out, *contents], dim=1)

    def embeddings(self):
        e = self.forward()
        return e[: self.n_users], e[self.n_users:]

    def behaviour_embedding(self, items=None):
        emb = self.id_emb[self.n_users:]
        return emb if items is None else emb[items]

    def loss(self, batch):
        n, e = self.n_users, self.forward()
        u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
        loss = -F.logsigmoid(dot(u, p) - dot(u, q)).mean()  # MMRec: -mean log σ(ŷ_ui - ŷ_uj)
        ids = self.id_emb
        # MMRec's means over the batch with each user repeated for its positive and its negative
        reg = ((ids[batch.users] ** 2).mean() + ((ids[n + batch.pos_items] ** 2).mean()
                                                 + (ids[n + batch.neg_items] ** 2).mean()) / 2
               + (self.preference[self.modalities[0]] ** 2).mean()
               + sum((self.preference[m][batch.users] ** 2).mean() for m in self.modalities))
        return loss + self.config.reg_weight * reg

    def modality_contributions(self, users, items):
        """Each modality's block of the score, ``c^m_u · c^m_i`` (the rest is the ID block's)."""
        with self.evaluating():
            e = self.forward()
            d, c = self.config.embedding_dim, self.config.latent_dim
            u, i = e[users], e[self.n_users + items]
            return {m: dot(u[:, d + k * c: d + (k + 1) * c], i[:, d + k * c: d + (k + 1) * c])
                    for k, m in enumerate(self.modalities)}
