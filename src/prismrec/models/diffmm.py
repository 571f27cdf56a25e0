"""DiffMM (Jiang et al., ACM MM 2024): multi-modal graph diffusion, as in the official code."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
import typing
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, Rate, tunable
from prismrec.graphs import SparseMatrix, bipartite_adjacency, propagate, sym_normalize
from prismrec.models.base import JointTable, Model, ModelConfig, adam, register
from prismrec.models.layers import (
    Precision,
    betas_from_alpha_bar,
    dot,
    info_nce_all,
    resolve_precision,
    timestep_embedding,
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


class Denoiser(nn.Module):
    """``x̂_0 = W_o tanh(W_x x_t + W_τ φ(τ(t)) + b) + b_o``: predicts the clean interaction vector."""

    def __init__(self, n_items: int, hidden: int, time_dim: int, dropout: float):
        super().__init__()
        self.time = nn.Linear(time_dim, time_dim)
        self.inp = nn.Linear(n_items + time_dim, hidden)
        self.out = nn.Linear(hidden, n_items)
        self.drop = nn.Dropout(dropout)
        for layer in (self.time, self.inp, self.out):  # Xavier-normal weights, near-zero biases
            nn.init.normal_(layer.weight, 0.0, (2.0 / sum(layer.weight.shape)) ** 0.5)
            nn.init.normal_(layer.bias, 0.0, 1e-3)

    def step_bias(self, t: torch.Tensor) -> torch.Tensor:
        """``W_τ φ(τ(t)) + b`` ``[len(t), H]``."""
        n_items = self.out.out_features
        emb = self.time(timestep_embedding(t, self.time.in_features))
        return emb @ self.inp.weight[:, n_items:].T + self.inp.bias

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w_x = self.inp.weight[:, : self.out.out_features]
        h = torch.tanh(self.drop(x) @ w_x.T + self.step_bias(t))                 # [B, H]
        return self.out(h)                                                       # [B, I]


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
    uses_features = True
    train_defaults = {"batch_size": 1024}   # the code's --batch

    def setup(self, dataset):
        c, d = self.config, self.config.embedding_dim
        self.init_joint_table(d)
        self.train_csr = sp.csr_matrix(dataset.train, dtype=np.float32, copy=True)
        self.train_csr.data[:] = 1.0
        adj = bipartite_adjacency(self.train_csr, normalize=False)
        self.adj = SparseMatrix(sym_normalize(adj + sp.eye(adj.shape[0], dtype=np.float32), eps=0.0), symmetric=True)
        dims = self.feature_dims()
        if c.feature_map == "linear":
            self.proj = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in self.modalities})
        else:
            self.proj = nn.ParameterDict({m: xavier_param(dims[m], d)
                                          for m in self.modalities})
        self.modal_weight = nn.Parameter(torch.full((len(self.modalities),), 1.0 / len(self.modalities)))
        self.denoisers = nn.ModuleDict({m: Denoiser(self.n_items, c.hidden_dim, c.time_dim, c.denoise_dropout)
                                        for m in self.modalities})
        self._denoise_opt: torch.optim.Optimizer | None = None
        self.low = resolve_precision(c.precision) == torch.bfloat16
        self.cl_dtype = resolve_precision(c.cl_precision)
        self._schedule()
        for m in self.modalities:  # generated items per user (-1: none yet) and the edge-dropout seed
            self.register_buffer(f"gen_{m}", torch.full((self.n_users, c.rebuild_k), -1, dtype=torch.long))
        self.register_buffer("gen_seed", torch.zeros((), dtype=torch.long))
        self._graphs: tuple | None = None

    def _schedule(self) -> None:
        c = self.config
        variance = torch.linspace(c.noise_scale * c.noise_min, c.noise_scale * c.noise_max, c.steps, dtype=torch.float64)
        betas = betas_from_alpha_bar(1 - variance, 0.0, 0.999, first_beta=1e-4)
        ab = torch.cumprod(1 - betas, 0)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        snr = ab / (1 - ab)
        weight = torch.cat([torch.ones(1, dtype=torch.float64), snr[:-1] - snr[1:]])  # w_0 = 1
        for name, v in (("alpha_bar", ab), ("loss_weight", weight),
                        ("coef_x0", betas * ab_prev.sqrt() / (1 - ab)),                 # posterior mean of
                        ("coef_xt", (1 - ab_prev) * (1 - betas).sqrt() / (1 - ab))):    # q(x_{t-1} | x_t, x̂_0)
            self.register_buffer(name, v.float(), persistent=False)

    def configure_optimizer(self, learning_rate, weight_decay):
        # the denoisers are trained in on_epoch_start by their own optimiser
        return adam([p for n, p in self.named_parameters() if not n.startswith("denoisers.")],
                    learning_rate, weight_decay)

    def _low(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.low else contextlib.nullcontext()

    # -- diffusion ----------------------------------------------------------------------------
    def modality_features(self, m: str) -> torch.Tensor:
        """``F_m = X_m W_m (+ b_m)`` (``leaky_relu``: LeakyReLU of the bias-free product) ``[I, d]``."""
        if self.config.feature_map == "linear":
            return self.proj[m](self.features(m))
        return F.leaky_relu(self.features(m) @ self.proj[m], 0.2)

    def diffusion_loss(self, users: torch.Tensor) -> torch.Tensor:
        """Sum over modalities of the SNR-weighted reconstruction + graph-alignment loss of ``users``."""
        x0 = torch.from_numpy(self.train_csr[users.numpy()].toarray())              # [B, I]
        with torch.no_grad():
            target = x0 @ self.item_emb                                             # [B, d]
        total = 0.0
        for m, den in self.denoisers.items():
            with torch.no_grad():
                feats = self.modality_features(m)                                   # [I, d]
            t = torch.randint(0, self.config.steps, (len(users),))
            ab = self.alpha_bar[t][:, None]
            with self._low():
                pred = den(ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0), t)
                pred_emb = pred @ feats                                             # [B, d]
            mse = (x0 - pred.float()).pow(2).mean(dim=1)
            gc = (pred_emb.float() - target).pow(2).mean(dim=1)
            total = total + (self.loss_weight[t] * mse).mean() + self.config.gc_weight * gc.mean()
        return total

    @torch.no_grad()
    def chain_weights(self, m: str) -> tuple[torch.Tensor, ...]:
        """``(W_xᵀ [I, H], W_x W_o [H, H], W_x b_o [H])`` of modality ``m``'s denoiser, for :meth:`generate`."""
        den = self.denoisers[m]
        w_x = den.inp.weight[:, : self.n_items]
        return w_x.T.contiguous(), w_x @ den.out.weight, w_x @ den.out.bias

    @torch.no_grad()
    def generate(self, m: str, users: torch.Tensor, chain: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """The reverse chain ``x_T = x_u``, ``x_{t-1} = c_0(t) x̂_0(x_t, t) + c_t(t) x_t`` (dropout
        off), run in the denoiser's hidden space: ``W_x x̂_0 = (W_x W_o) h + W_x b_o``. Returns
        ``x_0 [B, I]``; ``chain`` is :meth:`chain_weights` (computed when None)."""
        den = self.denoisers[m]
        w_xt, m_hh, w_b = chain if chain is not None else self.chain_weights(m)
        rows = self.train_csr[users.numpy()]
        z = SparseMatrix(rows, symmetric=False) @ w_xt                              # W_x x_t [B, H]
        s, alpha, beta = torch.zeros_like(z), 1.0, 0.0   # x_t = alpha x_u + W_o s + beta b_o
        for i in reversed(range(self.config.steps)):
            h = torch.tanh(z + den.step_bias(torch.tensor([i])))
            c0, ct = self.coef_x0[i], self.coef_xt[i]
            z = c0 * (h @ m_hh.T + w_b) + ct * z
            s, alpha, beta = c0 * h + ct * s, ct * alpha, c0 + ct * beta
        with self._low():
            x = torch.addmm(beta * den.out.bias, s, den.out.weight.T).float()      # [B, I]
        return x + alpha * torch.from_numpy(rows.toarray()) if float(alpha) != 0 else x

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
            gen, chain = getattr(self, f"gen_{m}"), self.chain_weights(m)
            for users in batches:
                gen[users] = torch.topk(self.generate(m, users, chain), c.rebuild_k, dim=1).indices
        self.denoisers.train(self.training)
        self.gen_seed.fill_(int(torch.randint(0, 2**62, ())))
        self._graphs = None

    def generated_graph(self, m: str) -> SparseMatrix:
        """``G_m``: the generated user-item edges + self-loops, normalised, then edge dropout."""
        gen = getattr(self, f"gen_{m}").numpy()
        users = np.repeat(np.arange(self.n_users), gen.shape[1])
        keep = gen.ravel() >= 0
        r = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (users[keep], gen.ravel()[keep])),
                          shape=(self.n_users, self.n_items))
        r.data[:] = 1.0  # duplicates summed -> binary again
        a = bipartite_adjacency(r, normalize=False)
        a = sym_normalize(a + sp.eye(a.shape[0], dtype=np.float32), eps=0.0).tocsr()
        a.sort_indices()
        if self.config.keep_rate < 1 and keep.any():
            g = torch.Generator().manual_seed(int(self.gen_seed) + 7919 * self.modalities.index(m))
            kept = (torch.rand(a.nnz, generator=g) < self.config.keep_rate).numpy()
            coo = a.tocoo()
            a = sp.csr_matrix((coo.data[kept] / self.config.keep_rate, (coo.row[kept], coo.col[kept])), shape=a.shape)
        return SparseMatrix(a, symmetric=False)

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
        nce = lambda a, b, rows: info_nce_all(a, b, rows, c.temperature, self.cl_dtype) / len(rows)  # batch mean
        return sum(nce(a[:n], b[:n], users) + nce(a[n:], b[n:], items) for a, b in pairs)

    def loss(self, batch):
        c, n = self.config, self.n_users
        e, views = self.forward_views(with_views=True)
        u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
        bpr = -F.logsigmoid(dot(u, p) - dot(u, q)).mean()
        cl = self.contrastive(e, views, batch.users, batch.pos_items) if views else 0.0
        return bpr + c.reg_weight * self.embedding.pow(2).sum() + c.cl_weight * cl
