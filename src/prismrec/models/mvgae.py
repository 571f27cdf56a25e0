"""MVGAE (Yi & Chen, IEEE TMM 2021): multi-modal variational graph auto-encoder, with MMRec's semantics."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, PosFloat, PosInt, Rate, tunable
from prismrec.graphs import SparseMatrix, bipartite_adjacency
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import WIDE, Precision, dot, project_fixed, resolve_precision, xavier_normal_param

LOGVAR_CAP = 10.0    # log-variances are clipped from above before exp() in sampling and KL (MMRec)
PRECISION_EPS = 1e-8  # added to each expert's variance before inverting it (MMRec)


@dataclass(frozen=True)
class MVGAEConfig(ModelConfig):
    # defaults: MMRec's MVGAE.yaml, first value of each grid list (learning rate: train_defaults)
    embedding_dim: PosInt = 64    # embedding_size; also the width of the collaborative input table
    latent_dim: PosInt = 128      # every view's input projection (hard-coded dim_latent=128 in MMRec)
    num_layers: PosInt = 1        # n_layers: graph layers before the two Gaussian heads
    beta: NonNegFloat = tunable(0.01, 0.01, 1.0, log=True)  # KL weight; MMRec grid {0.01, 0.1, 1}
    dropout: Rate = 0.1           # after every graph convolution (hard-coded in MMRec's conv layer)
    noise_scale: PosFloat = 0.1   # standard deviation factor of the reparameterisation (hard-coded)
    feature_precision: Precision = "auto"  # wide feature projections in bf16 ("auto": where native)
    hardest_negative: bool = False  # True: MMRec's max over all the batch's negatives (see docstring)
    sigmoid_scores: bool = False    # True: MMRec's sigmoid on each training dot product (see docstring)


def mean_with_self(train: sp.spmatrix) -> SparseMatrix:
    """``D̃⁻¹(A + I)`` over the ``(N+I)²`` user-item graph: each node averages itself and its neighbours
    (PyG ``aggr='mean'`` after ``add_self_loops``)."""
    a = bipartite_adjacency(train, normalize=False) + sp.eye(sum(train.shape), dtype=np.float32, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    return SparseMatrix(sp.diags((1.0 / deg).astype(np.float32)) @ a, symmetric=False)


def product_of_experts(mus: list[torch.Tensor], logvars: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian product ``(μ, log σ²)`` of independent experts: precisions add, means are precision-weighted."""
    prec = [1.0 / (lv.exp() + PRECISION_EPS) for lv in logvars]
    total = sum(prec)
    return sum(m * p for m, p in zip(mus, prec)) / total, -total.log()


class GaussianGraphEncoder(nn.Module):
    """One view's encoder: items' inputs under fixed random user preferences, graph layers, two heads.

    .. math::
        x^{(0)} = \\ell_2([P; \\mathrm{proj}(f)]), \\quad
        c(x; W, b) = \\mathrm{drop}(\\ell_2(\\tilde A x W + b)), \\quad
        x^{(l+1)} = \\sigma(G_l\\, \\sigma(c(x^{(l)}; W_l, b_l)))

        \\mu = H_\\mu \\sigma(c(x^{(L)}; W_\\mu, b_\\mu)) + \\sigma(S_\\mu x^{(L)}), \\quad
        \\log\\sigma^2 = H_\\sigma \\sigma(c(x^{(L)}; W_\\sigma, b_\\sigma)) + \\sigma(S_\\sigma x^{(L)})

    (σ = LeakyReLU; ``G``, ``H``, ``S`` affine.) Shapes: inputs [n_items, latent_dim] ->
    ``μ, log σ²`` [n_users + n_items, embedding_dim].
    """

    def __init__(self, n_users: int, dim_in: int, cfg: MVGAEConfig):
        super().__init__()
        c, d = cfg.latent_dim, cfg.embedding_dim
        self.p = cfg.dropout
        self.proj = nn.Linear(dim_in, c)
        self.register_buffer("preference", nn.init.xavier_normal_(torch.empty(n_users, c)))  # never trained
        dims = [c] + [d] * (cfg.num_layers - 1) + [d, d]      # hidden layers, then the μ and log σ² heads
        self.conv = nn.ParameterList([xavier_normal_param(k, d) for k in dims])
        self.conv_bias = nn.ParameterList([nn.Parameter(torch.empty(d).uniform_(-k ** -0.5, k ** -0.5))
                                           for k in dims])   # PyG's uniform(fan_in) bias
        self.out = nn.ModuleList([nn.Linear(d, d) for _ in dims])
        self.skip = nn.ModuleList([nn.Linear(d, d) for _ in range(2)])
        for lin in [self.proj, self.out[0], *self.out[-2:], *self.skip]:  # as MMRec re-initialises
            nn.init.xavier_normal_(lin.weight)

    def _conv(self, adj: SparseMatrix, x: torch.Tensor, k: int) -> torch.Tensor:
        h = F.normalize(adj @ (x @ self.conv[k]) + self.conv_bias[k], dim=1)
        return F.leaky_relu(F.dropout(h, self.p, self.training))

    def forward(self, adj: SparseMatrix, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.normalize(torch.cat([self.preference, items]), dim=1)  # [N + I, latent_dim]
        hidden = len(self.conv) - 2
        for k in range(hidden):
            x = F.leaky_relu(self.out[k](self._conv(adj, x, k)))    # [N + I, d]
        return tuple(self.out[hidden + j](self._conv(adj, x, hidden + j)) + F.leaky_relu(self.skip[j](x))
                     for j in range(2))


@register("mvgae")
class MVGAE(Model):
    """A variational graph encoder per modality and one for collaborative signal, fused by a product of experts.

    Multi-modal Variational Graph Auto-encoder for Recommendation Systems (Yi & Chen, IEEE TMM 2021;
    authors' code `jing-1/MVGAE <https://github.com/jing-1/MVGAE>`_), as re-implemented in
    MMRec (``models/mvgae.py``). Every view ``v`` (each modality's features, and a fixed random
    "collaborative" item table) has a :class:`GaussianGraphEncoder` giving ``q_v = N(μ_v, σ_v²)`` per node;

    .. math::
        q_{\\mathcal M} = \\prod_{m} q_m, \\quad q = q_{\\mathcal M} \\cdot q_c, \\quad
        \\prod_k N(\\mu_k, \\sigma_k^2) \\propto N\\Big(\\frac{\\sum_k \\mu_k \\tau_k}{\\sum_k \\tau_k},
        \\frac{1}{\\sum_k \\tau_k}\\Big), \\ \\tau_k = \\frac{1}{\\sigma_k^2 + 10^{-8}}

        z = \\mathrm{sigmoid}(\\mu + 0.1\\, \\sigma \\odot \\epsilon), \\quad
        \\ell_{rec}(z) = -\\sum_{b} \\log_2 \\mathrm{sigmoid}(z_{u_b}^\\top z_{i_b} - z_{u_b}^\\top z_{j_b})

        \\mathcal L = \\sum_{q' \\in \\{q, q_1, .., q_M, q_c\\}} \\ell_{rec}(z') + \\beta\\, \\mathrm{KL}(q' \\Vert N(0, I)),
        \\quad \\hat y_{ui} = \\mathrm{sigmoid}(\\mu_u)^\\top \\mathrm{sigmoid}(\\mu_i)

    with the KL summed over dimensions and averaged over all ``N + I`` nodes, ``log σ²`` capped at 10.
    This follows MMRec where it adds to the authors' code (the ``beta`` weight of the KL terms) and
    in what both share: ``z`` through a sigmoid (their "amazon" branch), one ``-log2`` term per batch
    pair, summed; the fixed random tensors (users' preferences, the collaborative table) stay out of
    the optimiser. MMRec's MVGAE does not learn (recall near zero, MMRec issue #4); three changes
    of its port are not followed: (1) it indexes the joint node table with un-shifted item ids in the
    loss (its "items" are the first ``n_items`` rows, mostly users); here item ``i`` is row ``N + i``,
    as in the authors' code and MMRec's own scoring. (2) It passes both dot products through a
    sigmoid before the difference: with ``z`` in ``(0, 1)^d`` they start near ``d/4``, where the
    sigmoid is flat to float32 precision, so the loss stays constant (``sigmoid_scores=True``
    keeps MMRec's form). (3) Its negative for user ``b`` is the hardest of all ``B`` batch negatives
    (``hardest_negative=True``), a reshaping of the authors' max over each user's own negatives;
    with prismrec's one negative per pair that max is the pair's own negative (the default), which
    learns faster on the synthetic data. MMRec ranks with ``sigmoid(μ)`` from the last training
    batch (dropout on, one step stale); here scoring recomputes the means in eval mode:
    deterministic, no sampling. MMRec's image and text become any number of modalities, in the
    dataset's order (one modality: its single expert is kept). Hidden layers keep MMRec's
    non-concatenating update (its unused skip branch there is left out).

    Speed: the sampled ``z`` is drawn only for the batch's distinct rows (same distribution as sampling
    all nodes); wide feature projections run in bf16 where the CPU has it natively.

    Shapes:
        f_m [n_items, d_m]; P [n_users, latent_dim]; Ã sparse [(N + I)²]; μ, log σ² [N + I, d].
    """

    description = "MVGAE: Gaussian graph encoder per modality + collaborative view, product-of-experts fusion"
    Config = MVGAEConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True
    train_defaults = {"learning_rate": 1e-4}   # MVGAE.yaml's learning_rate grid, first value

    def setup(self, dataset):
        cfg = self.config
        self.adj = mean_with_self(dataset.train)
        self.encoders = nn.ModuleDict({m: GaussianGraphEncoder(self.n_users, d, cfg)
                                       for m, d in self.feature_dims().items()})
        self.collaborative = GaussianGraphEncoder(self.n_users, cfg.embedding_dim, cfg)
        self.register_buffer("collab_table", nn.init.xavier_normal_(torch.empty(self.n_items, cfg.embedding_dim)))
        low = resolve_precision(cfg.feature_precision) == torch.bfloat16
        self.bf16 = {m: low and d >= WIDE for m, d in self.feature_dims().items()}
        self._bf16_cache: dict = {}

    def posteriors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(μ, log σ²)`` [N + I, d] of the fused posterior, each modality (dataset order), the collaborative view."""
        views = []
        for m, enc in self.encoders.items():
            lin = enc.proj
            views.append(enc(self.adj, project_fixed(self.features(m), lin.weight, lin.bias, self._bf16_cache, m,
                                                     self.bf16[m])))
        collab = self.collaborative(self.adj, self.collaborative.proj(self.collab_table))
        content = product_of_experts([v[0] for v in views], [v[1] for v in views])
        fused = product_of_experts([content[0], collab[0]], [content[1], collab[1]])
        return [fused, *views, collab]

    def embeddings(self):
        e = torch.sigmoid(self.posteriors()[0][0])
        return e[: self.n_users], e[self.n_users:]

    def loss(self, batch):
        cfg, b = self.config, len(batch.users)
        rows = torch.cat([batch.users, self.n_users + batch.pos_items, self.n_users + batch.neg_items])
        uniq, inverse = torch.unique(rows, return_inverse=True)
        total = 0.0
        for mu, logvar in self.posteriors():
            logvar = logvar.clamp(max=LOGVAR_CAP)
            z = mu[uniq]
            if self.training:
                z = z + cfg.noise_scale * torch.randn_like(z) * (0.5 * logvar[uniq]).exp()
            u, p, q = torch.sigmoid(z)[inverse].view(3, b, -1)
            pos = dot(u, p)
            neg = (u @ q.T).max(dim=1).values if cfg.hardest_negative else dot(u, q)
            if cfg.sigmoid_scores:
                pos, neg = torch.sigmoid(pos), torch.sigmoid(neg)
            recon = -F.logsigmoid(pos - neg).sum() / math.log(2.0)
            kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum() / mu.shape[0]
            total = total + recon + cfg.beta * kl
        return total
