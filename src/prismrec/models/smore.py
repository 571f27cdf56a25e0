"""SMORE (Ong & Khong, WSDM 2025): spectral modality fusion, as in the official code / MMRec."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Rate, tunable
from prismrec.graphs import SparseMatrix, csr_rows, modality_graph, propagate, union_max, user_item_views
from prismrec.models.base import JointTable, Model, ModelConfig, register
from prismrec.models.layers import (
    Precision,
    SpectralFilter,
    TrainableTables,
    batch_rows,
    dot,
    l2_loss,
    resolve_precision,
    spectrum,
    user_item_contrast,
)


@dataclass(frozen=True)
class SMOREConfig(ModelConfig):
    # defaults: MMRec's SMORE.yaml with the Baby settings of ``peers.md`` (n_ui_layers 3, reg 1e-4, k 10, dropout 0.1)
    embedding_dim: PosInt = 64
    num_ui_layers: NonNegInt = tunable(3, 1, 4)                # n_ui_layers, grid [3, 4]
    num_ii_layers: NonNegInt = 1                               # n_layers
    knn_k: PosInt = tunable(10, 5, 40)                         # image_knn_k = text_knn_k
    reg_weight: NonNegFloat = tunable(1e-4, 1e-6, 1e-3, log=True)  # grid [1e-5, 1e-4]
    dropout: Rate = tunable(0.1, 0.0, 0.3)                     # dropout_rate, on the preference gates
    cl_weight: NonNegFloat = tunable(0.01, 1e-3, 0.1, log=True)    # cl_loss
    temperature: PosFloat = 0.2                                # hard-coded 0.2 in the code
    reg_batch_size: PosInt = 2048  # the code divides the L2 term by the configured batch size
    lr_decay: PosFloat = 0.96   # learning_rate_scheduler [0.96, 50]: lr · 0.96^(epoch/50)
    lr_decay_epochs: PosInt = 50
    feature_precision: Precision = "auto"   # of the wide feature-table products (see MGCN)
    cl_precision: Precision = "auto"        # of InfoNCE's [B, B] similarity products


def _gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


@register("smore")
class SMORE(TrainableTables, JointTable, Model):
    """Spectrum-based modality fusion: modality features are denoised and fused in the frequency
    domain of the embedding axis, gate the item IDs, are propagated on item-item graphs and
    weighted per user by a modality-aware preference module.

    `Spectrum-based Modality Representation Fusion Graph Convolutional Network for Multimodal
    Recommendation <https://arxiv.org/abs/2412.14978>`_

    .. math::
        \\hat X_m = \\mathcal F(X_m W_m + b_m), \\quad
        C_m = \\mathcal F^{-1}(K_m \\odot \\hat X_m), \\quad
        C_f = \\mathcal F^{-1}\\big(K_f \\odot \\textstyle\\prod_m \\hat X_m\\big)

        H_v = [\\hat R H^i_v;\\ H^i_v], \\quad H^i_v = S_v^{L'} (E_i \\odot \\sigma(W_v C_v + b_v)),
        \\quad v \\in \\{m\\} \\cup \\{f\\}, \\quad S_f = \\max(S_m)

        E_{id} = \\mathrm{LightGCN}_L(E_u, E_i), \\quad
        A_m = \\mathrm{softmax}_d(q_m(H_f)) \\odot H_m, \\quad
        E_s = \\mathrm{mean}\\big(\\{\\delta(\\sigma(P_m E_{id})) \\odot A_m\\}_m,\\ \\delta(\\sigma(P_f E_{id})) \\odot H_f\\big),
        \\quad E = E_{id} + E_s

    Loss: BPR on ``E`` + λ_E · ½‖batch rows of E‖² / ``reg_batch_size`` + λ_C · (InfoNCE(E_s, E_id)
    on the batch's positive items + on its users), τ = ``temperature`` (``δ``: dropout).

    ``F`` is the orthonormal real FFT over the ``d`` embedding coordinates and ``K`` learnable
    complex filters (:class:`~prismrec.models.layers.SpectralFilter`). ``S_m`` are the
    symmetrically normalised cosine kNN graphs of the initial features; the fusion graph keeps
    every edge of any of them with its largest weight. Generalised from image + text to |M|
    modalities (the fusion spectrum is the product of all |M| spectra). As in the code, the raw
    feature tables are trainable. Speed (same values): as in MGCN, the row-wise preference module,
    the users' views and the layer mean run only on the batch's rows; InfoNCE once per distinct row.

    Shapes:
        [E_u; E_i] [n_users + n_items, d]; X_m [n_items, d_m]; K [d/2 + 1] complex; S sparse [n_items²].
    """

    description = "SMORE: FFT spectral denoising + fusion of modalities, item-item views, modality-aware preference"
    Config = SMOREConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg, d = self.config, self.config.embedding_dim
        self.init_joint_table(d)
        self.adj, self.user_item, self._user_item_csr = user_item_views(dataset.train)  # A, R̂ (and its CSR)
        graphs = {m: modality_graph(getattr(self, f"feat_{m}").numpy(), cfg.knn_k, weighted=True)
                  for m in self.modalities}
        self.item_graphs = {m: SparseMatrix(g, symmetric=False) for m, g in graphs.items()}
        self.fusion_graph = SparseMatrix(union_max(*graphs.values()), symmetric=False)
        self.init_trainable_tables(cfg.feature_precision)
        dims = self.feature_dims()
        views = self.modalities + ["fusion"]
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in self.modalities})
        self.spectral = nn.ModuleDict({v: SpectralFilter(d) for v in views})
        self.gate = nn.ModuleDict({v: _gate(d) for v in views})
        self.prefer = nn.ModuleDict({v: _gate(d) for v in views})
        self.query = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d, bias=False))
                                    for m in self.modalities})
        self.drop = nn.Dropout(cfg.dropout)
        self.cl_dtype = resolve_precision(cfg.cl_precision)

    def item_views(self) -> torch.Tensor:
        """The items' spectral, ID-gated, item-item propagated views side by side ``[I, (M+1)·d]``
        (modalities in order, fusion last)."""
        spectra = {m: spectrum(self.project_table(m, self.proj[m])) for m in self.modalities}
        conv = {m: self.spectral[m](s) for m, s in spectra.items()}
        conv["fusion"] = self.spectral["fusion"](*spectra.values())
        item_emb, out = self.item_emb, []
        for v, c in conv.items():
            h = item_emb * self.gate[v](c)                                             # [I, d]
            graph = self.fusion_graph if v == "fusion" else self.item_graphs[v]
            for _ in range(self.config.num_ii_layers):
                h = graph @ h
            out.append(h)
        return torch.cat(out, dim=1)

    def side(self, e_id: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Modality-aware preference, row by row: ``e_id [R, d]``, ``views [R, (M+1)·d]`` -> ``E_s [R, d]``."""
        views = views.view(len(views), len(self.modalities) + 1, -1).unbind(1)
        fusion = views[-1]
        parts = [self.drop(self.prefer[m](e_id)) * torch.softmax(self.query[m](fusion), dim=-1) * views[k]
                 for k, m in enumerate(self.modalities)]
        parts.append(self.drop(self.prefer["fusion"](e_id)) * fusion)
        return torch.stack(parts).mean(dim=0)

    def embeddings(self):
        e_id = propagate(self.adj, self.embedding, self.config.num_ui_layers)
        items = self.item_views()
        e = e_id + self.side(e_id, torch.cat([self.user_item @ items, items]))
        return e[: self.n_users], e[self.n_users:]

    def loss(self, batch):
        cfg, b, r = self.config, len(batch.users), batch_rows(batch, self.n_users)
        e_id = propagate(self.adj, self.embedding, cfg.num_ui_layers, rows=r.rows)     # [R, d]
        items = self.item_views()                                                      # [I, (M+1)·d]
        user_rows = csr_rows(self._user_item_csr, r.users) @ items
        e_s = self.side(e_id, torch.cat([user_rows, items[r.items]]))                  # [R, d]
        e = e_id + e_s
        u, p, n = e[r.user_at], e[r.item_at[:b]], e[r.item_at[b:]]
        reg = l2_loss(u, p, n, denom=cfg.reg_batch_size)
        cl = user_item_contrast(e_s, e_id, r, cfg.temperature, self.cl_dtype)
        return -F.logsigmoid(dot(u, p) - dot(u, n)).mean() + cfg.reg_weight * reg + cfg.cl_weight * cl
