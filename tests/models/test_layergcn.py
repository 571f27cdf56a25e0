"""LayerGCN: the batch-row loss and the scores match a dense reference of the layer-refined
propagation (values and gradients, pruned graph included); the per-epoch pruning alternates
degree-sensitive and uniform draws, is seeded and renormalised; it learns; config checks."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from prismrec.graphs import bipartite_adjacency, degree_prune, uniform_prune
from prismrec.models import build_model
from prismrec.models.layergcn import LayerGCN, LayerGCNConfig
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
    return build_model("layergcn", ds, LayerGCNConfig(**cfg))


def _batch(ds, size=128, seed=0):
    return first_batch(ds, size, seed)


def _dense_embeddings(model, adj):
    """E = Σ_{l=1..L} α^(l) ⊙ Â E^(l-1), α^(l) = cos(Â E^(l-1), E^(0)) row-wise, from a dense Â."""
    ego = model.embedding
    h, layers = ego, []
    for _ in range(model.config.num_layers):
        h = adj @ h
        h = F.cosine_similarity(h, ego, dim=1)[:, None] * h
        layers.append(h)
    return torch.stack(layers).sum(dim=0)


def _dense_loss(model, batch, adj):
    n = model.n_users
    e = _dense_embeddings(model, adj)
    u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * q).sum(1))).sum()
    ego = model.embedding
    reg = 0.5 * sum((t ** 2).sum() for t in (ego[batch.users], ego[n + batch.pos_items], ego[n + batch.neg_items]))
    return bpr + model.config.reg_weight * reg


@pytest.mark.parametrize("cfg,epoch", [({}, 0), ({"dropout": 0.2}, 0), ({"dropout": 0.1}, 1),
                                       ({"dropout": 0.9}, 1),  # isolates nodes: the cosine's clamped rows
                                       ({"num_layers": 2, "reg_weight": 0.5, "embedding_dim": 16}, 0)])
def test_loss_gradients_and_scores_match_dense_reference(tiny, cfg, epoch):
    model = _model(tiny, **cfg)
    batch = _batch(tiny)
    torch.manual_seed(5)
    model.on_epoch_start(epoch)
    if model.config.dropout:
        # the reference rebuilds the pruned graph from the same RNG draw
        torch.manual_seed(5)
        seed = int(torch.randint(0, 2**62, (1,)).item())
        prune = degree_prune if epoch % 2 == 0 else uniform_prune
        kept = prune(sp.csr_matrix(tiny.train, dtype=np.float32), 1.0 - model.config.dropout,
                     np.random.default_rng(seed))
        adj = torch.as_tensor(kept.toarray())
        assert (adj != 0).sum() < 2 * tiny.train.nnz
        assert model.config.dropout < 0.9 or (adj.abs().sum(1) == 0).any()
    else:
        adj = torch.as_tensor(bipartite_adjacency(tiny.train).toarray())
    assert_loss_and_grads_match(model, batch, lambda m, b: _dense_loss(m, b, adj), relative_grad_atol=1e-5)

    full = torch.as_tensor(bipartite_adjacency(tiny.train).toarray())
    model.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    grads = torch.autograd.grad(loss, [model.embedding])
    ref_e = _dense_embeddings(model, full)  # scoring: the complete graph
    assert_matches_dense_reference(model, loss, grads, _dense_loss(model, batch, adj), [model.embedding],
                                   ref_e, n_scored=6)


def test_pruning_alternates_is_seeded_and_renormalised(tiny):
    model = _model(tiny, dropout=0.5)
    train = sp.csr_matrix(tiny.train, dtype=np.float32)
    du, di = np.asarray(train.sum(1)).ravel(), np.asarray(train.sum(0)).ravel()

    def draw(seed, epoch):
        torch.manual_seed(seed)
        model.on_epoch_start(epoch)
        return model.masked_adj.scipy.copy()

    a, b, c = draw(1, 0), draw(1, 0), draw(2, 0)
    assert a.nnz == 2 * int(train.nnz * 0.5)
    assert (a != b).nnz == 0 and (a != c).nnz > 0
    kept = a[: tiny.n_users, tiny.n_users:]
    assert (kept.multiply(train) != kept).nnz == 0                      # only training edges
    pattern = sp.csr_matrix((np.ones(kept.nnz, np.float32), kept.nonzero()), shape=train.shape)
    np.testing.assert_allclose(a.toarray(), bipartite_adjacency(pattern).toarray(), atol=1e-6)

    def mean_weight(epoch):  # mean 1/sqrt(d_u d_i) of the kept edges over 30 draws
        out = []
        for s in range(30):
            r, cidx = draw(100 + s, epoch)[: tiny.n_users, tiny.n_users:].nonzero()
            out.append(np.mean(1.0 / np.sqrt(du[r] * di[cidx])))
        return np.mean(out), np.std(out) / np.sqrt(30)

    (even, se_even), (odd, se_odd) = mean_weight(0), mean_weight(1)
    every = np.mean(1.0 / np.sqrt(du[train.nonzero()[0]] * di[train.nonzero()[1]]))
    assert even > every + 4 * se_even                                    # degree-sensitive: low degrees kept
    assert abs(odd - every) < 4 * se_odd + 1e-9                          # uniform: no preference

    with model.scoring():                                                # scoring ignores the pruning
        first = model.score(torch.arange(4))
    draw(3, 1)
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(4)), first)


def test_no_dropout_trains_on_the_full_graph(tiny):
    model = _model(tiny)
    model.on_epoch_start(1)
    assert model.masked_adj is model.full_adj


def test_learns_beating_most_popular(tiny):
    check_beats_most_popular("layergcn", tiny)


@pytest.mark.parametrize("field,value", [("embedding_dim", 0), ("num_layers", 0), ("reg_weight", -1.0),
                                         ("dropout", 1.0)])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(LayerGCNConfig, field, value, LayerGCN)


def test_tunable_ranges():
    check_tunable("layergcn", {"reg_weight", "dropout", "learning_rate"})
