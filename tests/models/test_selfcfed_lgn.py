"""SelfCF_ed (LightGCN encoder): the batch-row loss, its gradients and the scores match a dense
reference of the equations (per-batch edge dropout and target dropout included); the edge dropout
is seeded, keeps the requested share and rescales; negatives are ignored; it learns; config checks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec.graphs import bipartite_adjacency
from prismrec.models import build_model
from prismrec.models.selfcfed_lgn import SelfCFED, SelfCFEDConfig
from tests.models.helpers import (
    first_batch,
    assert_ignores_negatives,
    assert_loss_and_grads_match,
    assert_matches_dense_reference,
    check_beats_most_popular,
    check_config_names_field,
    check_tunable,
)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("selfcfed_lgn", ds, SelfCFEDConfig(**cfg))


def _batch(ds, size=128, seed=0):
    return first_batch(ds, size, seed)


def _dense_dropped(ds, rho):
    """The dense training graph: the same RNG draws as the model (rate, then one uniform per stored
    entry of Â in CSR order), laid out densely: Â_r = M ⊙ Â / (1 - r)."""
    csr = bipartite_adjacency(ds.train)
    csr.sort_indices()
    adj = csr.tocoo()                             # in CSR order
    full = torch.zeros(adj.shape)
    full[adj.row, adj.col] = torch.as_tensor(adj.data)
    if rho == 0.0:
        return full
    rate = torch.rand(()).item() * rho
    keep = (torch.rand(adj.nnz) >= rate).float()
    dropped = torch.zeros(adj.shape)
    dropped[adj.row, adj.col] = torch.as_tensor(adj.data) * keep / (1.0 - rate)
    return dropped


def _dense_embeddings(model, adj):
    """E = mean(E⁰, ÂE⁰, ..., Â^L E⁰) from a dense Â."""
    h, layers = model.embedding, [model.embedding]
    for _ in range(model.config.num_layers):
        h = adj @ h
        layers.append(h)
    return torch.stack(layers).mean(dim=0)


def _dense_loss(model, batch, ds):
    cfg, n = model.config, model.n_users
    e = _dense_embeddings(model, _dense_dropped(ds, cfg.edge_dropout))
    u, i = e[batch.users], e[n + batch.pos_items]
    t_u = F.dropout(u.detach(), cfg.dropout)      # drawn after the graph, users first, as the model
    t_i = F.dropout(i.detach(), cfg.dropout)
    cos = lambda a, b: F.cosine_similarity(a, b, dim=1).mean()
    reg = 0.5 * ((u ** 2).sum() + (i ** 2).sum())
    return -0.5 * cos(model.predictor(u), t_i) - 0.5 * cos(model.predictor(i), t_u) \
        + cfg.reg_weight * reg


@pytest.mark.parametrize("cfg", [{}, {"edge_dropout": 0.0, "dropout": 0.0},
                                 {"edge_dropout": 0.5, "num_layers": 3, "reg_weight": 0.1, "embedding_dim": 16},
                                 {"num_layers": 1, "dropout": 0.2}])
def test_loss_gradients_and_scores_match_dense_reference(tiny, cfg):
    model = _model(tiny, **cfg)
    batch = _batch(tiny)

    def reference(m, b):
        torch.manual_seed(7)
        return _dense_loss(m, b, tiny)

    torch.manual_seed(7)
    assert_loss_and_grads_match(model, batch, reference, relative_grad_atol=1e-5)

    model.zero_grad(set_to_none=True)
    params = list(model.parameters())
    torch.manual_seed(7)
    loss = model.loss(batch)
    grads = torch.autograd.grad(loss, params)
    full = torch.as_tensor(bipartite_adjacency(tiny.train).toarray())
    e = _dense_embeddings(model, full)                          # scoring: the full graph, no dropout
    u, i = e[: model.n_users], e[model.n_users:]
    factors = torch.cat([torch.cat([model.predictor(u), u], 1), torch.cat([i, model.predictor(i)], 1)])
    assert_matches_dense_reference(model, loss, grads, reference(model, batch), params, factors, n_scored=6)


def test_scores_are_online_and_target_cross_products(tiny):
    model = _model(tiny)
    full = torch.as_tensor(bipartite_adjacency(tiny.train).toarray())
    with torch.no_grad():
        e = _dense_embeddings(model, full)
        u, i = e[: model.n_users], e[model.n_users:]
        want = model.predictor(u[:5]) @ i.T + u[:5] @ model.predictor(i).T
    torch.manual_seed(1)
    with model.scoring():
        got = model.score(torch.arange(5))
    torch.manual_seed(2)
    with model.scoring():
        again = model.score(torch.arange(5))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, got)


@pytest.mark.parametrize("rate", [0.2, 0.7])
def test_edge_dropout_keeps_the_share_rescales_and_transposes(tiny, rate):
    model = _model(tiny)
    adj = bipartite_adjacency(tiny.train)
    full = torch.as_tensor(adj.toarray())
    shares = []
    for seed in range(20):
        torch.manual_seed(seed)
        g = model.edges.draw(rate)
        a, at = g.a.to_dense(), g.at.to_dense()
        kept = a != 0
        assert not (kept & (full == 0)).any()                                 # only edges of Â
        torch.testing.assert_close(a[kept], full[kept] / (1 - rate))          # kept ones rescaled
        torch.testing.assert_close(at, a.T)
        shares.append(kept.sum().item() / adj.nnz)
    se = np.sqrt(rate * (1 - rate) / adj.nnz / len(shares))
    assert abs(np.mean(shares) - (1 - rate)) < 4 * se
    assert not (a == a.T).all()                                               # directions drop apart


def test_edge_dropout_is_seeded_and_per_batch(tiny):
    model = _model(tiny, edge_dropout=0.5)

    def draw(seed):
        torch.manual_seed(seed)
        return model.training_graph().a.to_dense()

    a, b, c = draw(3), draw(3), draw(4)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(3)
    rate = torch.rand(()).item() * 0.5
    full = torch.as_tensor(bipartite_adjacency(tiny.train).toarray())
    torch.testing.assert_close(a[a != 0], full[a != 0] / (1 - rate))      # the rate is U(0, ρ)'s draw
    off = _model(tiny, edge_dropout=0.0)
    assert off.training_graph() is off.full_adj


def test_negatives_are_ignored(tiny):
    assert_ignores_negatives(_model(tiny), _batch(tiny, 64))


def test_learns_beating_most_popular(tiny):
    check_beats_most_popular("selfcfed_lgn", tiny)


@pytest.mark.parametrize("field,value", [("embedding_dim", 0), ("num_layers", 0), ("reg_weight", -1.0),
                                         ("dropout", 1.0), ("edge_dropout", 1.5)])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(SelfCFEDConfig, field, value, SelfCFED)


def test_tunable_ranges():
    check_tunable("selfcfed_lgn", {"num_layers", "dropout", "learning_rate"})
