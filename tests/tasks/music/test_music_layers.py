"""Product of experts against the closed-form product of Gaussian densities; KL and likelihood helpers."""
from __future__ import annotations

import math

import pytest
import torch

from prismrec.tasks.music.layers import (gaussian_log_density, kl_standard_normal, product_of_experts,
                                         reparameterize, symmetric_info_nce)


def _experts(n, b=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, k, generator=g, dtype=torch.float64),
             torch.randn(b, k, generator=g, dtype=torch.float64)) for _ in range(n)]


@pytest.mark.parametrize("n, prior", [(1, True), (2, True), (3, True), (2, False), (1, False)])
def test_poe_matches_closed_form(n, prior):
    experts = _experts(n)
    mu, logvar = product_of_experts(experts, prior=prior)
    all_e = experts + ([(torch.zeros_like(experts[0][0]), torch.zeros_like(experts[0][0]))] if prior else [])
    # closed form: precisions add, the mean is the precision-weighted mean
    prec = sum(torch.exp(-lv) for _, lv in all_e)
    want_mu = sum(m * torch.exp(-lv) for m, lv in all_e) / prec
    torch.testing.assert_close(logvar, -torch.log(prec))
    torch.testing.assert_close(mu, want_mu)
    # and the densities: Π_k N(x; μ_k, σ_k²) ∝ N(x; μ, σ²), so their log ratio is constant in x
    xs = torch.randn(50, *mu.shape, dtype=torch.float64)
    lhs = sum(gaussian_log_density(xs, m, lv) for m, lv in all_e)
    rhs = gaussian_log_density(xs, mu, logvar)
    diff = lhs - rhs                                                   # [50, B]
    torch.testing.assert_close(diff, diff[:1].expand_as(diff))


def test_poe_single_expert_without_prior_is_identity():
    (m, lv), = _experts(1)
    mu, logvar = product_of_experts([(m, lv)], prior=False)
    torch.testing.assert_close(mu, m)
    torch.testing.assert_close(logvar, lv)


def test_poe_weights_confident_expert_and_is_stable():
    sure = (torch.full((1, 2), 5.0), torch.full((1, 2), -9.0))     # σ² = e^-9
    vague = (torch.full((1, 2), -5.0), torch.full((1, 2), 9.0))
    mu, logvar = product_of_experts([sure, vague])
    assert torch.allclose(mu, torch.full((1, 2), 5.0), atol=1e-3) and torch.isfinite(logvar).all()
    big = (torch.full((1, 2), 1.0), torch.full((1, 2), -80.0))       # would overflow a naive exp(-logvar) sum
    mu, logvar = product_of_experts([big, big])
    assert torch.isfinite(mu).all() and torch.allclose(logvar, torch.full((1, 2), -80.0 - math.log(2)))


def test_poe_needs_an_expert():
    with pytest.raises(ValueError, match="no expert"):
        product_of_experts([])


def test_kl_and_sampling():
    mu, lv = torch.zeros(2, 3), torch.zeros(2, 3)
    assert torch.allclose(kl_standard_normal(mu, lv), torch.zeros(2))
    mu, lv = torch.tensor([[1.0]]), torch.tensor([[math.log(4.0)]])
    assert torch.allclose(kl_standard_normal(mu, lv), torch.tensor([0.5 * (1 + 4 - 1 - math.log(4))]))
    torch.manual_seed(0)
    s = reparameterize(torch.full((1, 1), 2.0), torch.full((1, 1), math.log(9.0)), 20000)
    assert s.shape == (20000, 1, 1) and abs(s.mean() - 2) < 0.1 and abs(s.std() - 3) < 0.1


def test_info_nce_masks_repeated_targets():
    a = torch.eye(3)
    b = torch.eye(3)
    b[2] = b[0]                                   # rows 0 and 2 share a target
    same = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.bool)
    masked = symmetric_info_nce(a, b, 0.1, same)
    assert masked < symmetric_info_nce(a, b, 0.1)
