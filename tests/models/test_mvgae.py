"""MVGAE: loss, gradients and scores against a dense reference of the equations (MMRec's form of the
loss, dropout and sampling reseeded identically), learning, plug-ins and config checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from prismrec.data import make_synthetic
from prismrec.models import build_model
from prismrec.models.mvgae import MVGAE, MVGAEConfig, product_of_experts
from tests.models.helpers import (assert_loss_and_grads_match, check_config_names_field, first_batch,
                                  check_learns_beyond_popularity, check_low_precision_close,
                                  check_trains_with_plugin, check_tunable)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("mvgae", ds, MVGAEConfig(**{"feature_precision": "float32", **cfg}))


def _batch(ds, size=96, seed=0):
    return first_batch(ds, size, seed)


def _dense_mean_adjacency(train):
    """Row-normalised ``A + I`` of the bipartite graph as a dense ``[N + I, N + I]`` matrix."""
    r = torch.tensor(train.toarray() > 0, dtype=torch.float32)
    n = r.shape[0]
    a = torch.eye(n + r.shape[1])
    a[:n, n:] += r
    a[n:, :n] += r.T
    return a / a.sum(dim=1, keepdim=True)


def _dense_view(enc, adj, item_inputs, num_layers, p, training):
    """One encoder's ``(μ, log σ²)``: the docstring's layers with dense products (dropout in the same order)."""
    act = torch.nn.LeakyReLU(0.01)
    x = F.normalize(torch.vstack([enc.preference, item_inputs @ enc.proj.weight.T + enc.proj.bias]), p=2, dim=1)

    def conv(x, k):
        return act(F.dropout(F.normalize(adj @ x @ enc.conv[k] + enc.conv_bias[k], p=2, dim=1), p, training))
    for k in range(num_layers):
        x = act(enc.out[k](conv(x, k)))
    heads = [enc.out[num_layers + j](conv(x, num_layers + j)) + act(enc.skip[j](x)) for j in range(2)]
    return heads[0], heads[1]


def _fuse(experts):
    """Product of Gaussians written with variances: ``σ² = 1 / Σ 1/(σ_k² + 1e-8)``, ``μ = σ² Σ μ_k/(σ_k² + 1e-8)``."""
    var_k = [lv.exp() + 1e-8 for _, lv in experts]
    var = 1.0 / sum(1.0 / v for v in var_k)
    return var * sum(mu / v for (mu, _), v in zip(experts, var_k)), torch.log(var)


def _dense_posteriors(model, train, training):
    adj, cfg = _dense_mean_adjacency(train), model.config
    views = [_dense_view(model.encoders[m], adj, model.features(m), cfg.num_layers, cfg.dropout, training)
             for m in model.modalities]
    collab = _dense_view(model.collaborative, adj, model.collab_table, cfg.num_layers, cfg.dropout, training)
    return [_fuse([_fuse(views), collab]), *views, collab]


def _dense_loss(model, batch, train, seed):
    """The loss, term by term: sigmoid'd samples (noise drawn for the batch's distinct rows, in the
    model's order), log2-sigmoid of the positive score minus the negative one (the pair's own, or
    MMRec's hardest of the batch; raw, or MMRec's sigmoid'd), summed; plus beta times the KL
    averaged over all nodes; for the fused posterior and each view."""
    torch.manual_seed(seed)
    n, b, cfg = model.n_users, len(batch.users), model.config
    uniq, inverse = torch.unique(torch.cat([batch.users, n + batch.pos_items, n + batch.neg_items]),
                                 return_inverse=True)
    total = 0.0
    for mu, logvar in _dense_posteriors(model, train, training=True):
        lv = torch.clamp(logvar, max=10.0)
        noise = torch.randn(len(uniq), mu.shape[1])
        z = torch.sigmoid(mu[uniq] + cfg.noise_scale * noise * torch.exp(lv[uniq] / 2))[inverse]
        u, p, q = z[:b], z[b: 2 * b], z[2 * b:]
        pos = (u * p).sum(1)
        if cfg.hardest_negative:
            neg = (u[:, None, :] * q[None, :, :]).sum(-1).max(dim=1).values   # [B, B] -> [B]
        else:
            neg = (u * q).sum(1)
        if cfg.sigmoid_scores:
            pos, neg = torch.sigmoid(pos), torch.sigmoid(neg)
        recon = -torch.log2(torch.sigmoid(pos - neg)).sum()
        kl = -0.5 * torch.mean(torch.sum(1 + lv - mu ** 2 - lv.exp(), dim=1))
        total = total + recon + cfg.beta * kl
    return total


@pytest.mark.parametrize("fixture,cfg", [("tiny", {}), ("tiny_one_modality", {"num_layers": 2}),
                                         ("tiny_three_modalities", {"num_layers": 3, "beta": 0.5, "latent_dim": 8,
                                                                    "embedding_dim": 16, "dropout": 0.3}),
                                         ("tiny", {"hardest_negative": True}),
                                         ("tiny", {"hardest_negative": True, "sigmoid_scores": True})])
def test_loss_gradients_and_scores_match_dense_reference(fixture, cfg, request):
    ds = request.getfixturevalue(fixture)
    model = _model(ds, **cfg)
    batch = _batch(ds)
    torch.manual_seed(7)
    assert_loss_and_grads_match(model, batch, lambda mod, b: _dense_loss(mod, b, ds.train, seed=7),
                                relative_grad_atol=1e-5)
    with torch.no_grad():
        e = torch.sigmoid(_dense_posteriors(model, ds.train, training=False)[0][0])
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(6)), e[:6] @ e[model.n_users:].T, rtol=1e-5, atol=1e-5)


def test_scoring_is_deterministic_and_training_samples(tiny):
    model = _model(tiny)
    with model.scoring():
        first = model.score(torch.arange(10))
    model.train()
    batch = _batch(tiny)
    assert model.loss(batch).item() != model.loss(batch).item()   # dropout and reparameterisation noise
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(10)), first, rtol=0, atol=0)


def test_product_of_experts_adds_precisions():
    mu, lv = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, math.log(3.0)]])
    fused_mu, fused_lv = product_of_experts([mu, torch.zeros_like(mu)], [lv, lv])
    torch.testing.assert_close(fused_mu, mu / 2)
    torch.testing.assert_close(fused_lv, lv - math.log(2.0), atol=1e-6, rtol=0)


def test_random_inputs_stay_fixed(tiny):
    model = _model(tiny)
    names = {n for n, _ in model.named_parameters()}
    assert not any("preference" in n or "collab_table" in n for n in names)
    before = model.collab_table.clone(), model.encoders["image"].preference.clone()
    opt = model.configure_optimizer(1e-2, 0.0)
    model.loss(_batch(tiny)).backward()
    opt.step()
    torch.testing.assert_close(model.collab_table, before[0], rtol=0, atol=0)
    torch.testing.assert_close(model.encoders["image"].preference, before[1], rtol=0, atol=0)


def test_bf16_projection_close_to_fp32():
    ds = make_synthetic(120, 60, 8, modalities={"image": 300, "text": 16}, seed=5, name="wide")
    batch = _batch(ds, 64)
    check_low_precision_close(lambda prec: _model(ds, feature_precision=prec), batch,
                              lambda m: m.encoders["image"].proj.weight.grad, seed=3)


def test_learns_beyond_popularity(tiny, tmp_path):
    # the sigmoid'd embeddings learn more slowly than check_beats_most_popular's six epochs allow
    check_learns_beyond_popularity("mvgae", tiny, tmp_path)


def test_mmrec_sigmoid_scores_stall(tiny):
    """MMRec's sigmoid on each dot product (``z`` in (0, 1)^d: scores near d/4) leaves the loss flat."""
    model = _model(tiny, sigmoid_scores=True, beta=0.0)
    model.train()
    model.loss(_batch(tiny)).backward()
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) < 1e-4


@pytest.mark.parametrize("plugin", ["befa", "erl"])
def test_trains_with_feature_plugins(tiny, plugin):
    check_trains_with_plugin("mvgae", tiny, plugin)


@pytest.mark.parametrize("field,value", [("embedding_dim", 0), ("latent_dim", 0), ("num_layers", 0),
                                         ("beta", -1.0), ("dropout", 1.0), ("noise_scale", 0.0),
                                         ("feature_precision", "fp8")])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(MVGAEConfig, field, value, MVGAE)


def test_tunable_ranges():
    check_tunable("mvgae", {"beta", "learning_rate"})
