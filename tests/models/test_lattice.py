"""LATTICE: the blocked sparse learned graph equals a dense reference of the paper's equations, loss goes down,
scores are well formed, and any number of modalities works."""
import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.data.sampler import PairwiseSampler
from prismrec.models import build_model
from tests.models.helpers import epoch_losses


def _dense_reference(model) -> torch.Tensor:
    """Dense reference of LATTICE's item graph (paper Eq. 1-6).

    Per modality m: cosine similarity ``S_m`` of the (projected, for the learned graph) features;
    keep each row's k largest entries with their values; the raw-feature graphs are normalised
    ``D^{-1/2} S D^{-1/2}`` one by one, the learned ones after their softmax(α)-weighted sum; the
    item graph is ``(1 - λ) · learned + λ · raw``."""
    def row_topk_similarity(x):
        unit = torch.nn.functional.normalize(x, dim=1)
        sim = unit @ unit.T
        kth = sim.sort(dim=1, descending=True).values[:, model.config.knn_k - 1: model.config.knn_k]
        return torch.where(sim >= kth, sim, torch.zeros(()))

    def sym_norm(a):
        deg = a.sum(dim=1)
        scale = torch.where(deg > 0, deg.clamp(min=1e-30).rsqrt(), torch.zeros(()))
        return scale[:, None] * a * scale[None, :]

    alpha = torch.softmax(model.modal_weight, dim=0)
    learned = torch.zeros(model.n_items, model.n_items)
    raw = torch.zeros(model.n_items, model.n_items)
    for a_m, m in zip(alpha, model.modalities):
        learned += a_m * row_topk_similarity(model.proj[m](model.features(m)))
        raw += a_m * sym_norm(row_topk_similarity(model.features(m)))
    lam = model.config.lambda_coeff
    return (1 - lam) * sym_norm(learned) + lam * raw


def _dense(edges, n):
    rows, cols, vals = edges
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).to_dense()


@pytest.mark.parametrize("fixture", ["tiny_one_modality", "tiny", "tiny_three_modalities"])
def test_blocked_learned_graph_equals_dense_reference(fixture, request):
    ds = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    model = build_model("lattice", ds)
    model.knn_block_size = 7  # many partial blocks
    with torch.no_grad():
        torch.nn.init.normal_(model.modal_weight)  # unequal modality weights
        ref = _dense_reference(model)
        got = _dense(model.item_graph(), ds.n_items)
    assert torch.allclose(got, ref, atol=1e-5)
    assert (got != 0).sum(1).max() <= 2 * model.config.knn_k * len(ds.features)


def test_first_batch_builds_graph_with_gradient_then_fixed(tiny):
    torch.manual_seed(0)
    model = build_model("lattice", tiny)
    b0, b1 = list(PairwiseSampler(tiny.train, 64, np.random.default_rng(0)))[:2]
    model.train()
    model.on_epoch_start(0)
    model.loss(b0).backward()  # first batch: the graph's values carry gradient
    assert model.modal_weight.grad is not None and model.proj["image"].weight.grad is not None
    assert model.feat_image.grad is not None
    model.zero_grad(set_to_none=True)
    fixed = model._fixed
    model.loss(b1).backward()  # later batches: fixed graph, gradient only into the embeddings
    assert model._fixed is fixed and model.proj["image"].weight.grad is None and model.modal_weight.grad is None
    assert model.embedding.grad is not None
    # the fixed graph is the one the first batch built
    with torch.no_grad():
        ref = _dense(model.item_graph(), tiny.n_items)
    assert torch.allclose(fixed.a.to_dense(), ref, atol=1e-6)
    model.on_epoch_start(1)
    assert model._fixed is None


def test_evaluation_rebuilds_graph_from_current_parameters(tiny):
    torch.manual_seed(0)
    model = build_model("lattice", tiny)
    model.train()
    model.on_epoch_start(0)
    b = next(iter(PairwiseSampler(tiny.train, 64, np.random.default_rng(0))))
    model.loss(b)
    with torch.no_grad():
        model.proj["image"].weight.mul_(-3.0)  # parameters move after the graph was built
    with model.scoring():
        _, i = model.embeddings()
        from prismrec.graphs import propagate
        e = propagate(model.adj, model.embedding, model.config.num_ui_layers)
        h = _dense_reference(model) @ model.item_emb
        ref_i = e[model.n_users:] + torch.nn.functional.normalize(h, dim=1)
    assert torch.allclose(i, ref_i, atol=1e-5)


def test_backbone_adjacency_is_random_walk_with_self_loops(tiny):
    """The backbone graph is the random-walk normalised D^{-1}(A + I) of the bipartite train graph."""
    model = build_model("lattice", tiny)
    n, m = tiny.n_users, tiny.n_items
    r = torch.from_numpy(tiny.train.toarray()).float()
    a = torch.zeros(n + m, n + m)
    a[:n, n:], a[n:, :n] = r, r.T
    a = a + torch.eye(n + m)
    assert torch.allclose(model.adj.a.to_dense(), a / a.sum(1, keepdim=True), atol=1e-6)


def test_loss_decreases_on_synthetic_data(tiny):
    torch.manual_seed(0)
    model = build_model("lattice", tiny)
    losses = epoch_losses(model, tiny)
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("fixture", ["tiny_one_modality", "tiny_three_modalities"])
def test_any_number_of_modalities_score_shape_and_masking(fixture, request):
    ds = request.getfixturevalue(fixture)
    rec = Recommender("lattice", epochs=2, batch_size=256, eval_ks=(10, 20), checkpoint=False).fit(
        ds, show_progress=False)
    assert rec.train_config.learning_rate == 5e-4  # LATTICE's training default
    users = np.array([0, 5, 9])
    s = rec.score(users)
    assert s.shape == (3, ds.n_items) and np.isfinite(s).all()
    ids, _ = rec.recommend(ds.user_ids[5], k=10)
    assert not set(ds.item_ids[ds.train[5].indices].tolist()) & set(ids.tolist())
    assert rec.model.modal_weight.shape == (len(ds.features),)
