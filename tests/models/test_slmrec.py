"""SLMRec: the batch-row fast path matches a dense reference of the equations (values and
gradients, for every self-supervised task, random perturbations included); the FAC hierarchy;
the masked views; it learns; config checks; plug-ins and the serve round trip."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec.config import resolve
from prismrec.graphs import bipartite_adjacency
from prismrec.models import build_model
from prismrec.models.slmrec import SLMRec, SLMRecConfig
from tests.models.helpers import (assert_ignores_negatives, check_beats_most_popular, check_config_names_field, check_serve_round_trip,
                                  check_trains_with_plugin, check_tunable, first_batch)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("slmrec", ds, SLMRecConfig(**{"feature_precision": "float32", **cfg}))


def _batch(ds, size=96, seed=0):
    return first_batch(ds, size, seed)


def _info_nce(a, b, tau):
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / tau
    return F.cross_entropy(logits, torch.arange(len(a)))


def _dense(model, batch, adj):
    """The equations with dense matrices, one view at a time. Returns (loss, [users; items] embeddings).

    The random perturbations are drawn as the model draws them: the two masked views first, then
    per layer one dropout mask over both perturbed propagations side by side."""
    cfg, d, n, L = model.config, model.config.embedding_dim, model.n_users, model.config.num_layers
    inputs = [model.item_emb] + [F.normalize(model.features(m), dim=1) @ model.proj[m].weight.T + model.proj[m].bias
                                 for m in model.modalities]
    V = len(inputs)

    def lightgcn(x, masks=None):
        layers = [x]
        for l in range(L):
            h = adj @ layers[-1]
            layers.append(h if masks is None else h * masks[l])
        return torch.stack(layers).mean(dim=0)

    def fuse(views):
        z = torch.cat(views, dim=1) if cfg.fusion == "concat" else torch.stack(views).mean(dim=0)
        return torch.cat([model.user_out(z[:n]), model.item_out(z[n:])])

    views = [lightgcn(torch.cat([model.user_emb, x])) for x in inputs]
    e = fuse(views)
    pos = n + batch.pos_items
    loss = _info_nce(e[batch.users], e[pos], cfg.temperature)
    if cfg.ssl_task == "fac":
        z, ssl = views[0][pos], 0.0
        for k, m in enumerate(model.levels):
            z = model.chain[k](z)
            target = model.heads[m](views[1 + model.modalities.index(m)][pos])
            ssl = ssl + F.cross_entropy(z @ target.T / cfg.cl_temperature, torch.arange(len(z)))
    else:
        masked = [None, None]
        if "fm" in cfg.ssl_task:
            a = torch.randint(V, ())
            masked = [a, (a + 1 + torch.randint(V - 1, ())) % V]
        masks = [[None] * L, [None] * L]
        if "fd" in cfg.ssl_task:
            for l in range(L):
                m = F.dropout(torch.ones(n + model.n_items, 2 * V * d), cfg.dropout)
                masks[0][l], masks[1][l] = m[:, : V * d], m[:, V * d:]
        subs = []
        for s in range(2):
            sub = []
            for v, x in enumerate(inputs):
                x = torch.zeros_like(x) if masked[s] is not None and v == int(masked[s]) else x
                sub.append(lightgcn(torch.cat([model.user_emb, x]),
                                    None if masks[s][0] is None else [mk[:, v * d:(v + 1) * d] for mk in masks[s]]))
            subs.append(fuse(sub))
        ssl = (_info_nce(subs[0][batch.users], subs[1][batch.users], cfg.cl_temperature)
               + _info_nce(subs[0][pos], subs[1][pos], cfg.cl_temperature))
    return loss + cfg.cl_weight * ssl, e


CASES = [("tiny", {}), ("tiny", {"ssl_task": "fd"}), ("tiny", {"ssl_task": "fm", "num_layers": 2}),
         ("tiny", {"ssl_task": "fd+fm", "cl_weight": 0.5}), ("tiny_one_modality", {"cl_weight": 0.3}),
         ("tiny_three_modalities", {"cl_weight": 1.0, "fusion": "mean"}),
         ("tiny_three_modalities", {"ssl_task": "fd+fm", "cl_temperature": 0.5, "fusion": "mean"}),
         ("tiny_one_modality", {"ssl_task": "fm"})]


@pytest.mark.parametrize("fixture,cfg", CASES)
def test_loss_gradients_and_scores_match_dense_reference(fixture, cfg, request):
    ds = request.getfixturevalue(fixture)
    model = _model(ds, **cfg)
    batch = _batch(ds)
    adj = torch.as_tensor(bipartite_adjacency(ds.train).toarray())
    torch.manual_seed(11)  # the same masked views and dropout masks on both paths
    fast = model.loss(batch)
    fast.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    ref, e = _dense(model, batch, adj)
    ref.backward()
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    for k, p in model.named_parameters():
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6 * max(scale, 1.0), msg=k)
    n = model.n_users
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(5)), (e[:5] @ e[n:].T).detach(), rtol=1e-5, atol=1e-5)


def test_perturbations_are_seeded_and_random(tiny):
    model, batch = _model(tiny, ssl_task="fd+fm"), _batch(tiny)
    torch.manual_seed(3)
    a = model.loss(batch)
    torch.manual_seed(3)
    torch.testing.assert_close(model.loss(batch), a)
    assert not torch.allclose(model.loss(batch), a)


def test_negatives_are_ignored(tiny):
    assert_ignores_negatives(_model(tiny, ssl_task="fd"), _batch(tiny))


def test_fac_hierarchy_puts_coarse_modalities_last_at_half_width(tiny, tiny_three_modalities):
    model = _model(tiny_three_modalities, embedding_dim=16)  # visual, acoustic, textual
    assert model.levels == ["visual", "acoustic", "textual"]
    assert [g.out_features for g in model.chain] == [16, 16, 8]
    assert [model.heads[m].out_features for m in model.levels] == [16, 16, 8]
    model = _model(tiny, embedding_dim=16, coarse_modalities=("image",))  # image, text -> text, image
    assert model.levels == ["text", "image"] and [g.out_features for g in model.chain] == [16, 8]
    assert not hasattr(_model(tiny, ssl_task="fd"), "chain")


def test_masked_views_are_two_distinct_views_drawn_uniformly(tiny_three_modalities):
    model, batch = _model(tiny_three_modalities, ssl_task="fm"), _batch(tiny_three_modalities, 32)
    drawn, original = [], model.masked

    def record(x, view):
        drawn.append(int(view))
        return original(x, view)
    model.masked = record
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(300):
            model.loss(batch)
    pairs = list(zip(drawn[::2], drawn[1::2]))
    assert all(a != b for a, b in pairs)
    counts = np.bincount([4 * a + b for a, b in pairs], minlength=16).reshape(4, 4)
    assert (counts[~np.eye(4, dtype=bool)] > 10).all()  # all 12 ordered pairs, ~25 each


def test_masked_zeroes_only_the_item_inputs_of_one_view(tiny):
    model = _model(tiny, ssl_task="fm", embedding_dim=8)
    x = model.inputs().detach()
    out = model.masked(x, torch.tensor(1))
    n = model.n_users
    torch.testing.assert_close(out[:n], x[:n])
    assert (out[n:, 8:16] == 0).all()
    torch.testing.assert_close(out[n:, :8], x[n:, :8])
    torch.testing.assert_close(out[n:, 16:], x[n:, 16:])


def test_learns_beating_most_popular(tiny):
    check_beats_most_popular("slmrec", tiny)


def test_train_defaults_are_the_yaml_learning_rate_and_weight_decay():
    train, _ = resolve(SLMRec, {})
    assert train.learning_rate == 1e-4 and train.weight_decay == 1e-4
    train, _ = resolve(SLMRec, {"learning_rate": 1e-3})
    assert train.learning_rate == 1e-3


@pytest.mark.parametrize("field,value", [("ssl_task", "fac+fd"), ("fusion", "sum"), ("dropout", 1.0),
                                         ("temperature", 0.0), ("cl_temperature", 0.0), ("cl_weight", -1.0),
                                         ("num_layers", -1), ("embedding_dim", 0), ("embedding_dim", 1),
                                         ("feature_precision", "fp8")])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(SLMRecConfig, field, value, SLMRec)


def test_tunable_ranges():
    check_tunable("slmrec", {"cl_weight", "cl_temperature", "learning_rate"})


@pytest.mark.parametrize("plugin", ["befa", "erl"])
def test_trains_with_feature_plugins(plugin, tiny):
    check_trains_with_plugin("slmrec", tiny, plugin, learning_rate=1e-2)


def test_serve_round_trip(tiny, tmp_path):
    check_serve_round_trip("slmrec", tiny, tmp_path)
