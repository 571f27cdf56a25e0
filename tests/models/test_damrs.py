"""DA-MRS: the denoised item graphs and the fast loss (fused propagation, analytic graded-neighbour
contrast, closed-form symmetric KL) match dense versions of the paper's equations; it learns, saves,
serves and takes the feature plug-ins."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec import Recommender
from prismrec.config import resolve
from prismrec.errors import ConfigError
from prismrec.graphs import agreed_knn_graphs, item_behaviour_graph
from prismrec.models import build_model
from prismrec.models.damrs import DAMRS, DAMRSConfig
from prismrec.models.layers import graded_neighbour_contrast, graded_neighbours, topk_indices
from tests.models.helpers import first_batch, assert_loss_and_grads_match, check_serve_round_trip


def _batch(ds, size=64, seed=0):
    return first_batch(ds, size, seed)


def _row_normalised(a: np.ndarray) -> np.ndarray:
    d = a.sum(1) + 1e-7
    return a / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]


def _dense_agreed(feats, k):
    """Every pair's cosine per modality; candidates reach every modality's mean; top-k per row."""
    sims = [(f / np.linalg.norm(f, axis=1, keepdims=True)) @ (f / np.linalg.norm(f, axis=1, keepdims=True)).T
            for f in feats]
    ok = np.logical_and.reduce([s >= s.mean() for s in sims])
    out = []
    for s in sims:
        a = np.zeros_like(s)
        for i in range(len(s)):
            cand = np.flatnonzero(ok[i])
            a[i, cand[np.argsort(-s[i, cand])[:k]]] = 1.0
        out.append(_row_normalised(a))
    return out


def test_agreed_knn_graphs_match_dense_definition(tiny, tiny_three_modalities):
    for ds in (tiny, tiny_three_modalities):
        feats = [np.asarray(f, np.float64) for f in ds.features.values()]
        got = agreed_knn_graphs([f.astype(np.float32) for f in feats], 7, block_size=50, cache=False)
        for g, want in zip(got, _dense_agreed(feats, 7), strict=True):
            np.testing.assert_allclose(g.toarray(), want, rtol=1e-5, atol=1e-7)
    # agreement prunes: some items keep fewer than k neighbours, and every item keeps itself
    g = agreed_knn_graphs([np.asarray(f) for f in tiny.features.values()], 60, cache=False)[0]
    assert g.diagonal().min() > 0 and np.diff(g.indptr).min() < 60


def test_item_behaviour_graph_keeps_top_co_occurring_items_with_enough_shared_users(tiny):
    r = (tiny.train > 0).astype(np.float64).toarray()
    c = r.T @ r
    np.fill_diagonal(c, 0)
    for k, min_count in ((2, 2), (200, 1), (5, 3)):
        a = np.eye(len(c))
        for i in range(len(c)):
            order = np.argsort(-c[i], kind="stable")[:k]
            a[i, order[c[i, order] >= min_count]] = 1.0
        got = item_behaviour_graph(tiny.train, k, min_count).toarray()
        # ties in the count may pick other columns: same row degrees and only allowed columns
        np.testing.assert_array_equal((got > 0).sum(1), (a > 0).sum(1))
        cut = np.sort(c, axis=1)[:, ::-1][:, k - 1:k] if k < len(c) else np.zeros((len(c), 1))
        assert np.all((got > 0) <= ((c >= np.maximum(cut, min_count)) | np.eye(len(c), dtype=bool)))
        if k == 200:
            np.testing.assert_allclose(got, _row_normalised(a), rtol=1e-5, atol=1e-7)


def _dense_views(model):
    e = model.item_emb
    out = []
    for g in model.item_graphs:
        h, s = e, g.a.to_dense()
        for _ in range(model.config.num_mm_layers):
            h = s @ h
        out.append(h)
    return out


def _dense_backbone(model):
    a, x = model.adj.a.to_dense(), model.embedding
    layers = [x]
    for _ in range(model.config.num_ui_layers):
        layers.append(a @ layers[-1])
    e = torch.stack(layers).mean(0)
    return e[: model.n_users], e[model.n_users:]


def _dense_loss(model, batch):
    """The paper's equations over all matrices: softmax pseudo-labels per view, the graded contrast
    with boolean masks, Bernoulli KL both ways in logs, the content-weighted BPR."""
    cfg, n_pos = model.config, model.config.num_positives
    eu_all, ei_all = _dense_backbone(model)
    views = _dense_views(model)
    users = torch.unique(batch.users)
    items = torch.unique(torch.cat([batch.pos_items, batch.neg_items]))
    unit = [F.normalize(h, dim=1) for h in views]
    probs = [torch.softmax(u[items] @ u.T, dim=1).detach() for u in unit]
    ai = 0.0
    for v, u in enumerate(unit):
        others = sum(p for w, p in enumerate(probs) if w != v)
        strong = torch.zeros_like(probs[v], dtype=torch.bool).scatter_(
            1, (others + 2 * probs[v]).topk(n_pos, dim=1).indices, True)
        weak = torch.zeros_like(strong).scatter_(
            1, probs[v].masked_fill(strong, 0.0).topk(n_pos, dim=1).indices, True)
        e = torch.exp(u[items] @ u.T / cfg.temperature)
        total, hit, soft = e.sum(1), (e * strong).sum(1), (e * weak).sum(1)
        ai = ai + (-torch.log(hit / total + 1e-9) - torch.log(soft / (total - hit) + 1e-9)).mean()
    ai = ai / len(views)
    content = torch.stack(views).mean(0)
    p = torch.sigmoid(eu_all[users] @ F.normalize(ei_all[items], dim=1).T)
    q = torch.sigmoid(eu_all[users] @ F.normalize(content[items], dim=1).T)

    def kl(a, b):
        return a * torch.log(a / b) + (1 - a) * torch.log((1 - a) / (1 - b))
    au = (kl(p, q) + kl(q, p)).mean()
    u = eu_all[batch.users]
    with torch.no_grad():
        pv = torch.stack([torch.sigmoid((u * x[batch.pos_items]).sum(1)) for x in unit])
        nv = torch.stack([torch.sigmoid((u * x[batch.neg_items]).sum(1)) for x in unit])
        w_pos = torch.clamp(pv.mean(0) * torch.exp(-pv.var(0)) ** 2, 0, 1)
        w_neg = torch.clamp((pv.max(0).values - nv.mean()) * (pv.mean(0) < nv.mean()), 0, 1)
    final = ei_all + content
    x = (u * final[batch.pos_items]).sum(1) - (u * final[batch.neg_items]).sum(1)
    bpr = -(torch.log(torch.sigmoid(x)) * w_pos + torch.log(torch.sigmoid(-x)) * w_neg).mean()
    return bpr + cfg.kl_weight * au + cfg.neighbor_weight * ai


@pytest.mark.parametrize("fixture", ["tiny", "tiny_three_modalities"])
def test_loss_gradients_and_scores_match_dense_reference(fixture, request):
    ds = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    # a large contrast weight so that its gradient is not lost in the others' rounding
    model = build_model("damrs", ds, DAMRSConfig(neighbor_weight=1.0, behaviour_knn_k=20, behaviour_min_count=1))
    with torch.no_grad():
        model.embedding.mul_(30.0)  # scores of order 1: the pair weights are not all alike
    batch = _batch(ds)
    assert_loss_and_grads_match(model, batch, _dense_loss, relative_grad_atol=1e-5)
    with torch.no_grad():
        du, di = _dense_backbone(model)
        di = di + torch.stack(_dense_views(model)).mean(0)
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(5)), du[:5] @ di.T, rtol=1e-5, atol=1e-5)


def test_noisy_positive_is_turned_into_a_negative():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # item 1: one view agrees with the user, the other not; on average below the negatives (item 2)
    q = [torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6]]), torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.8, 0.6]])]
    w_pos, w_neg = DAMRS.pair_weights(u, q, torch.tensor([0, 1]), torch.tensor([2, 2]))
    s = torch.sigmoid
    assert w_neg[0] == 0 and w_neg[1].item() == pytest.approx((s(torch.tensor(1.0)) - s(torch.tensor(0.8))).item())
    assert w_pos[0].item() == pytest.approx(s(torch.tensor(1.0)).item())   # no variance between the views
    lo = s(torch.tensor(-1.0)).item()
    var = 2 * (0.5 - lo) ** 2                                              # unbiased, two views
    assert w_pos[1].item() == pytest.approx(0.5 * np.exp(-2 * var), rel=1e-5)  # the views' mean, shrunk


def test_graded_contrast_gradcheck_and_blocks():
    torch.manual_seed(0)
    qs = [F.normalize(torch.randn(7, 4, dtype=torch.float64), dim=1).requires_grad_(True) for _ in range(2)]
    keys = [F.normalize(torch.randn(30, 4, dtype=torch.float64), dim=1).requires_grad_(True) for _ in range(2)]
    (strong, weak), _ = graded_neighbours([(q @ k.T).detach() for q, k in zip(qs, keys)], 3)
    assert not (strong[:, :, None] == weak[:, None, :]).any()          # disjoint grades
    assert torch.autograd.gradcheck(lambda *t: graded_neighbour_contrast(t[:2], t[2:], 3, 0.2, block_rows=3),
                                    (*qs, *keys))
    with torch.no_grad():  # the row blocks change nothing
        torch.testing.assert_close(graded_neighbour_contrast(qs, keys, 3, 0.2, block_rows=2),
                                   graded_neighbour_contrast(qs, keys, 3, 0.2, block_rows=100))


def test_bfloat16_contrast_products_stay_close():
    torch.manual_seed(0)
    keys = [F.normalize(torch.randn(500, 16), dim=1).requires_grad_(True) for _ in range(3)]
    idx = torch.randperm(500)[:60]
    out = {}
    for precision in (None, torch.bfloat16):
        loss = graded_neighbour_contrast([k[idx] for k in keys], keys, 10, 0.2, block_rows=16, precision=precision)
        grads = torch.autograd.grad(loss, keys)
        out[precision] = loss.item(), torch.cat(grads)
    assert out[torch.bfloat16][0] == pytest.approx(out[None][0], rel=1e-2)
    a, b = out[None][1], out[torch.bfloat16][1]
    assert 0 < (a - b).norm() / a.norm() < 0.05


@pytest.mark.parametrize("n,k", [(7050, 10), (300, 10), (37, 3), (12, 10), (5, 5)])
def test_topk_indices_finds_the_k_largest(n, k):
    x = torch.randn(9, n, generator=torch.Generator().manual_seed(n))
    got = topk_indices(x, k)
    assert got.shape == (9, k)
    torch.testing.assert_close(x.gather(1, got).sort(1).values, x.topk(k, 1).values.sort(1).values)


def test_agreed_graphs_are_cached(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PRISMREC_CACHE", str(tmp_path))
    feats = [np.asarray(f) for f in tiny.features.values()]
    first = agreed_knn_graphs(feats, 5)
    assert len(list(tmp_path.glob("agreed-knn-*.safetensors"))) == 1
    for a, b in zip(first, agreed_knn_graphs(feats, 5), strict=True):
        assert (a != b).nnz == 0


def test_one_and_three_modalities(tiny_one_modality, tiny_three_modalities):
    for ds in (tiny_one_modality, tiny_three_modalities):
        torch.manual_seed(0)
        model = build_model("damrs", ds)
        assert len(model.item_graphs) == len(ds.features) + 1
        loss = model.loss(_batch(ds))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(model.embedding.grad).all()


@pytest.mark.parametrize("field,value", [("knn_k", 0), ("num_mm_layers", 0), ("num_ui_layers", -1),
                                         ("behaviour_knn_k", 0), ("behaviour_min_count", 0), ("kl_weight", -1.0),
                                         ("neighbor_weight", -1.0), ("num_positives", 0), ("temperature", 0.0),
                                         ("contrast_precision", "fp8")])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        DAMRSConfig(**{field: value})
    with pytest.raises(ConfigError, match=field):
        resolve(DAMRS, {field: value})


def test_tunable_ranges():
    from prismrec.train.hpo import search_space
    names = {p.name for p in search_space("damrs")}
    assert {"kl_weight", "neighbor_weight", "knn_k", "num_ui_layers", "learning_rate"} <= names


def test_learns_beating_most_popular_and_round_trips(tiny, tmp_path):
    rec = Recommender("damrs", epochs=8, batch_size=256, learning_rate=1e-2, seed=0).fit(
        tiny, run_dir=tmp_path, show_progress=False)
    pop = Recommender("pop").fit(tiny, show_progress=False)
    losses = [h["loss"] for h in rec.result.history]
    assert losses[-1] < losses[0]
    assert rec.metrics["test"]["recall@20"] > pop.metrics["test"]["recall@20"] + 0.03
    loaded = Recommender.load(tmp_path)
    np.testing.assert_allclose(loaded.score(np.arange(6)), rec.score(np.arange(6)), rtol=1e-5, atol=1e-5)


def test_serve_round_trip(tiny, tmp_path):
    check_serve_round_trip("damrs", tiny, tmp_path)
