"""LD4MRec: schedule, latent-noise equivalence, switches, training on planted data, bundles."""
import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.data.sampler import Batch
from prismrec.errors import ConfigError
from prismrec.models import build_model
from prismrec.models.ld4mrec import LD4MRecConfig

SMALL = dict(hidden_dim=32, embedding_dim=8, svd_k=8)


def test_closed_form_schedule_matches_the_spec(tiny):
    m = build_model("ld4mrec", tiny, LD4MRecConfig(steps=5, noise_scale=0.1, noise_min=1e-3, **SMALL))
    t = np.arange(1, 6)
    expected = 1 - 0.1 * (1e-3 + (t - 1) / 4 * (1 - 1e-3))
    np.testing.assert_allclose(m.alpha_bar.numpy(), expected, rtol=1e-6)
    clamped = build_model("ld4mrec", tiny, LD4MRecConfig(schedule="clamped", **SMALL)).alpha_bar
    assert torch.all(clamped[1:] < clamped[:-1]) and clamped[0] <= 1 - 1e-4 + 1e-7


def test_latent_noise_has_the_distribution_of_w_in_eps(tiny):
    """W_in ε and L z (L Lᵀ = W_in W_inᵀ) have the same covariance: the cheap path is exact in law."""
    torch.manual_seed(0)
    m = build_model("ld4mrec", tiny, LD4MRecConfig(**SMALL))
    w = m.w_in.weight.detach()
    n = 20000
    lz = torch.randn(n, w.shape[0]) @ torch.linalg.cholesky(w @ w.T + 1e-6 * torch.eye(w.shape[0])).T
    we = torch.randn(n, w.shape[1]) @ w.T
    target = w @ w.T
    for sample in (lz, we):
        cov = sample.T @ sample / n
        assert (cov - target).abs().max() < 0.08 * target.diag().max()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="t_sampling"):
        LD4MRecConfig(t_sampling="zipf")
    with pytest.raises(ValueError, match="steps"):
        LD4MRecConfig(steps=1)
    with pytest.raises(ConfigError, match="t_in"):
        Recommender("ld4mrec", t_in="last")


@pytest.mark.parametrize("switches", [
    dict(collab_signal=False), dict(modality_signal=False), dict(collab_signal=False, modality_signal=False),
    dict(t_sampling="importance", t_in="vector", forward_free_weight=0.5), dict(t_sampling="ema", t_in="first"),
    dict(latent_noise=False, input_norm=True, soft_prob=0.3, loss_sum=True), dict(svd_norm=False, collab_head=False), dict(collab_signal=False, collab_head=True),
])
def test_every_switch_trains_and_scores(tiny, switches):
    torch.manual_seed(0)
    m = build_model("ld4mrec", tiny, LD4MRecConfig(**SMALL, **switches))
    users = torch.arange(0, 64)
    for _ in range(12):     # enough batches for the importance sampler to leave its warm-up
        loss = m.loss(Batch(users))
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
    with m.scoring():
        s = m.score(torch.tensor([0, 5]))
    assert s.shape == (2, tiny.n_items) and torch.isfinite(s).all()
    if switches.get("forward_free_weight"):
        assert m.t_in.grad is not None     # the forward-free term is what trains t_in


def test_inference_is_one_deterministic_call(tiny):
    m = build_model("ld4mrec", tiny, LD4MRecConfig(**SMALL))
    with m.scoring():
        a, b = m.score(torch.arange(10)), m.score(torch.arange(10))
        single = m.score(torch.tensor([3]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(single[0], a[3], rtol=1e-5, atol=1e-5)


def test_learns_the_planted_signal_and_round_trips(tiny, tmp_path):
    pop = Recommender("pop").fit(tiny, show_progress=False).metrics["test"]["recall@20"]
    rec = Recommender("ld4mrec", epochs=15, batch_size=100, hidden_dim=64, learning_rate=3e-3)
    rec.fit(tiny, run_dir=tmp_path, show_progress=False)
    assert rec.metrics["test"]["recall@20"] > pop + 0.05
    loaded = Recommender.load(tmp_path)
    np.testing.assert_allclose(loaded.score(np.arange(6)), rec.score(np.arange(6)), rtol=1e-5, atol=1e-5)


def test_uses_modality_features_through_the_contract(tiny):
    """The modality condition reads ``features()``, so changing features changes scores."""
    m = build_model("ld4mrec", tiny, LD4MRecConfig(**SMALL))
    with m.scoring():
        before = m.score(torch.arange(4)).clone()
        m.feat_image.mul_(3.0)
        after = m.score(torch.arange(4))
    assert not torch.allclose(before, after)


def test_collaborative_head_starts_as_the_ideal_low_pass_filter(tiny):
    """svd_in · svd_outᵀ = D_I^-½ V_k V_kᵀ D_I^½ of the normalised train matrix (GF-CF)."""
    m = build_model("ld4mrec", tiny, LD4MRecConfig(svd_k=8, hidden_dim=16, embedding_dim=8))
    r = tiny.train.toarray().astype(np.float64)
    du, di = r.sum(1), r.sum(0)
    inv = lambda d: np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0)
    _, _, vt = np.linalg.svd(inv(du)[:, None] * r * inv(di)[None], full_matrices=False)
    v = vt[:8].T
    expected = (inv(di)[:, None] * v) @ (np.sqrt(di)[:, None] * v).T
    np.testing.assert_allclose((m.svd_in @ m.svd_out.T).numpy(), expected, atol=1e-4)
    assert torch.all(m.collab_scale == 1) and torch.all(m.collab_out.weight == 0)
