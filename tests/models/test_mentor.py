"""MENTOR: the stacked-encoder fast path (one first-layer product per table, one propagation of all
encoders, blocked all-pairs InfoNCE, moments of tiled levels without tiling) matches a dense
reference of the equations; perturbation, config, learning, plug-ins, serving."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec import Recommender
from prismrec.config import resolve
from prismrec.data.sampler import PairwiseSampler
from prismrec.errors import ConfigError
from prismrec.models import build_model
from prismrec.models.mentor import MENTOR, MENTORConfig
from tests.models.helpers import (
    assert_loss_and_grads_match,
    check_low_precision_close,
    check_serve_round_trip,
    check_trains_with_plugin,
)

EXACT = {"feature_precision": "float32", "cl_precision": "float32"}


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("mentor", ds, MENTORConfig(**{**EXACT, **cfg}))


def _batch(ds, size=64):
    return next(iter(PairwiseSampler(ds.train, size, np.random.default_rng(0))))


def _encoder_input(model, table, enc, copy):
    """``norm([P; W2 LeakyReLU(W1 X + b1) + b2])`` of one encoder copy, written out."""
    width = enc.hidden
    w1, b1 = enc.first.weight[copy * width:(copy + 1) * width], enc.first.bias[copy * width:(copy + 1) * width]
    hidden = F.leaky_relu(table @ w1.T + b1)
    x = torch.cat([enc.preference[copy], hidden @ enc.second[copy].weight.T + enc.second[copy].bias])
    return x / x.norm(dim=1, keepdim=True)


def _dense_reps(model, noise=None):
    """Per encoder name: ``[r_U; r_I + S^L r_I]`` with ``r = Σ_l Â^l x`` from dense matrices; the
    perturbed copies (``(m, 1)``, ``(m, 2)``) add ``ε sign(h) ⊙ noise`` after every layer."""
    cfg, n = model.config, model.n_users
    adj, s = model.adj.a.to_dense(), model.item_graph.a.to_dense()
    s_pow = torch.linalg.matrix_power(s, cfg.num_mm_layers)
    names = [(m, 0) for m in model.modalities] + [("id", 0)]
    if noise is not None:
        names += [(m, c) for c in (1, 2) for m in model.modalities]
    out = {}
    for name in names:
        m, c = name
        x = (_encoder_input(model, model.id_table, model.id_encoder, 0) if m == "id"
             else _encoder_input(model, model.features(m), model.encoders[m], c))
        total, h = x, x
        for layer in range(cfg.num_ui_layers):
            h = adj @ h
            if c > 0:
                slot = (c - 1) * len(model.modalities) + model.modalities.index(m)
                h = h + cfg.noise_eps * torch.sign(h.detach()) * noise[layer][:, slot]
            total = total + h
        out[name] = torch.cat([total[:n], total[n:] + s_pow @ total[n:]])
    return out


def _draw_noise(model, n_rows):
    """The perturbation directions the fast path draws, in its order: one ``[rows, 2M, d]`` draw per layer."""
    d, views = model.config.embedding_dim, 2 * len(model.modalities)
    return [F.normalize(torch.rand(n_rows, views, d), dim=-1) for _ in range(model.config.num_ui_layers)]


def _dense_loss(model, batch):
    cfg, n, mods = model.config, model.n_users, model.modalities
    noise = _draw_noise(model, n + model.n_items) if cfg.mask_weight_g > 0 else None
    reps = _dense_reps(model, noise)

    def fused(copy):
        users = torch.cat([model.user_weight[:, k:k + 1] * reps[(m, copy)][:n] for k, m in enumerate(mods)], 1)
        return users, torch.cat([reps[(m, copy)][n:] for m in mods], 1)
    users, items = fused(0)
    u = users[batch.users]
    margin = (u * items[batch.pos_items]).sum(1) - (u * items[batch.neg_items]).sum(1)
    loss = (torch.log1p(torch.exp(-margin)) / math.log(2.0)).mean()
    reg = sum(model.encoders[m].preference[0][batch.users].square().mean() for m in mods)
    loss = loss + cfg.reg_weight * (reg + model.user_weight.square().mean())
    levels = [torch.cat([users, items])] + [reps[(k, 0)].repeat(1, len(mods)) for k in ["id", *mods]]
    stats = [(t.mean(), t.var()) for t in levels]
    align = sum((a[0] - b[0]).abs() + (a[1] - b[1]).abs() for i, a in enumerate(stats) for b in stats[i + 1:])
    loss = loss + cfg.align_weight * align
    if cfg.feature_mask == "gradient":
        for h in (users, items):
            loss = loss + cfg.mask_weight_f * (1 - F.cosine_similarity(F.dropout(h, cfg.dropout),
                                                                       model.mask_mlp(h)).mean())
    if noise is not None:
        def nce(a, b):
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
            return F.cross_entropy(a @ b.T / cfg.temperature, torch.arange(len(a)))
        (u1, i1), (u2, i2) = fused(1), fused(2)
        loss = loss + cfg.mask_weight_g * (nce(u1, u2) + nce(i1, i2))
    return loss


def _seeded(fn, seed=7):
    def run(model, batch):
        torch.manual_seed(seed)
        return fn(model, batch)
    return run


@pytest.mark.parametrize("fixture,cfg", [
    ("tiny", {}),
    ("tiny", {"feature_mask": "gradient", "num_mm_layers": 2, "mask_weight_g": 0.5}),
    ("tiny", {"mask_weight_g": 0.0, "num_ui_layers": 3}),
    ("tiny_one_modality", {"mask_weight_g": 0.3}),
    ("tiny_three_modalities", {"mask_weight_g": 0.3, "align_weight": 1.0}),
])
def test_loss_and_gradients_match_dense_reference(fixture, cfg, request):
    ds = request.getfixturevalue(fixture)
    model = _model(ds, **cfg)
    model.nce_rows = 37  # several anchor blocks
    with torch.no_grad():  # one modality starts at β = 1, where fused and modality levels tie: |0|' is ill-posed
        model.user_weight.uniform_(0.2, 1.0)
    torch.manual_seed(7)  # the fast path's noise and dropout draws; the reference draws the same after reseeding
    assert_loss_and_grads_match(model, _batch(ds), _seeded(_dense_loss), relative_grad_atol=1e-5)
    with torch.no_grad():
        users, items = model.embeddings()
        reps = _dense_reps(model)
    n = model.n_users
    want_u = torch.cat([model.user_weight[:, k:k + 1] * reps[(m, 0)][:n] for k, m in enumerate(model.modalities)], 1)
    torch.testing.assert_close(users, want_u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(items, torch.cat([reps[(m, 0)][n:] for m in model.modalities], 1), rtol=1e-5, atol=1e-5)


def test_perturbation_moves_each_row_by_eps_along_its_sign(tiny):
    model = _model(tiny, num_ui_layers=1, mask_weight_g=1.0, noise_eps=0.25)
    with torch.no_grad():
        x, clean = model.inputs(full=True)
        torch.manual_seed(3)
        z = model.graph_reps(x, clean)
        h = model.adj @ x                                                  # unperturbed first layer
    d, n = model.config.embedding_dim, model.n_users
    # the perturbed blocks' users rows: x + Âx + δ with |δ| = ε per row and view, sign(δ) = sign(Âx)
    delta = (z[:n, clean * d:] - x[:n, clean * d:] - h[:n, clean * d:]).view(n, -1, d)
    torch.testing.assert_close(delta.norm(dim=-1), torch.full(delta.shape[:2], 0.25), rtol=1e-4, atol=1e-5)
    moved = delta.abs() > 1e-6
    hb = h[:n, clean * d:].view(n, -1, d)
    assert (torch.sign(delta)[moved] == torch.sign(hb)[moved]).all()
    torch.testing.assert_close(z[:n, : clean * d], (x + h)[:n, : clean * d])  # the scored encoders: no noise


def test_bfloat16_products_stay_close(tiny, monkeypatch):
    from prismrec.models import mentor
    monkeypatch.setattr(mentor, "WIDE", 1)  # the tiny features are narrow: force the bf16 feature path
    check_low_precision_close(
        lambda p: _model(tiny, feature_precision=p, cl_precision=p, mask_weight_g=1.0), _batch(tiny),
        lambda m: m.encoders["image"].first.weight.grad, seed=7)


def test_no_perturbed_copies_without_the_contrast(tiny):
    with_views, without = _model(tiny), _model(tiny, mask_weight_g=0.0)
    assert with_views.encoders["image"].preference.shape[0] == 3
    assert without.encoders["image"].preference.shape[0] == 1
    assert not hasattr(without, "mask_mlp") and hasattr(_model(tiny, feature_mask="gradient"), "mask_mlp")


def test_code_feature_mask_leaves_the_loss_alone(tiny):
    batch = _batch(tiny)
    losses = []
    for weight in (0.0, 5.0):
        model = _model(tiny, mask_weight_f=weight)
        torch.manual_seed(7)
        losses.append(model.loss(batch).item())
    assert losses[0] == losses[1]


BAD_VALUES = {"knn_k": 0, "num_ui_layers": -1, "dropout": 1.0, "temperature": 0.0, "align_weight": -1.0,
              "feature_mask": "paper", "cl_precision": "fp8"}


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_config_validation_names_the_field(field):
    bad = {field: BAD_VALUES[field]}
    for build in (lambda: MENTORConfig(**bad), lambda: resolve(MENTOR, bad)):  # direct, and as the CLI resolves
        with pytest.raises(ConfigError, match=field):
            build()


def test_tunable_ranges_and_learning_rate_default():
    from prismrec.train.hpo import search_space
    space = {p.name: p for p in search_space("mentor")}
    assert {"reg_weight", "align_weight", "mask_weight_g", "temperature", "learning_rate"} <= set(space)
    train, _ = resolve(MENTOR, {})
    assert train.learning_rate == 1e-4


def test_learns_beyond_popularity_and_round_trips(tiny, tmp_path):
    pop = Recommender("pop").fit(tiny, show_progress=False).metrics["test"]["recall@20"]
    rec = Recommender("mentor", epochs=8, batch_size=256, learning_rate=1e-2, seed=0).fit(
        tiny, run_dir=tmp_path, show_progress=False)
    assert rec.metrics["test"]["recall@20"] > pop + 0.03
    losses = [h["loss"] for h in rec.result.history]
    assert losses[-1] < losses[0] - 0.1
    loaded = Recommender.load(tmp_path)
    np.testing.assert_allclose(loaded.score(np.arange(6)), rec.score(np.arange(6)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plugin", ["befa", "erl"])
def test_trains_with_feature_plugins(tiny, plugin):
    check_trains_with_plugin("mentor", tiny, plugin, learning_rate=1e-2)


def test_serve_round_trip(tiny, tmp_path):
    check_serve_round_trip("mentor", tiny, tmp_path)
