"""MMGCF: the batch-row loss, its gradients and the scores match a dense reference of the
equations for every fusion mode and weighting (pruned graph, one and three modalities, concat with
a feature size of its own); the per-epoch degree-sensitive pruning is seeded, keeps the requested
share and is renormalised; it learns; config checks."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from prismrec.graphs import bipartite_adjacency, degree_prune
from prismrec.models import build_model
from prismrec.models.mmgcf import MMGCF, MMGCFConfig
from tests.models.helpers import (
    first_batch,
    assert_loss_and_grads_match,
    assert_matches_dense_reference,
    check_beats_most_popular,
    check_config_names_field,
    check_tunable,
)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("mmgcf", ds, MMGCFConfig(**cfg))


def _batch(ds, size=128, seed=0):
    return first_batch(ds, size, seed)


def _linear(x, layer):
    return x @ layer.weight.T + layer.bias


def _fuse(model, parts, layer):
    mode = model.config.fusion_mode
    if mode == "mean":
        return sum(parts) / len(parts)
    if mode == "sum":
        return sum(parts)
    return _linear(torch.cat(parts, dim=1), layer)


def _dense_embeddings(model, adj):
    """Users' LightGCN rows and every item's fused embedding, written straight from the equations."""
    e0 = model.embedding
    h, total = e0, e0
    for _ in range(model.config.num_layers):
        h = adj @ h
        total = total + h
    e = total / (model.config.num_layers + 1)
    users, graph_items = e[: model.n_users], e[model.n_users:]
    content = [_linear(model.features(m), model.proj[m]) for m in model.modalities]
    w, out = model.config.weighting, getattr(model, "out_fuser", None)
    if w == "alpha":
        a = torch.sigmoid(model.alpha_logit)
        items = _fuse(model, [a * graph_items] + [(1 - a) * c for c in content], out)
    elif w == "normalized":
        unit = [x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) for x in [graph_items] + content]
        items = _fuse(model, [len(content) * unit[0]] + unit[1:], out)
    else:
        mm = content[0] if len(content) == 1 else _fuse(model, content, getattr(model, "mm_fuser", None))
        items = _fuse(model, [graph_items, mm], out)
    return torch.cat([users, items])


def _dense_loss(model, batch, adj):
    n = model.n_users
    e = _dense_embeddings(model, adj)
    u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * q).sum(1))).mean()
    e0 = model.embedding
    reg = sum((t ** 2).sum() for t in (e0[batch.users], e0[n + batch.pos_items], e0[n + batch.neg_items]))
    return bpr + model.config.reg_weight * reg / (2 * len(batch.users))


def _check_against_reference(ds, **cfg):
    model = _model(ds, **cfg)
    batch = _batch(ds)
    torch.manual_seed(5)
    model.on_epoch_start(0)
    if model.config.dropout:
        torch.manual_seed(5)  # the reference rebuilds the pruned graph from the same draw
        seed = int(torch.randint(0, 2**62, (1,)).item())
        kept = degree_prune(sp.csr_matrix(ds.train, dtype=np.float32), 1.0 - model.config.dropout,
                            np.random.default_rng(seed))
        adj = torch.as_tensor(kept.toarray())
        assert (adj != 0).sum() < 2 * ds.train.nnz
    else:
        adj = torch.as_tensor(bipartite_adjacency(ds.train).toarray())
    # absolute gradient tolerance: under mean/sum the projection biases cancel in the BPR difference,
    # so their gradients are float noise around zero
    assert_loss_and_grads_match(model, batch, lambda m, b: _dense_loss(m, b, adj))

    model.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params)
    full = torch.as_tensor(bipartite_adjacency(ds.train).toarray())  # scoring: the complete graph
    assert_matches_dense_reference(model, loss, grads, _dense_loss(model, batch, adj), params,
                                   _dense_embeddings(model, full), n_scored=6)


@pytest.mark.parametrize("weighting", ["equal", "alpha", "normalized"])
@pytest.mark.parametrize("fusion_mode", ["mean", "sum", "concat"])
def test_loss_gradients_and_scores_match_dense_reference(tiny, fusion_mode, weighting):
    _check_against_reference(tiny, fusion_mode=fusion_mode, weighting=weighting)


@pytest.mark.parametrize("cfg", [
    {"dropout": 0.0, "num_layers": 3, "reg_weight": 0.5},
    {"num_layers": 0},
    {"fusion_mode": "concat", "embedding_dim": 16, "feat_embed_dim": 8, "num_layers": 2},
    {"fusion_mode": "concat", "weighting": "alpha", "embedding_dim": 16, "feat_embed_dim": 8},
    {"fusion_mode": "sum", "weighting": "normalized", "dropout": 0.8},
])
def test_dense_reference_other_settings(tiny, cfg):
    _check_against_reference(tiny, **cfg)


@pytest.mark.parametrize("cfg", [{"fusion_mode": "concat"}, {"fusion_mode": "mean"},
                                 {"weighting": "normalized", "fusion_mode": "concat"}])
def test_dense_reference_one_and_three_modalities(tiny_one_modality, tiny_three_modalities, cfg):
    _check_against_reference(tiny_one_modality, **cfg)
    _check_against_reference(tiny_three_modalities, **cfg)


def test_fusion_layers_follow_the_settings(tiny, tiny_one_modality):
    two = _model(tiny, fusion_mode="concat", embedding_dim=16, feat_embed_dim=8)
    assert two.mm_fuser.in_features == 16 and two.out_fuser.in_features == 24
    assert _model(tiny_one_modality, fusion_mode="concat").mm_fuser is None
    assert _model(tiny, fusion_mode="concat", weighting="alpha").out_fuser.in_features == 64 * 3
    assert not hasattr(_model(tiny), "out_fuser") and not hasattr(_model(tiny), "alpha_logit")


def test_pruning_is_seeded_keeps_the_share_and_is_renormalised(tiny):
    model = _model(tiny, dropout=0.5)
    train = sp.csr_matrix(tiny.train, dtype=np.float32)
    du, di = np.asarray(train.sum(1)).ravel(), np.asarray(train.sum(0)).ravel()

    def draw(seed):
        torch.manual_seed(seed)
        model.on_epoch_start(0)
        return model.masked_adj.scipy.copy()

    a, b, c = draw(1), draw(1), draw(2)
    assert a.nnz == 2 * int(train.nnz * 0.5)
    assert (a != b).nnz == 0 and (a != c).nnz > 0
    kept = a[: tiny.n_users, tiny.n_users:]
    assert (kept.multiply(train) != kept).nnz == 0                      # only training edges
    pattern = sp.csr_matrix((np.ones(kept.nnz, np.float32), kept.nonzero()), shape=train.shape)
    np.testing.assert_allclose(a.toarray(), bipartite_adjacency(pattern).toarray(), atol=1e-6)

    means = []
    for s in range(30):  # mean 1/sqrt(d_u d_i) of the kept edges: low-degree edges are kept more often
        r, col = draw(100 + s)[: tiny.n_users, tiny.n_users:].nonzero()
        means.append(np.mean(1.0 / np.sqrt(du[r] * di[col])))
    every = np.mean(1.0 / np.sqrt(du[train.nonzero()[0]] * di[train.nonzero()[1]]))
    assert np.mean(means) > every + 4 * np.std(means) / np.sqrt(30)

    with model.scoring():                                                # scoring ignores the pruning
        first = model.score(torch.arange(4))
    draw(3)
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(4)), first)


def test_no_dropout_trains_on_the_full_graph(tiny):
    model = _model(tiny, dropout=0.0)
    model.on_epoch_start(1)
    assert model.masked_adj is model.full_adj


def test_learns_beating_most_popular(tiny):
    check_beats_most_popular("mmgcf", tiny)


@pytest.mark.parametrize("field,value", [("embedding_dim", 0), ("num_layers", -1), ("reg_weight", -1.0),
                                         ("dropout", 1.0), ("fusion_mode", "prod"), ("weighting", "learned"),
                                         ("feat_embed_dim", 32)])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(MMGCFConfig, field, value, MMGCF)


def test_concat_allows_another_feature_size():
    assert MMGCFConfig(fusion_mode="concat", feat_embed_dim=32).feat_embed_dim == 32


def test_tunable_ranges():
    check_tunable("mmgcf", {"num_layers", "reg_weight", "fusion_mode", "weighting", "dropout", "learning_rate"})
