"""LD4MRec (Zhu et al., 2023): light, one-step conditional diffusion over interaction vectors."""
from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Annotated, Literal

import numpy as np
import scipy.sparse as sp
import annotated_types as at
import torch
from scipy.sparse.linalg import svds
from torch import nn

from prismrec.config import Fraction, PosInt, Rate, tunable
from prismrec.graphs import SparseMatrix
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import betas_from_alpha_bar, timestep_embedding

TSampling = Literal["uniform", "importance", "ema"]
TIn = Literal["learned", "first", "vector"]
Schedule = Literal["closed_form", "clamped"]
T_SAMPLING, T_IN, SCHEDULES = (typing.get_args(t) for t in (TSampling, TIn, Schedule))


@dataclass(frozen=True)
class LD4MRecConfig(ModelConfig):
    hidden_dim: PosInt = 128                       # H of C-Net (spec §7 proposes 512; 128 was better on baby-like)
    num_layers: PosInt = 2                         # conditional residual blocks
    embedding_dim: PosInt = 64                     # projection of each modality preference
    dropout: Rate = tunable(0.1, 0.0, 0.5)     # inside the blocks
    input_dropout: Rate = tunable(0.5, 0.0, 0.8)  # on observed x before noising (DiffRec drops its input)
    steps: Annotated[int, at.Ge(2)] = tunable(5, 2, 50)          # T
    noise_scale: Fraction = tunable(0.1, 0.01, 1.0, log=True)  # s
    noise_min: Annotated[float, at.Interval(gt=0, lt=1)] = 1e-3                 # α_min
    schedule: Schedule = "closed_form"              # "clamped": the OrangeAI re-implementation's β clamp
    smoothing: float = tunable(0.05, 0.0, 0.2)  # γ of the soft target (0 = hard reconstruction)
    soft_prob: float = 0.0                      # p: observed 1s get the target 0.5 with this probability
    svd_k: PosInt = tunable(64, 16, 256, log=True)  # rank of the collaborative signal
    svd_norm: bool = True                       # SVD of D_u^-½ R D_i^-½ (GF-CF's) instead of R (spec)
    collab_head: bool = True                    # decode the signal through the SVD item factors (ours)
    collab_scale_learned: bool = True           # False: keep that filter's scale fixed at 1
    collab_signal: bool = True                  # ablation switches (paper: each one helps)
    modality_signal: bool = True
    t_sampling: TSampling = "uniform"                # "importance": DiffRec √E[L_t²]; "ema": OrangeAI
    t_in: TIn = "learned"                       # learned scalar time / "first" step / free "vector"
    forward_free_weight: float = 0.0            # weight of C-Net(x_0, t_in) in the loss (trains t_in)
    input_norm: bool = False                    # L2-normalise x before W_in (DiffRec option)
    latent_noise: bool = True                   # sample W_in ε in H dims (same distribution, I/H cheaper)
    loss_sum: bool = False                      # sum the MSE over items instead of the mean (DiffRec: mean)
    positive_weight: float = tunable(50.0, 1.0, 200.0, log=True)  # w: observed items' MSE weight (ours; 1 = spec)


class CondBlock(nn.Module):
    """``h + MLP(LN(h) ⊙ (1 + scale(g)) + shift(g))`` (FiLM conditioning)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))

    def forward(self, h, g):
        scale, shift = self.film(g).chunk(2, dim=1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


@register("ld4mrec")
class LD4MRec(Model):
    """Conditional diffusion over a user's interaction vector, with one-step, forward-free inference.

    `LD4MRec: Simplifying and Powering Diffusion Model for Multimedia Recommendation
    <https://arxiv.org/abs/2309.15363>`_. No official code; choices beyond the abstract are
    ``specs/ld4mrec.md``'s and each is a config switch.

    .. math::
        x_t = \\sqrt{\\bar\\alpha_t} x_u + \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon, \\quad
        1-\\bar\\alpha_t = s\\,[\\alpha_{min} + \\tfrac{t-1}{T-1}(1-\\alpha_{min})] \\\\
        g = W_c [c_u^{cf} ; W_m e_{u,m}]_m + W_\\tau \\tau(t), \\quad
        e_{u,m} = \\sum_{i \\in N_u} \\tfrac{f_{i,m}}{\\sqrt{|N_u||N_i|}}, \\quad
        h = \\mathrm{Blocks}(W_{in} x_t + b, g) \\\\
        \\mathrm{CNet}(x_t, t, g) = W_{out} h + b' + \\big(a \\odot (x_t D_I^{-1/2} V_k) + W_z h\\big)
            (D_I^{1/2} V_k)^\\top \\\\
        \\mathcal L = \\tfrac{1}{I}\\textstyle\\sum_i (1 + (w-1) x_{ui})\\,
            (\\mathrm{CNet}(x_t, t, g)_i - \\tilde x_{ui})^2, \\quad \\tilde x_u = (1-\\gamma) x_u + \\gamma (1 - x_u),
        \\quad \\hat y_u = \\mathrm{CNet}(x_u, t_{in}, g)

    The collaborative signal comes from one truncated SVD ``U_k S_k V_kᵀ`` of the normalised
    train matrix ``D_U^{-1/2} R D_I^{-1/2}`` (``svd_norm``; the spec's plain ``R`` is an option),
    computed once and kept as buffers. It guides C-Net twice: ``c_u^{cf} = U_k S_k^{1/2}``
    (unit variance) in the condition, as the spec proposes, and (``collab_head``, our choice)
    in item space: the last term decodes the behaviour's low-pass projection through the SVD
    item factors. With ``a = 1``, ``W_z = 0`` (the initialisation) that term is GF-CF's ideal
    low-pass filter (Shen et al., CIKM 2021), so C-Net learns a correction of a strong
    collaborative prior instead of item-specific ``W_in``/``W_out`` from scarce interactions
    alone (``benchmarks/results/baby-like/ld4mrec.md`` has the ablations). ``t_in`` is a learnable (fractional)
    step fed through the sinusoidal embedding, initialised at the first step; it only receives
    a gradient from the optional forward-free term ``forward_free_weight``. The behaviour
    input is dropped out (``input_dropout``) before it is noised. Observed items weigh
    ``positive_weight`` times more in the soft-reconstruction MSE (our choice, as in weighted
    matrix factorisation for implicit feedback): with 7k items and ~6 observed per user, the
    unweighted mean is minimised by a nearly flat output and training erodes the ranking.

    Shapes:
        x_u, x_t, ŷ_u [B, n_items]; W_in [n_items, H]; W_out [H, n_items]; g, h [B, H];
        V_k [n_items, k]; c^{cf} [n_users, k].
    """

    description = "LD4MRec: one-step conditional diffusion on interaction vectors (C-Net, soft targets)"
    Config = LD4MRecConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    sampler = "users"
    uses_features = True
    min_modalities = 0  # without features it is a collaborative-signal-only diffusion model
    train_defaults = {"batch_size": 400}   # users per batch (spec §6: 400-2048)

    def setup(self, dataset):
        c, hid = self.config, self.config.hidden_dim
        self.train_csr = sp.csr_matrix(dataset.train, dtype=np.float32)
        du = np.asarray(self.train_csr.sum(1)).ravel()
        di = np.asarray(self.train_csr.sum(0)).ravel()
        inv = lambda d: np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0).astype(np.float32)
        self.norm_csr = sp.csr_matrix(sp.diags(inv(du)) @ self.train_csr @ sp.diags(inv(di)), dtype=np.float32)
        cond_dim = 0
        if c.collab_signal or c.collab_head:
            self._svd(c, di, inv(di))
            cond_dim += self.cf.shape[1] if c.collab_signal else 0
        mods = self.modalities if c.modality_signal else []
        self.mod_proj = nn.ModuleDict({m: nn.Linear(d, c.embedding_dim) for m, d in self.feature_dims().items()
                                       if m in mods})
        cond_dim += c.embedding_dim * len(self.mod_proj)
        self.cond = nn.Linear(cond_dim, hid) if cond_dim else None
        self.w_in = nn.Linear(self.n_items, hid)
        self.time = nn.Linear(hid, hid)
        self.blocks = nn.ModuleList(CondBlock(hid, c.dropout) for _ in range(c.num_layers))
        self.w_out = nn.Linear(hid, self.n_items)
        if c.collab_head:
            k = self.svd_in.shape[1]
            self.collab_scale = nn.Parameter(torch.ones(k), requires_grad=c.collab_scale_learned)  # GF-CF's filter
            self.collab_out = nn.Linear(hid, k, bias=False)
            nn.init.zeros_(self.collab_out.weight)
        self.t_in = nn.Parameter(torch.zeros(hid if c.t_in == "vector" else 1), requires_grad=c.t_in != "first")
        if c.t_in == "vector":
            with torch.no_grad():
                self.t_in.copy_(timestep_embedding(torch.zeros(1), hid)[0])
        self.register_buffer("alpha_bar", self._schedule())               # [T]
        self.register_buffer("loss_hist", torch.zeros(c.steps, 10))     # importance sampling history
        self.register_buffer("loss_count", torch.zeros(c.steps, dtype=torch.long))

    def _svd(self, c: LD4MRecConfig, di: np.ndarray, di_inv_sqrt: np.ndarray) -> None:
        """Truncated SVD ``M ≈ U_k S_k V_kᵀ`` of ``M = D_u^-½ R D_i^-½`` (or ``R``), computed once.

        Buffers: ``cf = U_k S_k^½`` (unit variance) [n_users, k], the condition; ``svd_in``
        [I, k] and ``svd_out`` [I, k] with ``x svd_in svd_outᵀ`` GF-CF's ideal low-pass filter
        ``x D_i^-½ V_k V_kᵀ D_i^½`` (or ``x V_k V_kᵀ``).
        """
        m = self.norm_csr if c.svd_norm else self.train_csr
        k = max(1, min(c.svd_k, min(m.shape) - 1))
        v0 = np.random.default_rng(0).random(min(m.shape))                # fixed start: deterministic
        u, s, vt = svds(m.astype(np.float64), k=k, v0=v0)
        order = np.argsort(-s)
        u, s, v = u[:, order], s[order], vt[order].T
        cf = u * np.sqrt(s)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        self.register_buffer("cf", f32(cf / (cf.std() + 1e-12)))
        scale_in, scale_out = (di_inv_sqrt, np.sqrt(di)) if c.svd_norm else (1.0, 1.0)
        self.register_buffer("svd_in", f32(v * np.reshape(scale_in, (-1, 1))))
        self.register_buffer("svd_out", f32(v * np.reshape(scale_out, (-1, 1))))

    def _schedule(self) -> torch.Tensor:
        c = self.config
        t = torch.arange(c.steps, dtype=torch.float64)
        alpha_bar = 1 - c.noise_scale * (c.noise_min + t / (c.steps - 1) * (1 - c.noise_min))
        if c.schedule == "clamped":   # β_t recomputed from ᾱ, clamped, ᾱ re-accumulated (OrangeAI)
            alpha_bar = torch.cumprod(1 - betas_from_alpha_bar(alpha_bar, 1e-4, 0.9999), 0)
        return alpha_bar.float()

    # -- conditioning ------------------------------------------------------------------------------
    def condition(self, users: torch.Tensor) -> torch.Tensor | None:
        """Collaborative + modality-preference condition ``[B, H]`` (None when both are off)."""
        parts = [self.cf[users]] if self.config.collab_signal else []                # [B, k]
        if len(self.mod_proj):
            sub = self.norm_csr[users.cpu().numpy()]
            uniq, inv = np.unique(sub.indices, return_inverse=True)     # only the batch users' items
            agg = SparseMatrix(sp.csr_matrix((sub.data, inv.ravel(), sub.indptr), shape=(len(users), len(uniq))),
                               symmetric=False).to(users.device)
            items = torch.from_numpy(uniq).to(users.device)
            for m, proj in self.mod_proj.items():
                parts.append(agg @ proj(self.features(m, items)))          # [B, e]
        return self.cond(torch.cat(parts, dim=1)) if parts else None

    def behaviour_input(self, users: torch.Tensor) -> SparseMatrix:
        """The users' train rows ``[B, I]`` (sparse), after behaviour dropout and optional L2 norm."""
        rows = self.train_csr[users.cpu().numpy()]
        data = torch.from_numpy(rows.data)
        if self.training and self.config.input_dropout > 0:
            p = self.config.input_dropout
            data = data * (torch.rand(len(data)) >= p) / (1 - p)           # torch RNG: checkpointed
        if self.config.input_norm:
            row_of = torch.from_numpy(np.repeat(np.arange(len(users)), np.diff(rows.indptr)))
            norms = torch.zeros(len(users)).index_add_(0, row_of, data.pow(2)).sqrt().clamp_min(1e-12)
            data = data / norms[row_of]
        rows = sp.csr_matrix((data.numpy(), rows.indices, rows.indptr), shape=rows.shape)
        return SparseMatrix(rows, symmetric=False).to(self.w_in.weight.device)

    def cnet(self, h: torch.Tensor, tau: torch.Tensor, g: torch.Tensor | None,
             z: torch.Tensor | None = None) -> torch.Tensor:
        """C-Net after the input map: ``h = W_in x [B, H]``, time embedding ``tau [B|1, H]``,
        condition ``g [B, H]`` and (``collab_head``) ``z = x svd_in [B, k]`` -> ``[B, I]``."""
        g = self.time(tau) if g is None else g + self.time(tau)
        g = g.expand(len(h), -1)
        for block in self.blocks:
            h = block(h, g)
        out = self.w_out(h)
        if z is not None:          # collaborative guidance in item space, corrected by the latent
            out = out + (self.collab_scale * z + self.collab_out(h)) @ self.svd_out.T
        return out

    def encode(self, x: SparseMatrix, t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_in x_t + b [B, H], x_t svd_in [B, k] or None)``; without ``t`` the input is not noised.

        ``x_t = √ᾱ_t x + √(1-ᾱ_t) ε``. With ``latent_noise`` the noise enters as ``L z`` with
        ``L Lᵀ = W Wᵀ`` (``W`` = ``W_in`` stacked on ``svd_inᵀ``) and ``z ~ N(0, I)``: exactly the
        joint distribution of ``W ε`` (so the same expected loss and gradient) without an
        ``[B, I]`` dense noise matrix and product.
        """
        w = self.w_in.weight if not self.config.collab_head else torch.cat([self.w_in.weight, self.svd_in.T])
        out = x @ w.T                                                                  # [B, H (+k)]
        if t is not None:
            ab = self.alpha_bar[t][:, None]
            if self.config.latent_noise:
                cov = w @ w.T + 1e-6 * torch.eye(len(w), device=w.device)
                noise = torch.randn(len(t), len(w), device=w.device) @ torch.linalg.cholesky(cov).T
            else:
                noise = torch.randn(len(t), w.shape[1], device=w.device) @ w.T
            out = ab.sqrt() * out + (1 - ab).sqrt() * noise
        hid = self.config.hidden_dim
        return out[:, :hid] + self.w_in.bias, (out[:, hid:] if self.config.collab_head else None)

    def _tau_in(self) -> torch.Tensor:
        if self.config.t_in == "vector":
            return self.t_in[None]
        return timestep_embedding(self.t_in.abs(), self.config.hidden_dim)

    # -- training ----------------------------------------------------------------------------------
    def _sample_t(self, n: int) -> torch.Tensor:
        c = self.config
        if c.t_sampling == "importance" and bool((self.loss_count >= 10).all()):
            w = self.loss_hist.pow(2).mean(1).sqrt()
        elif c.t_sampling == "ema" and bool((self.loss_count > 0).all()):
            w = self.loss_hist[:, 0].abs()
        else:
            return torch.randint(0, c.steps, (n,), device=self.alpha_bar.device)
        p = w / w.sum()
        return torch.multinomial(0.9 * p + 0.1 / c.steps, n, replacement=True)

    def _record(self, t: torch.Tensor, per_user: torch.Tensor) -> None:
        c, per_user = self.config, per_user.detach()
        for s in torch.unique(t).tolist():          # T steps at most: not a loop over users
            mean = per_user[t == s].mean()
            if c.t_sampling == "ema":
                old = self.loss_hist[s, 0] if self.loss_count[s] > 0 else mean
                self.loss_hist[s, 0] = 0.9 * old + 0.1 * mean
            else:
                self.loss_hist[s] = torch.cat([self.loss_hist[s, 1:], mean[None]])
            self.loss_count[s] += 1

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Soft reconstruction target ``(1-γ) x + γ (1-x)`` of the observed (binary) ``x [B, I]``;
        with ``soft_prob`` p each observed 1 is first softened to 0.5."""
        c = self.config
        if c.soft_prob > 0:
            x = torch.where((x > 0) & (torch.rand_like(x) < c.soft_prob), 0.5 * x, x)
        return (1 - c.smoothing) * x + c.smoothing * (1 - x)

    def _mse(self, pred, y, x=None):
        se = (pred - y).pow(2)                                                         # [B, I]
        if x is not None and self.config.positive_weight != 1.0:
            se = se * (1 + (self.config.positive_weight - 1) * x)
        return se.sum(1) if self.config.loss_sum else se.mean(1)

    def loss(self, batch):
        users = batch.users
        x0 = torch.from_numpy(self.train_csr[users.cpu().numpy()].toarray()).to(self.alpha_bar.device)  # [B, I]
        x_in = self.behaviour_input(users)
        t = self._sample_t(len(users))
        g, y = self.condition(users), self.target(x0)
        h, z = self.encode(x_in, t)
        per_user = self._mse(self.cnet(h, timestep_embedding(t, self.config.hidden_dim), g, z), y, x0)
        if self.config.t_sampling != "uniform":
            self._record(t, per_user)
        loss = per_user.mean()
        if self.config.forward_free_weight > 0:
            h, z = self.encode(x_in)
            loss = loss + self.config.forward_free_weight * self._mse(self.cnet(h, self._tau_in(), g, z), y, x0).mean()
        return loss

    # -- inference ---------------------------------------------------------------------------------
    def prepare_scoring(self):
        self._cache = None   # nothing to precompute: one C-Net call per user batch

    def score(self, users):
        """Forward-free, one-step: the observed train vector goes straight into C-Net at ``t_in``."""
        h, z = self.encode(self.behaviour_input(users))
        return self.cnet(h, self._tau_in(), self.condition(users), z)
