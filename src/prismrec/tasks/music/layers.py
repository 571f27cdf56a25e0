"""Building blocks of the music-matching models: MLPs, Gaussian encoders, product of experts, losses."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOGVAR_RANGE = (-10.0, 10.0)  # keeps exp(±logvar) finite in float32


def mlp(dims: list[int], dropout: float = 0.0, *, last_activation: bool = False) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ReLU (+ dropout) between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """``x -> (μ, log σ²)`` of a diagonal Gaussian posterior ``q(z | x)``.

    Shapes:
        x: [B, d_in]; returns two [B, K] tensors.
    """

    def __init__(self, d_in: int, hidden: tuple[int, ...], latent_dim: int, input_dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(input_dropout)
        self.body = mlp([d_in, *hidden], last_activation=True)
        self.head = nn.Linear(hidden[-1] if hidden else d_in, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(self.drop(x))).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


def product_of_experts(experts: list[tuple[torch.Tensor, torch.Tensor]], *, prior: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision-weighted product of diagonal Gaussians, optionally times the prior expert N(0, I).

    .. math::
        \\tau_k = e^{-\\log\\sigma_k^2},\\quad \\tau = \\textstyle\\sum_k \\tau_k,\\quad
        \\mu = \\textstyle\\sum_k \\tau_k \\mu_k / \\tau,\\quad \\log\\sigma^2 = -\\log\\tau

    A missing modality is simply left out of ``experts``: the product of the available experts
    (and the prior) is still a proper posterior. At least one expert must be given (it fixes the
    batch shape).

    Args:
        experts: ``(μ_k, log σ²_k)`` pairs, each ``[B, K]``.
        prior: include ``N(0, I)`` as one more expert (MVAE / CMVAE convention).

    Returns:
        ``(μ, log σ²)``, each ``[B, K]``.
    """
    if not experts:
        raise ValueError("no expert given; pass at least one (μ, log σ²) pair to fix the batch shape")
    mus = torch.stack([m for m, _ in experts])                           # [E, B, K]
    logvars = torch.stack([lv for _, lv in experts])                     # [E, B, K]
    if prior:
        mus = torch.cat([mus, torch.zeros_like(mus[:1])])
        logvars = torch.cat([logvars, torch.zeros_like(logvars[:1])])
    # log τ = logsumexp(-log σ²_k): exact and overflow-free even for very confident experts
    log_tau = torch.logsumexp(-logvars, dim=0)                           # [B, K]
    weights = torch.exp(-logvars - log_tau)                              # [E, B, K], sums to 1 over E
    return (weights * mus).sum(0), -log_tau


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """A sample ``μ + σ ε`` (``[B, K]``), or ``n`` samples (``[n, B, K]``); uses torch's global RNG."""
    std = torch.exp(0.5 * logvar)
    if n is None:
        return mu + std * torch.randn_like(std)
    return mu + std * torch.randn((n, *std.shape), dtype=std.dtype, device=std.device)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, σ²) ‖ N(0, I))`` summed over dimensions: ``[B, K] -> [B]``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def gaussian_log_density(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(x; μ, σ²)`` summed over the last dimension (broadcasting over leading ones)."""
    return -0.5 * ((x - mu).pow(2) * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, scale: float) -> torch.Tensor:
    """``−log N(x; mean, scale²·I)`` summed over the last dimension (constants kept)."""
    return 0.5 * ((x - mean) / scale).pow(2).sum(-1) + x.shape[-1] * math.log(scale * math.sqrt(2 * math.pi))


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float,
                       same: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE on cosine similarities; row ``i`` of ``a`` matches row ``i`` of ``b``.

    Args:
        same: optional bool ``[B, B]``, True where columns ``j != i`` hold the same target as ``i``
            (the same track twice in a batch); those are removed from the negatives.
    """
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature     # [B, B]
    if same is not None:
        logits = logits.masked_fill(same & ~torch.eye(len(a), dtype=torch.bool, device=a.device), float("-inf"))
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
