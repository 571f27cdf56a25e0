"""DRAGON: the fast path (user-graph rows per batch, CSR user graph, bf16 feature products) matches a
dense reference of the paper's equations; the user-user co-occurrence graph helpers; it learns."""
import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from prismrec.graphs import cooccurrence_topk, neighbour_matrix, sample_neighbours
from prismrec.models import build_model
from prismrec.models.dragon import DRAGONConfig
from tests.models.helpers import (
    first_batch,
    assert_loss_and_grads_match,
    check_config_names_field,
    check_learns_beyond_popularity,
    check_low_precision_close,
)

F32 = DRAGONConfig(feature_precision="float32")


def _batch(ds, size=64, seed=0):
    return first_batch(ds, size, seed)


def _dense(model):
    """Every user's and item's final representation from dense matrices; the user-user graph as a weighted
    sum over each user's sampled neighbours, ``ĥ_u = h_u + Σ_j w[u, j] · h_{index[u, j]}``."""
    n = model.n_users
    adj, s = model.adj.a.to_dense(), model.item_graph.a.to_dense()
    reps = []
    for m in model.modalities:
        f = model.mlp_out[m](F.leaky_relu(model.mlp_in[m](model.features(m))))
        x = F.normalize(torch.cat([model.preference[m], f]), dim=1)
        h = adj @ x
        reps.append(x + h + adj @ h)
    users = torch.cat([reps[k][:n] * model.user_weight[:, k: k + 1] for k in range(len(reps))], dim=1)
    items = torch.cat([r[n:] for r in reps], dim=1)
    neigh = users[model.user_graph.index]                                         # [N, k, M·d]
    users = users + (model.user_graph.weight[:, None, :] @ neigh).squeeze(1)
    return users, items + s @ items


def _dense_loss(model, batch):
    users, items = _dense(model)
    u, p, ng = users[batch.users], items[batch.pos_items], items[batch.neg_items]
    margin = (u * p).sum(1) - (u * ng).sum(1)
    bpr = (torch.log1p(torch.exp(-margin)) / math.log(2.0)).mean()   # -log2 σ(margin), in bits
    squares = [model.preference[m][batch.users].square().mean() for m in model.modalities]
    reg = torch.stack(squares).sum() + model.user_weight.square().mean()
    return bpr + model.config.reg_weight * reg


def test_loss_gradients_and_scores_match_dense_reference(tiny):
    torch.manual_seed(0)
    model = build_model("dragon", tiny, F32)
    batch = _batch(tiny)
    assert_loss_and_grads_match(model, batch, _dense_loss)
    with torch.no_grad():
        u, i = model.embeddings()
        du, di = _dense(model)
    torch.testing.assert_close(u, du, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(i, di, rtol=1e-5, atol=1e-5)
    assert u.shape == (tiny.n_users, 2 * model.config.embedding_dim)


def test_bfloat16_feature_products_stay_close(tiny, monkeypatch):
    from prismrec.models import dualgnn
    monkeypatch.setattr(dualgnn, "WIDE", 1)  # the tiny features are narrow: force the bf16 path (shared setup)

    def make(precision):
        torch.manual_seed(0)
        model = build_model("dragon", tiny, DRAGONConfig(feature_precision=precision))
        assert all(model.bf16.values()) == (precision == "bfloat16")
        return model
    check_low_precision_close(make, _batch(tiny), lambda m: m.mlp_in["image"].weight.grad)  # 24-d tiny features


def test_cooccurrence_topk_matches_brute_force():
    rng = np.random.default_rng(0)
    r = sp.csr_matrix((rng.random((40, 30)) < 0.15).astype(np.float32))
    top = cooccurrence_topk(r, 5, cache=False)
    dense = (r @ r.T).toarray()
    np.fill_diagonal(dense, 0)
    for u in range(40):
        row = top[u]
        assert row.nnz == min(5, int((dense[u] > 0).sum()))
        np.testing.assert_array_equal(row.toarray().ravel()[row.indices], dense[u, row.indices])
        if row.nnz:  # nothing left out beats the smallest kept count
            rest = np.delete(dense[u], row.indices)
            assert rest.max(initial=0) <= row.data.min()


def test_sampled_user_graph_pads_with_own_neighbours_and_softmaxes():
    top = sp.csr_matrix(np.array([[0, 3, 1, 0], [2, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], np.float32))
    index, weight = sample_neighbours(top, 4, torch.Generator().manual_seed(0))
    assert index.shape == weight.shape == (4, 4)
    assert set(index[0].tolist()) <= {1, 2} and set(index[0, :2].tolist()) == {1, 2}
    assert index[1].tolist() == [0, 0, 0, 0] and torch.allclose(weight[1], torch.full((4,), 0.25))
    assert weight[2].sum() == 0                                        # a user without co-occurring users
    torch.testing.assert_close(weight[[0, 1, 3]].sum(1), torch.ones(3))
    counts = top.toarray()[0, index[0].numpy()]
    torch.testing.assert_close(weight[0], torch.softmax(torch.tensor(counts), 0))
    m = neighbour_matrix(index, weight, 4).toarray()
    x = torch.randn(4, 3)
    expected = (weight[:, :, None] * x[index]).sum(1)
    torch.testing.assert_close(torch.from_numpy(m).float() @ x, expected)


def test_user_graph_is_resampled_each_epoch_and_saved(tiny):
    torch.manual_seed(0)
    model = build_model("dragon", tiny, DRAGONConfig(user_knn_k=290))  # more than most users have: padding
    before = model.user_graph.index.clone()
    model.on_epoch_start(1)
    assert not torch.equal(before, model.user_graph.index)
    assert "user_graph.index" in model.state_dict()
    # the CSR copy follows the buffers (e.g. after load_state_dict)
    x = torch.randn(tiny.n_users, 2)
    expected = (model.user_graph.weight[:, :, None] * x[model.user_graph.index]).sum(1)
    got = torch.from_numpy(model.user_graph.matrix().scipy.toarray()) @ x
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_one_and_three_modalities(tiny_one_modality, tiny_three_modalities):
    for ds in (tiny_one_modality, tiny_three_modalities):
        torch.manual_seed(0)
        model = build_model("dragon", ds)
        assert hasattr(model, "user_weight") == (len(ds.features) > 1)
        loss = model.loss(_batch(ds))
        loss.backward()
        assert torch.isfinite(loss)
        with model.scoring():
            assert model.score(torch.tensor([0, 1])).shape == (2, ds.n_items)


def test_mean_aggregation_is_row_normalised(tiny):
    model = build_model("dragon", tiny, DRAGONConfig(aggr_mode="mean"))
    sums = np.asarray(model.adj.scipy.sum(axis=1)).ravel()
    assert np.allclose(sums[sums > 0], 1.0)


def test_config_errors_name_the_field():
    for field, value in [("aggr_mode", "max"), ("knn_k", 0), ("user_knn_k", 0), ("mm_image_weight", 1.5),
                         ("reg_weight", -1.0), ("feature_precision", "fp8"), ("num_ui_layers", -1)]:
        check_config_names_field(DRAGONConfig, field, value)


def test_learns_beyond_popularity(tiny, tmp_path):
    rec = check_learns_beyond_popularity("dragon", tiny, tmp_path)
    losses = [h["loss"] for h in rec.result.history]
    assert losses[-1] < losses[0] * math.exp(-1)
