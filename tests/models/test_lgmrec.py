"""LGMRec: the fast path (one product for the projection and the hyperedge logits, the distinct-row
contrast with its analytic backward, bf16 products) matches a dense transcription of the paper's
equations; the hypergraph helpers; it learns."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec import Recommender
from prismrec.data.sampler import PairwiseSampler
from prismrec.graphs import hypergraph_conv
from prismrec.models import build_model
from prismrec.models.layers import info_nce_all
from prismrec.models.lgmrec import LGMRecConfig
from tests.models.helpers import assert_loss_and_grads_match

F32 = LGMRecConfig(feature_precision="float32", cl_precision="float32", cl_weight=0.1, reg_weight=1e-3)


def _batch(ds, size=64, seed=0):
    return next(iter(PairwiseSampler(ds.train, size, np.random.default_rng(seed))))


def _dense(model):
    """Final embeddings and the hypergraph embeddings per modality, from dense matrices, with the
    noise-free memberships (eval mode: no Gumbel noise, no dropout)."""
    cfg, n = model.config, model.n_users
    adj, r = model.adj.a.to_dense(), model.user_item.a.to_dense()
    ego, layers = model.embedding, [model.embedding]
    for _ in range(cfg.num_ui_layers):
        ego = adj @ ego
        layers.append(ego)
    cge = torch.stack(layers, dim=1).mean(dim=1)
    local, hyper = cge, []
    for m in model.modalities:
        x = model.features(m)
        feats = x @ model.trans[m]
        h = torch.cat([(r @ feats) / (r.sum(1, keepdim=True) + 1e-7), feats])
        for _ in range(cfg.num_mm_layers):
            h = adj @ h
        local = local + F.normalize(h)
        iv = x @ model.hyper[m]
        uv = r @ iv
        iv, uv = torch.softmax(iv / cfg.temperature, 1), torch.softmax(uv / cfg.temperature, 1)
        lat = iv.T @ cge[n:]
        hyper.append(torch.cat([uv @ lat, iv @ lat]))
    return local + cfg.alpha * F.normalize(hyper[0] + hyper[1]), hyper


def _ssl(a, b, all_b, tau):
    a, b, all_b = F.normalize(a), F.normalize(b), F.normalize(all_b)
    pos = torch.exp((a * b).sum(1) / tau)
    return -torch.log(pos / torch.exp(a @ all_b.T / tau).sum(1)).sum()


def _dense_loss(model, batch):
    cfg, n = model.config, model.n_users
    e, (gv, gt) = _dense(model)
    u, p, ng = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * ng).sum(1)).mean()
    cl = (_ssl(gv[:n][batch.users], gt[:n][batch.users], gt[:n], cfg.temperature)
          + _ssl(gv[n:][batch.pos_items], gt[n:][batch.pos_items], gt[n:], cfg.temperature))
    reg = (u.norm() + p.norm() + ng.norm()) / len(batch.users)
    return bpr + cfg.cl_weight * cl + cfg.reg_weight * reg


def test_loss_gradients_and_scores_match_dense_reference(tiny):
    torch.manual_seed(0)
    model = build_model("lgmrec", tiny, F32).eval()  # eval: deterministic memberships on both paths
    batch = _batch(tiny)
    assert_loss_and_grads_match(model, batch, _dense_loss, relative_grad_atol=1e-5)
    with model.scoring():
        u, i = model.embeddings()
        e, _ = _dense(model)
        torch.testing.assert_close(torch.cat([u, i]), e, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.score(torch.tensor([3, 4])), e[[3, 4]] @ e[model.n_users:].T,
                                   rtol=1e-4, atol=1e-5)


def test_training_draws_gumbel_noise_and_dropout(tiny):
    torch.manual_seed(0)
    model = build_model("lgmrec", tiny)
    batch = _batch(tiny)
    assert model.loss(batch).item() != model.loss(batch).item()
    model.eval()
    assert model.loss(batch).item() == model.loss(batch).item()
    logits = torch.randn(50, 4)
    torch.testing.assert_close(model.memberships(logits), torch.softmax(logits / 0.2, 1))


def test_info_nce_all_matches_formula_and_gradcheck():
    torch.manual_seed(0)
    a = torch.randn(30, 6, dtype=torch.double, requires_grad=True)
    b = torch.randn(30, 6, dtype=torch.double, requires_grad=True)
    index = torch.randint(0, 30, (45,))  # duplicated rows, as a batch's users
    torch.testing.assert_close(info_nce_all(a, b, index, 0.2), _ssl(a[index], b[index], b, 0.2))
    assert torch.autograd.gradcheck(lambda x, y: info_nce_all(x, y, index, 0.2), (a, b))


def test_hypergraph_conv_layers():
    torch.manual_seed(0)
    hi, hu, x = torch.rand(10, 3), torch.rand(7, 3), torch.randn(10, 4)
    u, i = hypergraph_conv(hi, hu, x, 2)
    lat = hi.T @ (hi @ (hi.T @ x))
    torch.testing.assert_close(i, hi @ lat)
    torch.testing.assert_close(u, hu @ lat)
    with pytest.raises(ValueError, match="num_layers"):
        hypergraph_conv(hi, hu, x, 0)


@pytest.mark.parametrize("fixture", ["tiny_one_modality", "tiny_three_modalities"])
def test_any_number_of_modalities(fixture, request):
    ds = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    model = build_model("lgmrec", ds)
    loss = model.loss(_batch(ds))
    loss.backward()
    assert torch.isfinite(loss)
    with model.scoring():
        assert model.score(torch.tensor([0, 1])).shape == (2, ds.n_items)


def test_config_errors_name_the_field():
    for field, value in [("keep_rate", 0.0), ("hyper_num", 0), ("num_mm_layers", 0), ("alpha", -1.0),
                         ("temperature", 0.0), ("cl_precision", "half"), ("num_ui_layers", -1)]:
        with pytest.raises(ValueError, match=field):
            LGMRecConfig(**{field: value})


def test_learns_beyond_popularity(tiny, tmp_path):
    pop = Recommender("pop").fit(tiny, show_progress=False).metrics["test"]["recall@20"]
    rec = Recommender("lgmrec", epochs=10, batch_size=256, learning_rate=1e-2).fit(tiny, run_dir=tmp_path,
                                                                                   show_progress=False)
    assert rec.metrics["test"]["recall@20"] > pop + 0.03
    loaded = Recommender.load(tmp_path)
    np.testing.assert_allclose(loaded.score(np.arange(6)), rec.score(np.arange(6)), rtol=1e-5, atol=1e-5)
