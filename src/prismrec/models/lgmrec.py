"""LGMRec (Guo et al., AAAI 2024), as in the authors' code / MMRec."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, tunable
from prismrec.graphs import SparseMatrix, binary_csr, bipartite_adjacency, hypergraph_conv, propagate
from prismrec.models.base import JointTable, Model, ModelConfig, register
from prismrec.models.layers import (
    WIDE,
    Precision,
    Workspace,
    dot,
    emb_loss,
    info_nce_all,
    project_fixed,
    resolve_precision,
    xavier_param,
)


@dataclass(frozen=True)
class LGMRecConfig(ModelConfig):
    embedding_dim: PosInt = 64         # ID and modality embeddings (embedding_size = feat_embed_dim)
    num_ui_layers: NonNegInt = tunable(2, choices=(1, 2, 3))    # LightGCN layers of the local ID view
    num_mm_layers: PosInt = tunable(2, choices=(1, 2, 3))       # propagation steps of the modality views
    num_hyper_layers: PosInt = tunable(1, choices=(1, 2))       # hypergraph convolutions (n_hyper_layer)
    hyper_num: PosInt = tunable(4, choices=(4, 8, 16, 32, 64))  # hyperedges per modality
    keep_rate: Fraction = tunable(0.5, 0.1, 1.0)                # dropout keep rate on the memberships
    alpha: NonNegFloat = tunable(0.3, 0.1, 1.0)                 # weight of the global embeddings
    cl_weight: NonNegFloat = tunable(1e-4, 1e-6, 1e-2, log=True)
    reg_weight: NonNegFloat = tunable(1e-6, 1e-8, 1e-4, log=True)
    temperature: PosFloat = 0.2     # the code's tau: Gumbel-softmax and contrastive temperature
    # precision of the wide feature-table products (see MGCNConfig.feature_precision)
    feature_precision: Precision = "auto"
    # precision of the hypergraph contrast's [batch, all] products (exponentials stay fp32)
    cl_precision: Precision = "auto"


@register("lgmrec")
class LGMRec(JointTable, Model):
    """Local graph embeddings (ID and modality views on the user-item graph) plus global
    hypergraph embeddings.

    `LGMRec: Local and Global Graph Learning for Multimodal Recommendation
    <https://arxiv.org/abs/2312.16400>`_

    .. math::
        E^{c} = \\mathrm{LightGCN}(\\hat A, [E_U; E_I]), \\quad
        E^{m} = \\hat A^{L_m} [\\bar R\\, X_m W_m;\\ X_m W_m], \\quad
        E^{loc} = E^{c} + \\sum_m \\mathrm{norm}(E^{m})

        H_{i,m} = \\mathrm{GS}_\\tau(X_m V_m), \\quad H_{u,m} = \\mathrm{GS}_\\tau(R\\, X_m V_m), \\quad
        [G_{u,m}; G_{i,m}] = [\\tilde H_{u,m}; \\tilde H_{i,m}]\\, \\tilde H_{i,m}^\\top E^{c}_I

        E = E^{loc} + \\alpha\\, \\mathrm{norm}\\big(\\textstyle\\sum_m G_m\\big), \\quad
        \\mathcal L = \\mathrm{BPR} + \\lambda_C \\sum_{m < m'} (\\mathrm{NCE}(G_{u,m}, G_{u,m'})
            + \\mathrm{NCE}(G_{i,m}, G_{i,m'})) + \\lambda_E \\tfrac{\\lVert e_u\\rVert + \\lVert e_{i^+}\\rVert
            + \\lVert e_{i^-}\\rVert}{B}

    ``R`` is the binary user-item matrix, ``R̄`` its row mean, ``Â`` the normalised user-item
    graph, ``GS_τ`` the Gumbel-softmax over the ``hyper_num`` hyperedges, ``H̃`` dropout with
    ``keep_rate`` (drawn separately for items and users), NCE an InfoNCE of a batch's users (its
    positive items) against all users (items), summed, τ = ``temperature``.

    Choices where paper and code differ or the code is silent: the code's (followed here) raw
    features are fixed and its projections ``W_m``, ``V_m`` have no bias. Scoring uses the
    noise-free memberships ``softmax(X V / τ)`` without dropout: the code also draws Gumbel noise
    when it ranks (a fresh draw per evaluation batch), which makes its rankings random; here they
    are deterministic, so a loaded bundle ranks as the trained model. The code needs exactly
    two modalities (with one it falls back to plain LightGCN); here any number: modality views
    and hypergraph embeddings are summed, and each pair of modalities is contrasted (for image
    and text that is the code's one pair, image as the anchor).

    Shapes:
        [E_U; E_I] [n_users + n_items, d]; X_m [n_items, d_m]; W_m [d_m, d]; V_m [d_m, hyper_num];
        H_{i,m} [n_items, hyper_num]; H_{u,m} [n_users, hyper_num]; every E_* [n_users + n_items, d].
    """

    description = "LGMRec: local user-item graph embeddings + global hypergraph embeddings"
    Config = LGMRecConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg, d = self.config, self.config.embedding_dim
        self.init_joint_table(d)
        self.adj = SparseMatrix(bipartite_adjacency(dataset.train), symmetric=True)
        r = binary_csr(dataset.train)
        self.user_item = SparseMatrix(r, symmetric=False)                    # R
        deg = np.asarray(r.sum(axis=1)).ravel().astype(np.float32)
        self.register_buffer("inv_degree", torch.from_numpy(1.0 / (deg + 1e-7))[:, None], persistent=False)
        dims = self.feature_dims()
        self.trans = nn.ParameterDict({m: xavier_param(k, d)
                                       for m, k in dims.items()})           # W_m
        self.hyper = nn.ParameterDict({m: xavier_param(k, cfg.hyper_num)
                                       for m, k in dims.items()})           # V_m
        self.drop = nn.Dropout(p=1.0 - cfg.keep_rate)
        low = resolve_precision(cfg.feature_precision) == torch.bfloat16
        self.bf16 = {m: low and k >= WIDE for m, k in dims.items()}
        self.cl_dtype = resolve_precision(cfg.cl_precision)
        self._nce_work = Workspace()   # the contrast's [rows, all] matrices, reused step after step
        self._bf16_cache: dict = {}

    def memberships(self, logits: torch.Tensor) -> torch.Tensor:
        """Soft hyperedge memberships: Gumbel-softmax in training, its noise-free softmax otherwise."""
        tau = self.config.temperature
        if self.training:
            return F.gumbel_softmax(logits, tau=tau, hard=False, dim=1)
        return torch.softmax(logits / tau, dim=1)

    def modality_views(self, m: str, cge_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E^m [N+I, d], G_m [N+I, d])``: the modality's local graph view and its hypergraph embeddings."""
        w = torch.cat([self.trans[m], self.hyper[m]], dim=1)                 # one product for W_m and V_m
        out = project_fixed(self.features(m), w.T, None, self._bf16_cache, m, self.bf16[m])  # [I, d + E]
        items, logits = out[:, : self.config.embedding_dim], out[:, self.config.embedding_dim:]
        users = (self.user_item @ items) * self.inv_degree                   # R̄ X_m W_m
        view = propagate(self.adj, torch.cat([users, items]), self.config.num_mm_layers, mean=False)
        h_items = self.drop(self.memberships(logits))
        h_users = self.drop(self.memberships(self.user_item @ logits))
        g_users, g_items = hypergraph_conv(h_items, h_users, cge_items, self.config.num_hyper_layers)
        return view, torch.cat([g_users, g_items])

    def forward_all(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``E [N+I, d]`` and the hypergraph embeddings ``G_m`` of every modality."""
        cge = propagate(self.adj, self.embedding, self.config.num_ui_layers)
        views, hyper = zip(*(self.modality_views(m, cge[self.n_users:]) for m in self.modalities))
        local = cge + sum(F.normalize(v, dim=1) for v in views)
        return local + self.config.alpha * F.normalize(sum(hyper), dim=1), list(hyper)

    def embeddings(self):
        e, _ = self.forward_all()
        return e[: self.n_users], e[self.n_users:]

    def loss(self, batch):
        cfg, n = self.config, self.n_users
        e, hyper = self.forward_all()
        u, p, ng = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
        loss = -F.logsigmoid(dot(u, p) - dot(u, ng)).mean()
        cl = 0.0
        for k, a in enumerate(hyper):
            for j, b in enumerate(hyper[k + 1:]):
                w = self._nce_work
                cl = cl + info_nce_all(a[:n], b[:n], batch.users, cfg.temperature, self.cl_dtype, w, (k, j, "users"))
                cl = cl + info_nce_all(a[n:], b[n:], batch.pos_items, cfg.temperature, self.cl_dtype, w, (k, j, "items"))
        return loss + cfg.cl_weight * cl + cfg.reg_weight * emb_loss(u, p, ng)
