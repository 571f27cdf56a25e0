"""GRCN: the model's loss and gradients against a dense reference of the
equations (MMRec's form of the loss), learning, attribution, plug-ins and config checks."""
import pytest
import torch
import torch.nn.functional as F

from prismrec.models import build_model
from prismrec.models.grcn import GRCN, GRCNConfig
from tests.models.helpers import (assert_loss_and_grads_match, check_beats_most_popular, check_config_names_field,
                                  check_trains_with_plugin, check_tunable, first_batch)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("grcn", ds, GRCNConfig(**{"feature_precision": "float32", **cfg}))


def _batch(ds, size=96, seed=0):
    return first_batch(ds, size, seed)


def _dense_representation(model, train):
    """``e [N + I, d + M·C]`` with dense ``[N, I]`` matrices, straight from the docstring's equations."""
    r = torch.tensor(train.toarray() > 0, dtype=torch.float32)
    n = r.shape[0]
    conf = model.confidence
    contents, to_user, to_item = [], [], []
    for k, m in enumerate(model.modalities):
        lin = model.proj[m]
        f = F.normalize(F.leaky_relu(model.features(m) @ lin.weight.T + lin.bias), dim=1)   # [I, C]
        p = F.normalize(model.preference[m], dim=1)                                         # [N, C]
        ex = torch.exp(p @ f.T) * r                                                         # [N, I]
        a_user = ex / ex.sum(1, keepdim=True).clamp_min(1e-30)   # softmax over each user's items
        a_item = ex / ex.sum(0, keepdim=True).clamp_min(1e-30)   # softmax over each item's users
        contents.append(torch.cat([p + a_user @ f, f + a_item.T @ p]))
        to_user.append(a_user * conf[n:, k][None, :])   # user u <- item i, the item's confidence
        to_item.append(a_item * conf[:n, k][:, None])   # item i <- user u, the user's confidence
    w_user = torch.stack(to_user).max(0).values.relu()
    w_item = torch.stack(to_item).max(0).values.relu()
    adj = torch.zeros(n + r.shape[1], n + r.shape[1])
    adj[:n, n:], adj[n:, :n] = w_user, w_item.T
    h = F.normalize(model.id_emb, dim=1)
    out = h
    for _ in range(model.config.num_layers):
        h = adj @ h
        out = out + h
    return torch.cat([out, *contents], dim=1)


def _dense_loss(model, batch, train):
    """MMRec's loss: users repeated for their positive and negative, BPR over the score pairs, and the
    squared means of the ID rows, the first modality's preference table and each modality's batch rows."""
    e, n = _dense_representation(model, train), model.n_users
    users = batch.users.repeat_interleave(2)
    items = torch.stack([batch.pos_items, batch.neg_items]).t().reshape(-1) + n
    scores = (e[users] * e[items]).sum(1).view(-1, 2)
    bpr = -torch.log(torch.sigmoid(scores @ torch.tensor([1.0, -1.0]))).mean()
    reg = ((model.id_emb[users] ** 2 + model.id_emb[items] ** 2).mean()
           + (model.preference[model.modalities[0]] ** 2).mean()
           + sum((model.preference[m][users] ** 2).mean() for m in model.modalities))
    return bpr + model.config.reg_weight * reg


@pytest.mark.parametrize("fixture,cfg", [("tiny", {}), ("tiny_one_modality", {"num_layers": 1}),
                                         ("tiny_three_modalities", {"num_layers": 3, "reg_weight": 0.5,
                                                                    "latent_dim": 8})])
def test_loss_gradients_and_scores_match_dense_reference(fixture, cfg, request):
    ds = request.getfixturevalue(fixture)
    model = _model(ds, **cfg)
    with torch.no_grad():  # spread the confidences so that modalities and signs differ across edges
        model.confidence.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    batch = _batch(ds)
    assert_loss_and_grads_match(model, batch, lambda mod, b: _dense_loss(mod, b, ds.train), relative_grad_atol=1e-5)
    e = _dense_representation(model, ds.train).detach()
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(6)), e[:6] @ e[model.n_users:].T, rtol=1e-5, atol=1e-5)


def test_pruning_zeroes_negative_confidences(tiny):
    model = _model(tiny)
    with torch.no_grad():
        model.confidence[: model.n_users] = -1.0   # every user distrusted: items receive nothing
    _, w_user, w_item = model.refine()
    assert (w_item == 0).all() and (w_user >= 0).all() and (w_user > 0).any()


def test_learns_beating_most_popular(tiny):
    check_beats_most_popular("grcn", tiny)


def test_modality_contributions_are_the_score_blocks(tiny_three_modalities):
    ds = tiny_three_modalities
    model = _model(ds)
    users, items = torch.tensor([0, 1, 2, 2]), torch.tensor([5, 6, 7, 0])
    parts = model.modality_contributions(users, items)
    assert list(parts) == model.modalities
    with model.scoring():
        u, i = model.scoring_factors()
        d = model.config.embedding_dim
        id_part = (u[users, :d] * i[items, :d]).sum(1)
        want = model.score(users)[torch.arange(4), items]
    torch.testing.assert_close(id_part + sum(parts.values()), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("plugin", ["befa", "erl"])
def test_trains_with_feature_plugins(tiny, plugin):
    check_trains_with_plugin("grcn", tiny, plugin)


@pytest.mark.parametrize("field,value", [("embedding_dim", 0), ("latent_dim", 0), ("num_layers", 0),
                                         ("reg_weight", -1.0), ("feature_precision", "fp8")])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(GRCNConfig, field, value, GRCN)


def test_tunable_ranges():
    check_tunable("grcn", {"reg_weight", "learning_rate"})
