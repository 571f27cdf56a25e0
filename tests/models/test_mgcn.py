"""MGCN: loss goes down, scores are well formed, any number of modalities, and the fast paths
(fuser on the batch's rows only, the feature-table projection) match a plain full-graph reference."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec import Recommender
from prismrec.data.sampler import PairwiseSampler
from prismrec.models import build_model
from prismrec.models.mgcn import MGCN
from tests.models.helpers import assert_loss_and_grads_match, epoch_losses


def _batches(ds, size=64, seed=0):
    return list(PairwiseSampler(ds.train, size, np.random.default_rng(seed)))


def _dense_forward(model: MGCN):
    """Dense reference of the paper's equations, every user and item at once (MGCN, Eq. 2-11).

    Returns ``(E, E_side, E_id)`` over all ``N + I`` rows: ``E_id`` is the LightGCN layer mean on the
    user-item graph; per modality m the purified item view ``H_m = S_m^L (E_id^0_items ⊙ σ-gate(W_m X_m))``
    and the user view ``R H_m``; the fuser weighs the views by a softmax over modalities of a shared
    query, ``E_side = (Σ_m g_m(E_id) ⊙ (H_m - H_common) + H_common) / (M + 1)``, ``E = E_id + E_side``.
    """
    n = model.n_users
    graph, ratings = model.adj.a.to_dense(), model.user_item.a.to_dense()
    table = model.embedding                                            # [N + I, d] layer-0 embeddings
    hops = [table]
    for _ in range(model.config.num_ui_layers):
        hops.append(graph @ hops[-1])
    e_id = sum(hops) / len(hops)
    views = []                                                         # [N + I, d] per modality
    for m in model.modalities:
        purified = table[n:] * model.purifier[m](model.proj[m](model.features(m)))
        for _ in range(model.config.num_ii_layers):
            purified = model.item_graphs[m].a.to_dense() @ purified
        views.append(torch.vstack([ratings @ purified, purified]))
    scores = torch.hstack([model.query(v) for v in views])             # [N + I, M]
    weights = torch.softmax(scores, dim=1)
    common = sum(weights[:, k:k + 1] * v for k, v in enumerate(views))
    gated = [model.prefer[m](e_id) * (v - common) for m, v in zip(model.modalities, views)]
    side = (sum(gated) + common) / (len(views) + 1)
    return e_id + side, side, e_id


def _reference_loss(model: MGCN, batch) -> torch.Tensor:
    """The paper's objective from the dense forward: BPR + λ_E · ½‖batch rows‖² / B + λ_C · InfoNCE."""
    cfg, n = model.config, model.n_users
    e, side, e_id = _dense_forward(model)
    u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
    bpr = F.softplus(-((u * p).sum(1) - (u * q).sum(1))).mean()
    l2 = 0.5 * sum(t.square().sum() for t in (u, p, q)) / cfg.reg_batch_size

    def contrast(x, y):  # InfoNCE: row i of x should pick row i of y among all rows of y
        logits = F.normalize(x, dim=1) @ F.normalize(y, dim=1).T / cfg.temperature
        return F.cross_entropy(logits, torch.arange(len(x)))
    rows_i, rows_u = n + batch.pos_items, batch.users
    cl = contrast(side[rows_i], e_id[rows_i]) + contrast(side[rows_u], e_id[rows_u])
    return bpr + cfg.reg_weight * l2 + cfg.cl_weight * cl


def test_batch_rows_loss_and_gradients_match_full_reference(tiny):
    from prismrec.models.mgcn import MGCNConfig
    torch.manual_seed(0)
    model = build_model("mgcn", tiny, MGCNConfig(cl_precision="float32"))  # plain fp32 arithmetic
    assert_loss_and_grads_match(model, _batches(tiny)[0], _reference_loss)
    with torch.no_grad():  # and the scoring path
        u, i = model.embeddings()
        e, _, _ = _dense_forward(model)
        assert torch.allclose(torch.cat([u, i]), e, atol=1e-5)


def test_feature_table_gradient_buffer_is_reused_and_accumulates(tiny):
    torch.manual_seed(0)
    model = build_model("mgcn", tiny)
    batch = _batches(tiny)[0]
    model.loss(batch).backward()
    first = model.feat_image.grad.clone()
    buf = model.feat_image.grad
    model.loss(batch).backward()  # accumulates, as autograd does
    assert torch.allclose(model.feat_image.grad, 2 * first, rtol=1e-5, atol=1e-9)
    model.zero_grad(set_to_none=True)
    model.loss(batch).backward()
    assert model.feat_image.grad.data_ptr() == buf.data_ptr()  # no fresh [n_items, d_m] allocation
    assert torch.allclose(model.feat_image.grad, first, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_table_update_in_backward_equals_optimizer_step(tiny, monkeypatch, precision):
    """The feature tables' Adam update applied inside backward (row blocks, the trainer's fast
    path) gives the parameters and optimiser state that ``optimizer.step()`` gives."""
    from prismrec.models import layers, mgcn
    monkeypatch.setattr(layers, "WIDE", 1)          # bf16 path on the narrow tiny features
    monkeypatch.setattr(layers, "_BLOCK_ROWS", 7)   # several blocks and a ragged last one
    batches = _batches(tiny)[:4]
    runs = []
    for in_backward in (False, True):
        torch.manual_seed(0)
        model = MGCN(tiny, mgcn.MGCNConfig(feature_precision=precision))
        opt = model.configure_optimizer(1e-2, 1e-4)
        model.step_in_backward(opt if in_backward else None)
        for b in batches:
            opt.zero_grad(set_to_none=True)
            model.loss(b).backward()
            assert (model.feat_image.grad is None) == in_backward
            opt.step()
        runs.append((model, opt))
    (ref, ref_opt), (fast, fast_opt) = runs
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), name
    for table in ("feat_image", "feat_text"):
        sa, sb = ref_opt.state[getattr(ref, table)], fast_opt.state[getattr(fast, table)]
        assert sa["step"].item() == sb["step"].item() == len(batches)
        assert torch.allclose(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-5, atol=1e-12)
    if precision == "bfloat16":  # the bf16 copy the next forward reads is the updated table
        assert torch.equal(fast._grad_buffers["image.x16"], fast.feat_image.detach().bfloat16())
    # a table written after the update (best-state restore) is copied again, not read stale
    fast.load_state_dict(ref.state_dict())
    with torch.no_grad():
        assert torch.equal(torch.cat(fast.embeddings()), torch.cat(ref.embeddings()))


def test_table_update_in_backward_only_for_plain_adam(tiny):
    from prismrec.models.base import adam_state
    torch.manual_seed(0)
    model = build_model("mgcn", tiny)
    x = model.feat_image
    assert adam_state(torch.optim.SGD(model.parameters(), lr=0.1), x) is None
    assert adam_state(torch.optim.Adam(model.parameters(), amsgrad=True), x) is None
    assert adam_state(torch.optim.Adam([model.embedding]), x) is None
    group, state = adam_state(torch.optim.Adam(model.parameters()), x)
    assert state["exp_avg"].shape == x.shape and state["step"].item() == 0


def test_loss_decreases_on_synthetic_data(tiny):
    torch.manual_seed(0)
    model = build_model("mgcn", tiny)
    losses = epoch_losses(model, tiny)
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("fixture", ["tiny_one_modality", "tiny", "tiny_three_modalities"])
def test_any_number_of_modalities_score_shape_and_masking(fixture, request):
    ds = request.getfixturevalue(fixture)
    rec = Recommender("mgcn", epochs=2, batch_size=256, eval_ks=(10, 20), checkpoint=False).fit(ds, show_progress=False)
    model = rec.model
    assert len(model.proj) == len(ds.features) and len(model.item_graphs) == len(ds.features)
    users = torch.tensor([0, 3, 3, 17])
    x = torch.randn(ds.n_items, 5)
    assert torch.allclose(model.user_item_rows(users, x), (model.user_item @ x)[users], atol=1e-6)
    users = np.array([0, 5, 9])
    s = rec.score(users)
    assert s.shape == (3, ds.n_items) and np.isfinite(s).all()
    with model.scoring():  # dot-product model: score is u·i of the final embeddings
        u, i = model.embeddings()
        assert torch.allclose(model.score(torch.as_tensor(users)), u[users] @ i.T, atol=1e-5)
    ids, _ = rec.recommend(ds.user_ids[5], k=10)
    assert not set(ds.item_ids[ds.train[5].indices].tolist()) & set(ids.tolist())
    assert np.isfinite(rec.metrics["valid"]["recall@20"])


def test_raw_feature_tables_are_trained_and_read_through_features(tiny):
    torch.manual_seed(0)

    class Doubled(MGCN):  # what a plug-in does: refine features() without knowing attribute names
        calls = 0

        def features(self, modality, items=None):
            type(self).calls += 1
            return 2 * super().features(modality, items)

    model = Doubled(tiny)
    assert isinstance(model.feat_image, torch.nn.Parameter)
    before = model.feat_image.detach().clone()
    opt = model.configure_optimizer(1e-3, 0.0)
    b = _batches(tiny)[0]
    model.loss(b).backward()
    opt.step()
    assert Doubled.calls >= 2 and not torch.equal(before, model.feat_image.detach())
    assert model.behaviour_embedding(torch.tensor([1, 2])).shape == (2, model.config.embedding_dim)


def test_lr_factor_and_config_validation():
    from prismrec.models.mgcn import MGCNConfig
    model_cls = MGCN
    assert model_cls.lr_factor(type("M", (), {"config": MGCNConfig()})(), 50) == pytest.approx(0.96)
    with pytest.raises(ValueError, match="knn_k"):
        MGCNConfig(knn_k=0)


def test_bfloat16_products_stay_close_to_float32(tiny, monkeypatch):
    from prismrec.models import layers, mgcn
    monkeypatch.setattr(layers, "WIDE", 1)  # the tiny features are narrow; force the bf16 path
    batch = _batches(tiny)[0]
    out = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = MGCN(tiny, mgcn.MGCNConfig(feature_precision=precision))
        assert all(model.bf16.values()) == (precision == "bfloat16")
        loss = model.loss(batch)
        loss.backward()
        out[precision] = loss.item(), model.feat_image.grad.clone(), model.proj["image"].weight.grad.clone()
    assert out["bfloat16"][0] == pytest.approx(out["float32"][0], rel=1e-3)
    for a, b in zip(out["float32"][1:], out["bfloat16"][1:]):
        assert (a - b).norm() / a.norm() < 2e-2


def test_info_nce_matches_cross_entropy_form():
    from prismrec.models.layers import info_nce, info_nce_rows
    torch.manual_seed(0)
    for tau in (0.2, 0.01):
        a = torch.randn(50, 8, dtype=torch.double, requires_grad=True)
        b = torch.randn(50, 8, dtype=torch.double, requires_grad=True)
        an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
        ref = F.cross_entropy(an @ bn.T / tau, torch.arange(50))
        assert torch.allclose(info_nce(a, b, tau), ref)
        assert torch.autograd.gradcheck(lambda x, y, t=tau: info_nce(x, y, t), (a, b))
        index = torch.randint(0, 50, (120,))  # duplicated rows, as a batch's popular items
        an, bn = F.normalize(a[index], dim=1), F.normalize(b[index], dim=1)
        ref = F.cross_entropy(an @ bn.T / tau, torch.arange(120))
        assert torch.allclose(info_nce_rows(a, b, index, tau), ref)
        assert torch.autograd.gradcheck(lambda x, y, t=tau, i=index: info_nce_rows(x, y, i, t), (a, b))


@pytest.mark.parametrize("name, bound", [("info_nce_rows", 2e-2), ("info_nce_all", 3e-2)])
def test_info_nce_bfloat16_products_stay_close_to_float32(name, bound):
    from prismrec.models import layers
    contrast = getattr(layers, name)
    torch.manual_seed(0)
    a = torch.randn(300, 64, requires_grad=True)
    b = torch.randn(300, 64, requires_grad=True)
    index = torch.randint(0, 300, (500,))
    out = {}
    for precision in (torch.float32, torch.bfloat16):
        a.grad = b.grad = None
        loss = contrast(a, b, index, 0.2, precision)
        loss.backward()
        out[precision] = loss.item(), a.grad.clone(), b.grad.clone()
    lo, hi = out[torch.bfloat16], out[torch.float32]
    assert lo[0] == pytest.approx(hi[0], rel=2e-3)
    for x, y in zip(lo[1:], hi[1:]):
        assert 0 < (x - y).norm() / y.norm() < bound  # close, and really computed in bf16
