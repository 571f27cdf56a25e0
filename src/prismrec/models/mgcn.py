"""MGCN (Yu et al., ACM MM 2023), as in the official code / MMRec."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosFloat, PosInt, tunable
from prismrec.graphs import SparseMatrix, csr_rows, modality_graph, propagate, user_item_views
from prismrec.models.base import JointTable, Model, ModelConfig, register
from prismrec.models.layers import (
    Precision,
    TrainableTables,
    batch_rows,
    bpr_loss,
    dot,
    l2_loss,
    resolve_precision,
    user_item_contrast,
)


@dataclass(frozen=True)
class MGCNConfig(ModelConfig):
    embedding_dim: PosInt = 64
    num_ui_layers: PosInt = 2                                 # config n_ui_layers
    num_ii_layers: NonNegInt = 1                              # config n_layers
    knn_k: PosInt = 10
    reg_weight: NonNegFloat = tunable(1e-4, 1e-6, 1e-2, log=True)  # λ_E
    cl_weight: NonNegFloat = tunable(0.01, 1e-3, 0.1, log=True)    # λ_C, MMRec grid {0.001, 0.01, 0.1}
    temperature: PosFloat = 0.2                               # hard-coded in the code (its tau=0.5 is unused)
    reg_batch_size: PosInt = 2048  # the code divides the L2 term by the configured batch size, not the actual one
    lr_decay: PosFloat = 0.96   # learning_rate_scheduler [0.96, 50]: lr · 0.96^(epoch/50)
    lr_decay_epochs: PosInt = 50
    # precision of the wide feature-table products: "float32" is MMRec's arithmetic; "bfloat16"
    # multiplies bf16 copies with fp32 accumulation (the table and its update stay fp32); "auto"
    # picks bfloat16 where the hardware has it natively (AVX512-BF16/AMX CPUs, CUDA)
    feature_precision: Precision = "auto"
    # precision of InfoNCE's [B, B] similarity products (same choices; exponentials and sums stay fp32)
    cl_precision: Precision = "auto"


def _gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


@register("mgcn")
class MGCN(TrainableTables, JointTable, Model):
    """Multi-view graph convolution with a behaviour-guided purifier and a behaviour-aware fuser.

    `Multi-View Graph Convolutional Network for Multimedia Recommendation
    <https://arxiv.org/abs/2308.03588>`_

    .. math::
        \\tilde E_{i,m} = E_i^{id} \\odot \\sigma(W_{g,m}(X_m W_m + b_m) + b_{g,m}), \\quad
        E_{id} = \\mathrm{LightGCN}(E_u, E_i^{id}), \\quad
        E_m = [\\hat R\\, \\hat S_m^{L} \\tilde E_{i,m};\\ \\hat S_m^{L} \\tilde E_{i,m}]

        \\alpha = \\mathrm{softmax}_m(q(E_m)), \\quad E_s = \\sum_m \\alpha_m E_m, \\quad
        E_{mul} = \\frac{1}{|M|+1}\\Big(E_s + \\sum_m \\sigma(W_{p,m} E_{id}) \\odot (E_m - E_s)\\Big),
        \\quad E = E_{id} + E_{mul}

    Loss: BPR on ``E`` + λ_E · ½‖batch rows of E‖² / ``reg_batch_size`` + λ_C · (InfoNCE(E_mul, E_id) on
    the batch's positive items + on its users), τ = ``temperature``.

    Choices where the paper/code is silent: the fuser is generalised from two modalities to |M|
    (softmax over M logits, division by |M|+1); the raw feature tables are trainable as in the
    code (they replace the frozen feature buffers and are read through :meth:`features`, so
    plug-ins still apply); the item-item kNN graphs are built once from the initial features.

    Speed (same values as the full computation, tested against a dense reference of the paper's
    equations): the fuser, the users' modality views and the layer mean run only on the batch's
    rows; InfoNCE is computed once per distinct row; the table gradient goes into a kept buffer.
    With ``feature_precision`` bf16 the wide-table products take bf16 inputs (fp32 accumulation).

    Shapes:
        [E_u; E_i^{id}] [n_users + n_items, d]; X_m [n_items, d_m]; Ŝ_m sparse [n_items²];
        R̂ sparse [n_users, n_items]; every E_* [n_users + n_items, d].
    """

    description = "MGCN: purified modality item-item views + behaviour-aware fuser + InfoNCE"
    Config = MGCNConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg, d = self.config, self.config.embedding_dim
        self.init_joint_table(d)
        self.adj, self.user_item, self._user_item_csr = user_item_views(dataset.train)  # A, R̂ (and its CSR)
        self.item_graphs = {}
        for m in self.modalities:
            raw = getattr(self, f"feat_{m}")  # the initial features (not plug-in refined): graph and table init
            self.item_graphs[m] = SparseMatrix(modality_graph(raw.numpy(), cfg.knn_k, weighted=True), symmetric=False)
        self.init_trainable_tables(cfg.feature_precision)  # trainable tables, as from_pretrained(freeze=False)
        dims = self.feature_dims()
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in self.modalities})
        self.purifier = nn.ModuleDict({m: _gate(d) for m in self.modalities})
        self.prefer = nn.ModuleDict({m: _gate(d) for m in self.modalities})
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.cl_dtype = resolve_precision(cfg.cl_precision)

    def item_view(self, m: str, item_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Purified, item-item propagated modality embeddings of the items ``[I, d]``."""
        item_emb = self.item_emb if item_emb is None else item_emb
        h = item_emb * self.purifier[m](self.project_table(m, self.proj[m]))  # [I, d]
        for _ in range(self.config.num_ii_layers):
            h = self.item_graphs[m] @ h
        return h

    def propagate(self, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``E_id`` of ``rows`` (all ``N + I`` when None) ``[R, d]`` and the modalities' item views
        side by side ``[I, M·d]``."""
        # with rows: the layer mean of the needed rows only (one fused propagate-and-gather)
        e_id = propagate(self.adj, self.embedding, self.config.num_ui_layers, rows=rows)
        item_emb = self.item_emb  # one slice of the table for all modalities: one gradient scatter
        return e_id, torch.cat([self.item_view(m, item_emb) for m in self.modalities], dim=1)

    def user_item_rows(self, users: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(R̂ @ x)[users]`` from those users' rows only (a batch touches ~10% of the users)."""
        return csr_rows(self._user_item_csr, users) @ x

    def fuse(self, e_id: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Behaviour-aware fuser, row by row: ``e_id [R, d]``, ``views [R, M·d]`` -> ``E_mul [R, d]``."""
        views = views.view(len(views), len(self.modalities), -1).transpose(0, 1)  # [M, R, d]
        alpha = torch.softmax(self.query(views), dim=0)                           # [M, R, 1]
        shared = (alpha * views).sum(dim=0)                                       # [R, d]
        specific = sum(self.prefer[m](e_id) * (views[k] - shared) for k, m in enumerate(self.modalities))
        return (shared + specific) / (len(self.modalities) + 1)

    def embeddings(self):
        e_id, items = self.propagate()
        e = e_id + self.fuse(e_id, torch.cat([self.user_item @ items, items]))
        return e[: self.n_users], e[self.n_users:]

    def loss(self, batch):
        # the fuser works row by row, so it runs only on the batch's users and items, and the
        # users' modality views R̂ Ē_{i,m} are only gathered for the batch's users
        cfg, b, r = self.config, len(batch.users), batch_rows(batch, self.n_users)
        e_id, items = self.propagate(r.rows)                                      # [R, d], [I, M·d]
        e_mul = self.fuse(e_id, torch.cat([self.user_item_rows(r.users, items), items[r.items]]))
        e = e_id + e_mul
        u, p, n = e[r.user_at], e[r.item_at[:b]], e[r.item_at[b:]]
        reg = l2_loss(u, p, n, denom=cfg.reg_batch_size)
        cl = user_item_contrast(e_mul, e_id, r, cfg.temperature, self.cl_dtype)
        return bpr_loss(dot(u, p), dot(u, n)) + cfg.reg_weight * reg + cfg.cl_weight * cl
