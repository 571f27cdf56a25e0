"""PGL: the batch-row fast path matches a dense reference of the paper's equations (values and
gradients, contrastive term included); the two principal subgraphs; it learns; config checks;
plug-ins and the serve round trip."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from prismrec.graphs import bipartite_adjacency, svd_principal_graph
from prismrec.models import build_model
from prismrec.models.pgl import PGL, PGLConfig
from tests.models.helpers import first_batch, check_beats_most_popular, check_config_names_field, check_tunable

F32 = dict(feature_precision="float32")


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("pgl", ds, PGLConfig(**{**F32, **cfg}))


def _batch(ds, size=96, seed=0):
    return first_batch(ds, size, seed)


def _dense_embeddings(model, adj):
    """Users and items from dense matrices: X = ||_m norm(W_m f_m + b_m), h = S^L X,
    mean over l of A^l [E_U; X], items + h."""
    cfg, n = model.config, model.n_users
    x = torch.cat([F.normalize(model.features(m) @ model.proj[m].weight.T + model.proj[m].bias, dim=1)
                   for m in model.modalities], dim=1)
    s = torch.as_tensor(model.mm_adj.scipy.toarray())
    h = x
    for _ in range(cfg.num_mm_layers):
        h = s @ h
    ego = torch.cat([model.user_emb, x])
    layers = [ego]
    for _ in range(cfg.num_ui_layers):
        layers.append(adj @ layers[-1])
    e = torch.stack(layers).mean(dim=0)
    return e[:n], e[n:] + h


def _info_nce(a, b, tau):
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / tau
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def _dense_loss(model, batch, adj, drop):
    cfg = model.config
    users, items = _dense_embeddings(model, adj)
    u, p, n = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    loss = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    if cfg.reg_weight:
        cl = (_info_nce(drop(u), drop(u), cfg.temperature) + _info_nce(drop(p), drop(p), cfg.temperature)) / 2
        loss = loss + cfg.reg_weight * cl
    return loss


@pytest.mark.parametrize("fixture,cfg", [("tiny", {}), ("tiny", {"reg_weight": 0.3, "num_mm_layers": 2}),
                                         ("tiny_three_modalities", {"reg_weight": 0.1, "mode": "global"}),
                                         ("tiny_one_modality", {"num_ui_layers": 3})])
def test_loss_gradients_and_scores_match_dense_reference(fixture, cfg, request):
    ds = request.getfixturevalue(fixture)
    model = _model(ds, **cfg)
    batch = _batch(ds)
    torch.manual_seed(5)
    model.on_epoch_start(0)
    adj = torch.as_tensor(model.train_adj.scipy.toarray())
    # (backward, not autograd.grad: the raw feature tables' gradient is written into .grad directly)
    torch.manual_seed(11)  # the same dropout masks, drawn in the same order, on both paths
    fast = model.loss(batch)
    fast.backward()
    fast_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    ref = _dense_loss(model, batch, adj, lambda t: F.dropout(t, model.config.dropout, training=True))
    ref.backward()
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    assert any(k.startswith("feat_") for k in fast_grads)  # the feature tables are trained
    for k, p in model.named_parameters():
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(fast_grads[k], p.grad, rtol=1e-4, atol=1e-6 * max(scale, 1.0), msg=k)
    full = torch.as_tensor(bipartite_adjacency(ds.train).toarray())
    users, items = _dense_embeddings(model, full)  # scoring: the complete graph
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(5)), (users[:5] @ items.T).detach(),
                                   rtol=1e-5, atol=1e-5)


def test_gradcheck_of_the_fast_loss_in_float64(tiny):
    """torch.autograd.gradcheck on the user table through the sparse products (float64 copy)."""
    model = _model(tiny, reg_weight=0.0).double()
    model.on_epoch_start(0)
    for g in (model.train_adj, model.full_adj, model.mm_adj):
        g.a, g.at = g.a.double(), (g.a.double() if g.at is g.a else g.at.double())
    batch = _batch(tiny, size=16)
    u0 = model.user_emb.detach().clone().requires_grad_(True)
    del model.user_emb  # the user table becomes gradcheck's input

    def f(u):
        model.user_emb = u
        return model.loss(batch)
    assert torch.autograd.gradcheck(f, (u0,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_local_subgraph_keeps_ratio_is_seeded_and_scoring_uses_full_graph(tiny):
    model = _model(tiny, keep_ratio=0.3)

    def draw(seed):
        torch.manual_seed(seed)
        model.on_epoch_start(0)
        return model.train_adj.scipy.copy()

    a, b, c = draw(1), draw(1), draw(2)
    assert a.nnz == 2 * int(tiny.train.nnz * 0.3)
    assert (a != b).nnz == 0 and (a != c).nnz > 0
    kept = a[: tiny.n_users, tiny.n_users:]
    assert (kept.multiply(tiny.train) != kept).nnz == 0  # only training edges
    with model.scoring():
        first = model.score(torch.arange(4))
    draw(3)
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(4)), first)


def test_svd_principal_graph_is_the_thresholded_low_rank_product(tiny):
    adj = bipartite_adjacency(tiny.train)
    got = svd_principal_graph(adj, rank=16, share=0.25, threshold=1e-3, block_rows=100, cache=False)
    u, s, vt = np.linalg.svd(adj.toarray().astype(np.float64))  # descending
    want = u[:, :4] @ np.diag(s[:4] * s[12:16]) @ vt[:4]
    want[np.abs(want) < 1e-3] = 0.0
    # singular subspaces of repeated values are not unique: compare the products, not the factors
    np.testing.assert_allclose(got.toarray(), want, atol=2e-4)
    assert sp.isspmatrix_csr(got) and got.shape == adj.shape


def test_global_mode_builds_once_and_learns(tiny):
    model = _model(tiny, mode="global", svd_rank=16)
    model.on_epoch_start(0)
    first = model.train_adj
    model.on_epoch_start(1)
    assert model.train_adj is first  # fixed graph


def test_learns_beating_most_popular(tiny):
    check_beats_most_popular("pgl", tiny)


def test_modality_contributions_sum_to_the_score(tiny):
    model = _model(tiny)
    users, items = torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7])
    parts = model.modality_contributions(users, items)
    assert set(parts) == set(tiny.features)
    with model.scoring():
        want = model.score(users)[torch.arange(3), items]
    torch.testing.assert_close(sum(parts.values()), want, rtol=1e-5, atol=1e-6)


def test_lr_decay(tiny):
    model = _model(tiny)
    assert model.lr_factor(0) == 1.0 and model.lr_factor(50) == pytest.approx(0.96)


@pytest.mark.parametrize("field,value", [("mode", "spectral"), ("keep_ratio", 0.0), ("svd_share", 0.6),
                                         ("dropout", 1.0), ("knn_k", 0), ("num_ui_layers", -1),
                                         ("temperature", 0.0), ("reg_weight", -1.0), ("feature_precision", "fp8")])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(PGLConfig, field, value, PGL)


def test_tunable_ranges():
    check_tunable("pgl", {"mode", "keep_ratio", "dropout", "reg_weight", "learning_rate"})
