"""DiffMM (Jiang et al., ACM MM 2024): multi-modal graph diffusion, as in the official code."""
from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, Rate, tunable
from prismrec.graphs import SparseMatrix, binary_csr, bipartite_adjacency, propagate, sym_normalize
from prismrec.models.base import JointTable, Model, ModelConfig, adam, register
from prismrec.models.layers import (
    InteractionDenoiser,
    Precision,
    Workspace,
    dot,
    info_nce_all,
    linear_variance_schedule,
    resolve_precision,
    xavier_param,
)

ClPairs = Literal["main", "modalities"]
FeatureMap = Literal["linear", "leaky_relu"]
CL_PAIRS, FEATURE_MAPS = typing.get_args(ClPairs), typing.get_args(FeatureMap)


@dataclass(frozen=True)
class DiffMMConfig(ModelConfig):
    # defaults: the official TikTok command (Params.py + `--reg 1e-4 --ssl_reg 1e-2 --trans 1 --e_loss 0.1 --cl_method 1`)
    embedding_dim: PosInt = 64                                  # latdim
    num_layers: NonNegInt = 1                                   # gnn_layer
    reg_weight: NonNegFloat = tunable(1e-4, 1e-6, 1e-3, log=True)  # reg (on the full ID tables)
    cl_weight: NonNegFloat = tunable(1e-2, 1e-3, 1e-1, log=True)   # ssl_reg
    temperature: PosFloat = tunable(0.5, 0.1, 1.0)              # temp
    cl_pairs: ClPairs = "main"      # cl_method 1: modality view vs main view; "modalities": view pairs (0)
    feature_map: FeatureMap = "linear"  # trans 1; "leaky_relu": bias-free Xavier matrix + LeakyReLU(0.2) (trans 0)
    keep_rate: Fraction = tunable(0.5, 0.3, 1.0)                # keepRate: edge dropout of generated graphs
    ris_lambda: float = 0.5                                     # weight of the normalised modal residual
    ris_adj_lambda: float = 0.2                                 # weight of the generated-graph view
    hidden_dim: PosInt = 1000                                   # dims '[1000]' of the denoiser
    time_dim: PosInt = 10                                       # d_emb_size
    denoise_dropout: Rate = 0.5                                 # on the noisy input (Denoise default)
    steps: PosInt = 5                                           # T
    noise_scale: float = 0.1
    noise_min: float = 1e-4
    noise_max: float = 0.02
    rebuild_k: PosInt = 5                                       # generated edges per user and modality
    gc_weight: float = tunable(0.1, 0.01, 1.0, log=True)        # e_loss: graph-alignment term
    denoise_learning_rate: PosFloat = tunable(1e-3, 1e-4, 1e-2, log=True)  # the denoisers' own Adam (code: = lr)
    denoise_batch_size: PosInt = 1024                           # users per diffusion batch (code: = batch)
    precision: Precision = "auto"   # of the denoisers' [B, I] products (bf16 where native; fp32 accumulation)
    cl_precision: Precision = "auto"  # of InfoNCE's [B, N] similarity products (exponentials and sums stay fp32)

    def validate(self):
        if not 0 < self.noise_scale * self.noise_min <= self.noise_scale * self.noise_max < 1:
            raise ValueError("noise_scale * noise_min and noise_scale * noise_max must lie in (0, 1), min <= max")


@register("diffmm")
class DiffMM(JointTable, Model):
    """Modality-aware graph diffusion: a denoiser per modality regenerates each user's interaction
    vector; its top items form a user-item graph per modality that feeds graph convolution and
    cross-modal contrastive views.

    `DiffMM: Multi-Modal Diffusion Model for Recommendation <https://arxiv.org/abs/2406.11781>`_

    .. math::
        x_t = \\sqrt{\\bar\\alpha_t} x_u + \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon, \\quad
        \\mathcal L_{diff} = w_t \\|x_u - \\hat x_0(x_t, t)\\|^2 / I
            + \\lambda_{gc} \\|\\hat x_0 F_m - x_u E_i\\|^2 / d, \\quad
        w_t = \\mathrm{SNR}(t-1) - \\mathrm{SNR}(t)\\ (w_0 = 1)

        G_m = \\mathrm{drop}_{\\rho}\\big(\\mathrm{norm}(\\mathrm{topk}_k(\\text{reverse chain of } x_u) + I)\\big), \\quad
        f_m = \\mathrm{norm}(X_m W_m + b_m)

        E_m = A[E_u; f_m] + A[(A[E_u; f_m])_u; E_i] + \\lambda_{adj} G_m [E_u; E_i], \\quad
        \\bar E = \\textstyle\\sum_m \\mathrm{softmax}(w)_m E_m, \\quad
        E = \\sum_{l=0}^{L} A^l \\bar E + \\lambda_{ris}\\, \\mathrm{norm}(\\bar E)

        V_m = \\textstyle\\sum_{l=0}^{L} A^l G_m [E_u; f_m], \\quad
        \\mathcal L = \\mathrm{BPR}(E) + \\lambda_E \\|[E_u; E_i]\\|^2
            + \\lambda_C \\sum_m \\big(\\mathrm{NCE}(E_u, V_{m,u}) + \\mathrm{NCE}(E_i, V_{m,i})\\big)

    ``A`` is the symmetrically normalised user-item graph with self-loops; NCE is InfoNCE of the
    batch's users (positive items) against *all* users (items); ``cl_pairs="modalities"`` contrasts
    the views ``V_m`` pairwise instead. Each epoch (:meth:`on_epoch_start`) first trains the
    denoisers over all users with their own Adam (item embeddings and ``F_m`` detached), then
    regenerates the graphs: the deterministic reverse chain from ``x_u`` itself (the code's
    ``sampling_steps 0``, no sampling noise) and the top ``rebuild_k`` items per user.

    Following the official code (which produced the published numbers): the generated graphs'
    edge dropout (``keep_rate``, kept edges scaled by ``1/keep_rate``) is drawn once per rebuild and
    also holds when scoring; the L2 term is on the full ID tables every batch. Our choices: BPR is a
    plain batch mean (the code divides by the configured batch size); before the first epoch the
    generated graphs hold only self-loops; the denoisers' Adam moments are not checkpointed (a
    resumed run restarts them). Speed (same values): the reverse chain runs in the denoiser's
    hidden space, ``W_x x̂_0 = (W_x W_o) h + W_x b_o``, so only its last output is ``[B, I]``; the
    InfoNCE is computed once per distinct row; the denoisers' products run in bf16 (``precision``).

    Shapes:
        [E_u; E_i] [n_users + n_items, d]; X_m [n_items, d_m]; A, G_m sparse [(N+I)², (N+I)²];
        x_u, x_t, x̂_0 [B, n_items]; W_x [H, n_items]; W_o [n_items, H].
    """

    description = "DiffMM: diffusion-generated user-item graph per modality + cross-modal InfoNCE"
    Config = DiffMMConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True
    train_defaults = {"batch_size": 1024}   # the code's --batch

    def setup(self, dataset):
        c, d = self.config, self.config.embedding_dim
        self.init_joint_table(d)
        self.train_csr = binary_csr(dataset.train)
        adj = bipartite_adjacency(self.train_csr, normalize=False)
        self.adj = SparseMatrix(sym_normalize(adj + sp.eye(adj.shape[0], dtype=np.float32), eps=0.0), symmetric=True)
        dims = self.feature_dims()
        if c.feature_map == "linear":
            self.proj = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in self.modalities})
        else:
            self.proj = nn.ParameterDict({m: xavier_param(dims[m], d)
                                          for m in self.modalities})
        self.modal_weight = nn.Parameter(torch.full((len(self.modalities),), 1.0 / len(self.modalities)))
        self.denoisers = nn.ModuleDict({m: InteractionDenoiser(self.n_items, c.hidden_dim, c.time_dim,
                                                               c.denoise_dropout) for m in self.modalities})
        self._denoise_opt: torch.optim.Optimizer | None = None
        self.low = resolve_precision(c.precision) == torch.bfloat16
        self.cl_dtype = resolve_precision(c.cl_precision)
        self._nce_work = Workspace()   # the contrast's [rows, all] matrices, reused step after step
        for name, v in linear_variance_schedule(c.noise_scale, c.noise_min, c.noise_max, c.steps).items():
            self.register_buffer(name, v, persistent=False)     # alpha_bar, loss_weight, coef_x0, coef_xt
        for m in self.modalities:  # generated items per user (-1: none yet) and the edge-dropout seed
            self.register_buffer(f"gen_{m}", torch.full((self.n_users, c.rebuild_k), -1, dtype=torch.long))
        self.register_buffer("gen_seed", torch.zeros((), dtype=torch.long))
        self._graphs: tuple | None = None

    def configure_optimizer(self, learning_rate, weight_decay):
        # the denoisers are trained in on_epoch_start by their own optimiser
        return adam([p for n, p in self.named_parameters() if not n.startswith("denoisers.")],
                    learning_rate, weight_decay)

    # -- diffusion ----------------------------------------------------------------------------
    def modality_features(self, m: str) -> torch.Tensor:
        """``F_m = X_m W_m (+ b_m)`` (``leaky_relu``: LeakyReLU of the bias-free product) ``[I, d]``."""
        if self.config.feature_map == "linear":
            return self.proj[m](self.features(m))
        return F.leaky_relu(self.features(m) @ self.proj[m], 0.2)

    def diffusion_loss(self, users: torch.Tensor) -> torch.Tensor:
        """Sum over modalities of the SNR-weighted reconstruction + graph-alignment loss of ``users``."""
        x0 = torch.from_numpy(self.train_csr[users.cpu().numpy()].toarray()).to(self.item_emb.device)  # [B, I]
        with torch.no_grad():
            target = x0 @ self.item_emb                                             # [B, d]
        total = 0.0
        for m, den in self.denoisers.items():
            with torch.no_grad():
                feats = self.modality_features(m)                                   # [I, d]
            t = torch.randint(0, self.config.steps, (len(users),)).to(x0.device)  # drawn on the CPU on any device
            ab = self.alpha_bar[t][:, None]
            with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=self.low):
                pred = den(ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0), t)
                pred_emb = pred @ feats                                             # [B, d]
            mse = (x0 - pred.float()).pow(2).mean(dim=1)
            gc = (pred_emb.float() - target).pow(2).mean(dim=1)
            total = total + (self.loss_weight[t] * mse).mean() + self.config.gc_weight * gc.mean()
        return total

    def generate(self, m: str, users: torch.Tensor, chain: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """``x_0 [B, I]`` of the deterministic reverse chain from the users' own interaction rows
        (:meth:`~prismrec.models.layers.InteractionDenoiser.reverse_chain`)."""
        schedule = {"coef_x0": self.coef_x0, "coef_xt": self.coef_xt}
        return self.denoisers[m].reverse_chain(self.train_csr[users.cpu().numpy()], schedule, self.low, chain)

    def on_epoch_start(self, epoch):
        c = self.config
        if self._denoise_opt is None:
            self._denoise_opt = adam(self.denoisers.parameters(), c.denoise_learning_rate)
        order = torch.randperm(self.n_users)
        batches = order.split(c.denoise_batch_size)
        for users in batches:
            self._denoise_opt.zero_grad(set_to_none=True)
            self.diffusion_loss(users).backward()
            self._denoise_opt.step()
        self.denoisers.eval()
        for m in self.modalities:
            gen, chain = getattr(self, f"gen_{m}"), self.denoisers[m].chain_weights()
            for users in batches:
                gen[users] = torch.topk(self.generate(m, users, chain), c.rebuild_k, dim=1).indices
        self.denoisers.train(self.training)
        self.gen_seed.fill_(int(torch.randint(0, 2**62, ())))
        self._graphs = None

    def generated_graph(self, m: str) -> SparseMatrix:
        """``G_m``: the generated user-item edges + self-loops, normalised, then edge dropout."""
        gen = getattr(self, f"gen_{m}").cpu().numpy()
        users = np.repeat(np.arange(self.n_users), gen.shape[1])
        keep = gen.ravel() >= 0
        r = binary_csr(sp.coo_matrix((np.ones(int(keep.sum()), np.float32), (users[keep], gen.ravel()[keep])),
                                     shape=(self.n_users, self.n_items)))
        a = bipartite_adjacency(r, normalize=False)
        a = sym_normalize(a + sp.eye(a.shape[0], dtype=np.float32), eps=0.0).tocsr()
        a.sort_indices()
        if self.config.keep_rate < 1 and keep.any():
            g = torch.Generator().manual_seed(int(self.gen_seed) + 7919 * self.modalities.index(m))
            kept = (torch.rand(a.nnz, generator=g) < self.config.keep_rate).numpy()
            coo = a.tocoo()
            a = sp.csr_matrix((coo.data[kept] / self.config.keep_rate, (coo.row[kept], coo.col[kept])), shape=a.shape)
        return SparseMatrix(a, symmetric=False).to(self.device)

    def graphs(self) -> dict[str, SparseMatrix]:
        key = (int(self.gen_seed), tuple(getattr(self, f"gen_{m}")._version for m in self.modalities))
        if self._graphs is None or self._graphs[0] != key:
            self._graphs = (key, {m: self.generated_graph(m) for m in self.modalities})
        return self._graphs[1]

    # -- graph convolution --------------------------------------------------------------------
    def forward_views(self, with_views: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``E [N+I, d]`` and (``with_views``) the contrastive views ``V_m [N+I, d]``."""
        c, n, graphs = self.config, self.n_users, self.graphs()
        table, users, items = self.embedding, self.embedding[: self.n_users], self.item_emb
        weight = torch.softmax(self.modal_weight, dim=0)
        layer_sum = lambda x: propagate(self.adj, x, c.num_layers) * (c.num_layers + 1)
        modal, views = 0.0, {}
        for k, m in enumerate(self.modalities):
            x = torch.cat([users, F.normalize(self.modality_features(m), dim=1)])    # [N+I, d]
            e = self.adj @ x
            e = e + self.adj @ torch.cat([e[:n], items]) + c.ris_adj_lambda * (graphs[m] @ table)
            modal = modal + weight[k] * e
            if with_views:
                views[m] = layer_sum(graphs[m] @ x)
        return layer_sum(modal) + c.ris_lambda * F.normalize(modal, dim=1), views

    def embeddings(self):
        e, _ = self.forward_views(with_views=False)
        return e[: self.n_users], e[self.n_users:]

    def contrastive(self, e: torch.Tensor, views: dict[str, torch.Tensor], users, items) -> torch.Tensor:
        c, n = self.config, self.n_users
        pairs = ([(e, v) for v in views.values()] if c.cl_pairs == "main" else
                 [(views[a], views[b]) for i, a in enumerate(self.modalities) for b in self.modalities[i + 1:]])
        def nce(a, b, rows, key):  # batch mean
            return info_nce_all(a, b, rows, c.temperature, self.cl_dtype, self._nce_work, key) / len(rows)
        return sum(nce(a[:n], b[:n], users, (k, "users")) + nce(a[n:], b[n:], items, (k, "items"))
                   for k, (a, b) in enumerate(pairs))

    def loss(self, batch):
        c, n = self.config, self.n_users
        e, views = self.forward_views(with_views=True)
        u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
        bpr = -F.logsigmoid(dot(u, p) - dot(u, q)).mean()
        cl = self.contrastive(e, views, batch.users, batch.pos_items) if views else 0.0
        return bpr + c.reg_weight * self.embedding.pow(2).sum() + c.cl_weight * cl
