"""DualGNN: the fast path (CSR propagation, batch rows of the user graph, bf16 feature products)
matches a dense reference of the equations, MMRec's fused-slot weighting included; the sampled
user-user graph; it learns; attribution, plug-ins and config checks."""
import pytest
import torch
import torch.nn.functional as F

from prismrec.graphs import SampledUserGraph
from prismrec.models import build_model
from prismrec.models.dualgnn import DualGNN, DualGNNConfig
from tests.models.helpers import (
    first_batch,
    assert_loss_and_grads_match,
    assert_matches_dense_reference,
    check_beats_most_popular,
    check_config_names_field,
    check_low_precision_close,
    check_trains_with_plugin,
    check_tunable,
)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("dualgnn", ds, DualGNNConfig(**{"feature_precision": "float32", **cfg}))


def _batch(ds, size=96, seed=0):
    return first_batch(ds, size, seed)


def _dense_adjacency(train, aggr_mode):
    """``[[0, R], [Rᵀ, 0]]`` normalised as ``D^-1/2 A D^-1/2`` ("add") or by rows ("mean"), from dense R."""
    r = torch.tensor(train.toarray() > 0, dtype=torch.float32)
    n, i = r.shape
    a = torch.zeros(n + i, n + i)
    a[:n, n:], a[n:, :n] = r, r.T
    deg = a.sum(1)
    inv = torch.where(deg > 0, 1.0 / deg, torch.zeros_like(deg))
    if aggr_mode == "mean":
        return inv[:, None] * a
    return inv.sqrt()[:, None] * a * inv.sqrt()[None, :]


def _dense(model, adj):
    """``(e_U [N, d], i [I, d])`` straight from the docstring: MMRec's ``weighted_sum`` as its batched
    product of the user slots ``[Σ_m r_m, r_2, ..., r_M]`` with ``w``; the user graph as a gather."""
    n = model.n_users
    reps = []
    for m in model.modalities:
        f = model.mlp_out[m](F.leaky_relu(model.mlp_in[m](model.features(m))))
        h = F.normalize(torch.cat([model.preference[m], f]), dim=1)
        rep = h
        for _ in range(model.config.num_layers):
            h = adj @ h
            rep = rep + h
        reps.append(rep)
    if len(reps) == 1:
        users = reps[0][:n]
    else:
        slots = torch.stack([sum(reps)[:n]] + [r[:n] for r in reps[1:]], dim=2)   # [N, d, M]
        users = (slots @ model.user_weight[:, :, None]).squeeze(2)
    g = model.user_graph
    users = users + (g.weight[:, None, :] @ users[g.index]).squeeze(1)          # [N, 1, k] @ [N, k, d]
    return users, sum(r[n:] for r in reps)


def _dense_loss(model, batch, adj):
    users, items = _dense(model, adj)
    u = users[batch.users]
    margin = (u * items[batch.pos_items]).sum(1) - (u * items[batch.neg_items]).sum(1)
    bpr = -torch.log2(torch.sigmoid(margin)).mean()
    reg = sum((model.preference[m][batch.users] ** 2).mean() for m in model.modalities)
    if len(model.modalities) > 1:
        reg = reg + (model.user_weight ** 2).mean()
    return bpr + model.config.reg_weight * reg


@pytest.mark.parametrize("fixture,cfg", [
    ("tiny", {}),
    ("tiny", {"aggr_mode": "mean", "num_layers": 1}),
    ("tiny", {"user_knn_k": 290, "num_layers": 0}),                 # most users padded with repeats
    ("tiny_one_modality", {"num_layers": 3}),
    ("tiny_three_modalities", {"reg_weight": 0.5, "embedding_dim": 16, "hidden_mult": 2}),
])
def test_loss_gradients_and_scores_match_dense_reference(fixture, cfg, request):
    ds = request.getfixturevalue(fixture)
    model = _model(ds, **cfg)
    adj = _dense_adjacency(ds.train, model.config.aggr_mode)
    torch.manual_seed(3)
    model.on_epoch_start(1)
    batch = _batch(ds)
    assert_loss_and_grads_match(model, batch, lambda m, b: _dense_loss(m, b, adj), relative_grad_atol=1e-5)

    model.zero_grad(set_to_none=True)
    params = [p for _, p in model.named_parameters()]
    loss = model.loss(batch)
    grads = torch.autograd.grad(loss, params)
    users, items = _dense(model, adj)
    assert_matches_dense_reference(model, loss, grads, _dense_loss(model, batch, adj), params,
                                   torch.cat([users, items]), n_scored=6)


def test_first_modality_slot_is_the_sum_of_all(tiny):
    """MMRec's in-place sum: with all weight on the first slot, a user is the sum of every modality."""
    model = _model(tiny)
    with torch.no_grad():
        model.user_weight.copy_(torch.tensor([1.0, 0.0]).expand(tiny.n_users, 2))
        users, _ = model.fused()
        want = sum(model.modality_rep(m, model.config.num_layers)[: tiny.n_users] for m in model.modalities)
    torch.testing.assert_close(users, want)


def test_bfloat16_feature_products_stay_close(tiny, monkeypatch):
    from prismrec.models import dualgnn
    monkeypatch.setattr(dualgnn, "WIDE", 1)  # the tiny features are narrow: force the bf16 path

    def make(precision):
        model = _model(tiny, feature_precision=precision)
        assert all(model.bf16.values()) == (precision == "bfloat16")
        return model
    check_low_precision_close(make, _batch(tiny), lambda m: m.mlp_in["image"].weight.grad)


def test_sampled_user_graph_is_redrawn_saved_and_followed(tiny):
    torch.manual_seed(0)
    model = build_model("dualgnn", tiny, DualGNNConfig(user_knn_k=290))   # padding: draws differ
    g = model.user_graph
    assert {"user_graph.index", "user_graph.weight"} <= set(model.state_dict())
    before = g.index.clone()
    model.on_epoch_start(1)
    assert not torch.equal(before, g.index)
    x = torch.randn(tiny.n_users, 3)
    expected = (g.weight[:, :, None] * x[g.index]).sum(1)
    torch.testing.assert_close(g.matrix() @ x, expected, rtol=1e-5, atol=1e-6)
    rows = torch.tensor([4, 0, 4, 17])
    torch.testing.assert_close(g.matrix(rows) @ x, expected[rows], rtol=1e-5, atol=1e-6)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.on_epoch_start(2)
    model.load_state_dict(state)                    # the CSR form follows the restored buffers
    torch.testing.assert_close(g.matrix() @ x, expected, rtol=1e-5, atol=1e-6)
    other = SampledUserGraph(tiny.train, 290)
    other.resample(torch.Generator().manual_seed(1))
    again = SampledUserGraph(tiny.train, 290)
    again.resample(torch.Generator().manual_seed(1))
    assert torch.equal(other.index, again.index)


def test_one_modality_has_no_user_weights(tiny_one_modality):
    model = _model(tiny_one_modality)
    assert not hasattr(model, "user_weight")


def test_modality_contributions_sum_to_the_score(tiny_three_modalities):
    ds = tiny_three_modalities
    model = _model(ds)
    users, items = torch.tensor([0, 1, 2, 2]), torch.tensor([5, 6, 7, 0])
    parts = model.modality_contributions(users, items)
    assert list(parts) == model.modalities
    with model.scoring():
        want = model.score(users)[torch.arange(4), items]
    torch.testing.assert_close(sum(parts.values()), want, rtol=1e-5, atol=1e-5)


def test_learns_beating_most_popular(tiny):
    check_beats_most_popular("dualgnn", tiny)


@pytest.mark.parametrize("plugin", ["befa", "erl"])
def test_trains_with_feature_plugins(tiny, plugin):
    check_trains_with_plugin("dualgnn", tiny, plugin)


@pytest.mark.parametrize("field,value", [("embedding_dim", 0), ("hidden_mult", 0), ("num_layers", -1),
                                         ("user_knn_k", 0), ("aggr_mode", "max"), ("reg_weight", -1.0),
                                         ("feature_precision", "fp8")])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(DualGNNConfig, field, value, DualGNN)


def test_tunable_ranges():
    check_tunable("dualgnn", {"reg_weight", "learning_rate"})
