"""DiffMM: the paper's equations as dense references for the fast paths, generated graphs, learning, config."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec import Recommender
from prismrec.data.sampler import PairwiseSampler
from prismrec.models import build_model
from prismrec.models.diffmm import DiffMM, DiffMMConfig
from tests.models.helpers import (assert_matches_dense_reference, check_beats_most_popular, check_config_names_field,
                                  check_tunable)


def _model(ds, **cfg):
    torch.manual_seed(0)
    cfg = {"hidden_dim": 32, "precision": "float32", "cl_precision": "float32", **cfg}
    return build_model("diffmm", ds, DiffMMConfig(**cfg))


def _dense_adj(binary: np.ndarray) -> torch.Tensor:
    """``D^-1/2 ([[0, R], [Rᵀ, 0]] + I) D^-1/2`` as a dense tensor."""
    n, i = binary.shape
    a = np.zeros((n + i, n + i), np.float64)
    a[:n, n:], a[n:, :n] = binary, binary.T
    a += np.eye(n + i)
    d = a.sum(1) ** -0.5
    return torch.tensor(d[:, None] * a * d[None], dtype=torch.float32)


def test_schedule_follows_the_linear_variance_rule():
    """ᾱ from β (β_0 fixed at 1e-4), SNR weights w_t = SNR(t-1) - SNR(t), posterior-mean coefficients."""
    from prismrec.data.synthetic import make_synthetic
    ds = make_synthetic(30, 20, 4, modalities={"image": 4}, seed=0)
    m = _model(ds)
    var = np.linspace(0.1 * 1e-4, 0.1 * 0.02, 5)
    ab_target = 1 - var
    betas = np.r_[1e-4, 1 - ab_target[1:] / ab_target[:-1]]
    ab = np.cumprod(1 - betas)
    np.testing.assert_allclose(m.alpha_bar.numpy(), ab, rtol=1e-6)
    snr = ab / (1 - ab)
    np.testing.assert_allclose(m.loss_weight.numpy(), np.r_[1.0, snr[:-1] - snr[1:]], rtol=1e-5)
    ab_prev = np.r_[1.0, ab[:-1]]
    np.testing.assert_allclose(m.coef_x0.numpy(), betas * np.sqrt(ab_prev) / (1 - ab), rtol=1e-5)
    np.testing.assert_allclose(m.coef_xt.numpy(), (1 - ab_prev) * np.sqrt(1 - betas) / (1 - ab), rtol=1e-5)
    assert m.coef_x0[0] == pytest.approx(1.0) and m.coef_xt[0] == 0  # the last step returns x̂_0


def test_hidden_space_reverse_chain_equals_item_space_chain(tiny):
    model = _model(tiny).eval()
    den, users = model.denoisers["image"], torch.arange(40)
    x = torch.from_numpy(model.train_csr[:40].toarray())
    with torch.no_grad():
        for i in reversed(range(model.config.steps)):   # x_{t-1} = c_0 x̂_0(x_t, t) + c_t x_t, in item space
            x = model.coef_x0[i] * den(x, torch.full((40,), i)) + model.coef_xt[i] * x
    torch.testing.assert_close(model.generate("image", users), x, atol=1e-5, rtol=1e-4)


def test_diffusion_loss_matches_the_equations(tiny):
    model = _model(tiny, gc_weight=0.3)
    users = torch.tensor([0, 4, 9, 17, 33])
    torch.manual_seed(5)
    fast = model.diffusion_loss(users)
    grads = torch.autograd.grad(fast, list(model.denoisers["text"].parameters()))
    torch.manual_seed(5)
    x0 = torch.from_numpy(model.train_csr[users.numpy()].toarray())
    ref = 0.0
    for m, den in model.denoisers.items():
        t = torch.randint(0, model.config.steps, (5,))
        ab = model.alpha_bar[t][:, None]
        pred = den(ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0), t)
        feats = F.linear(model.features(m), model.proj[m].weight, model.proj[m].bias).detach()
        ref = ref + (model.loss_weight[t] * ((x0 - pred) ** 2).mean(1)).mean() \
            + 0.3 * ((pred @ feats - x0 @ model.item_emb.detach()) ** 2).mean(1).mean()
    torch.testing.assert_close(fast, ref)
    for g, r in zip(grads, torch.autograd.grad(ref, list(model.denoisers["text"].parameters()))):
        torch.testing.assert_close(g, r)


def test_generated_graph_topk_self_loops_and_seeded_dropout(tiny):
    model = _model(tiny, keep_rate=1.0, rebuild_k=3)
    model.on_epoch_start(0)
    gen = model.gen_image
    assert gen.shape == (tiny.n_users, 3) and (gen >= 0).all()
    x = model.generate("image", torch.arange(tiny.n_users))
    assert torch.equal(gen.sort(1).values, torch.topk(x, 3, dim=1).indices.sort(1).values)
    r = np.zeros((tiny.n_users, tiny.n_items))
    r[np.repeat(np.arange(tiny.n_users), 3), gen.numpy().ravel()] = 1
    torch.testing.assert_close(torch.tensor(model.graphs()["image"].scipy.toarray()), _dense_adj(r))
    dropped = _model(tiny, keep_rate=0.5)
    dropped.on_epoch_start(0)
    g1 = dropped.generated_graph("text").scipy
    g2 = dropped.generated_graph("text").scipy
    full = _model(tiny, keep_rate=1.0)
    full.load_state_dict(dropped.state_dict())
    kept = g1.nnz / full.generated_graph("text").scipy.nnz
    assert (g1 != g2).nnz == 0 and 0.4 < kept < 0.6          # same seed -> same dropout
    assert np.allclose(np.unique(np.round(g1.data / full.generated_graph("text").scipy[g1.nonzero()].A1, 4)), 2.0)


@pytest.mark.parametrize("cl_pairs", ["main", "modalities"])
def test_forward_and_loss_match_dense_reference(tiny, cl_pairs):
    model = _model(tiny, cl_pairs=cl_pairs, num_layers=2)
    model.on_epoch_start(0)
    batch = next(iter(PairwiseSampler(tiny.train, 64, np.random.default_rng(0))))
    params = [model.embedding, model.proj["image"].weight, model.modal_weight]
    loss = model.loss(batch)
    grads = torch.autograd.grad(loss, params)

    c, n = model.config, model.n_users
    a = _dense_adj((tiny.train.toarray() > 0).astype(float))
    g = {m: torch.tensor(model.graphs()[m].scipy.toarray()) for m in model.modalities}
    table = model.embedding
    w = torch.softmax(model.modal_weight, 0)
    layers = lambda x: sum(torch.linalg.matrix_power(a, k) @ x for k in range(c.num_layers + 1))
    modal, views = 0, {}
    for k, m in enumerate(model.modalities):
        f = F.normalize(model.proj[m](model.features(m)), dim=1)
        x = torch.cat([table[:n], f])
        e = a @ x + a @ torch.cat([(a @ x)[:n], table[n:]]) + c.ris_adj_lambda * g[m] @ table
        modal = modal + w[k] * e
        views[m] = layers(g[m] @ x)
    e = layers(modal) + c.ris_lambda * F.normalize(modal, dim=1)

    def nce(x, y, idx):   # −log of the positive's softmax share against all rows of y
        s = F.normalize(x, dim=1)[idx] @ F.normalize(y, dim=1).T / c.temperature
        return (torch.logsumexp(s, 1) - s.gather(1, idx[:, None])[:, 0]).mean()
    pairs = ([(e, v) for v in views.values()] if cl_pairs == "main" else [(views["image"], views["text"])])
    cl = sum(nce(p[:n], q[:n], batch.users) + nce(p[n:], q[n:], batch.pos_items) for p, q in pairs)
    u, pos, neg = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
    ref = (-F.logsigmoid((u * pos).sum(1) - (u * neg).sum(1)).mean() + c.reg_weight * (table ** 2).sum()
           + c.cl_weight * cl)
    assert_matches_dense_reference(model, loss, grads, ref, params, e, n_scored=5)


def test_leaky_relu_feature_map(tiny):
    model = _model(tiny, feature_map="leaky_relu")
    x = model.features("image")
    torch.testing.assert_close(model.modality_features("image"), F.leaky_relu(x @ model.proj["image"], 0.2))
    assert all(not n.startswith("denoisers.") for g in model.configure_optimizer(1e-3, 0).param_groups
               for n, p in model.named_parameters() if any(p is q for q in g["params"]))


def test_learns_on_synthetic_data_and_beats_most_popular(tiny):
    check_beats_most_popular("diffmm", tiny, hidden_dim=64)


def test_generated_graphs_survive_save_and_load(tiny, tmp_path):
    rec = Recommender("diffmm", epochs=2, batch_size=256, hidden_dim=16, seed=0).fit(tiny, run_dir=tmp_path,
                                                                                     show_progress=False)
    loaded = Recommender.load(tmp_path)
    assert torch.equal(loaded.model.gen_image, rec.model.gen_image) and (rec.model.gen_image >= 0).all()
    np.testing.assert_allclose(loaded.score(np.arange(8)), rec.score(np.arange(8)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("field,value", [("keep_rate", 0.0), ("keep_rate", 1.5), ("steps", 0), ("rebuild_k", 0),
                                         ("cl_pairs", "all"), ("feature_map", "mlp"), ("precision", "fp8"),
                                         ("temperature", 0.0), ("noise_max", 20.0), ("denoise_dropout", 1.0)])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(DiffMMConfig, field, value, DiffMM, match="noise" if field == "noise_max" else None)


def test_tunable_ranges():
    from prismrec.train.hpo import search_space
    check_tunable("diffmm", {"reg_weight", "cl_weight", "temperature", "keep_rate", "gc_weight",
                             "denoise_learning_rate"})
    lr = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}
    assert "learning_rate" in {p.name for p in search_space("diffmm", extra_space=lr)}
