"""LGMRec: the fast path (one product for the projection and the hyperedge logits, the distinct-row
contrast with its analytic backward, bf16 products) matches a dense reference of the paper's
equations; the hypergraph helpers; it learns."""
import pytest
import torch
import torch.nn.functional as F

from prismrec.graphs import hypergraph_conv
from prismrec.models import build_model
from prismrec.models.layers import info_nce_all
from prismrec.models.lgmrec import LGMRecConfig
from tests.models.helpers import first_batch, assert_loss_and_grads_match, check_config_names_field, check_learns_beyond_popularity

F32 = LGMRecConfig(feature_precision="float32", cl_precision="float32", cl_weight=0.1, reg_weight=1e-3)


def _batch(ds, size=64, seed=0):
    return first_batch(ds, size, seed)


def _dense(model):
    """Dense reference of the paper's equations, all users and items at once, with noise-free hyperedge
    memberships (eval mode: no Gumbel noise, no dropout).

    Returns ``(E, [G_m])``: ``E = E_local + α · ℓ2(Σ_m G_m)`` over the ``N + I`` rows, where
    ``E_local = mean_l Aˡ E⁰ + Σ_m ℓ2(A^L [R̄ X_m W_m ; X_m W_m])`` (R̄: R with rows divided by the degree)
    and the global view of modality m is ``G_m = [H_u Z ; H_i Z]`` with item memberships
    ``H_i = softmax(X_m V_m / τ)``, user memberships ``H_u = softmax(R X_m V_m / τ)`` and hyperedge
    embeddings ``Z = H_iᵀ E_items``.
    """
    cfg, n = model.config, model.n_users
    graph, ratings = model.adj.a.to_dense(), model.user_item.a.to_dense()
    hops = [model.embedding]
    for _ in range(cfg.num_ui_layers):
        hops.append(graph @ hops[-1])
    e_id = sum(hops) / len(hops)                                       # [N + I, d]
    mean_rows = ratings / (ratings.sum(dim=1, keepdim=True) + 1e-7)    # R̄
    e_local, global_views = e_id, []
    for m in model.modalities:
        raw = model.features(m)
        item_part = raw @ model.trans[m]
        view = torch.vstack([mean_rows @ item_part, item_part])
        for _ in range(cfg.num_mm_layers):
            view = graph @ view
        e_local = e_local + F.normalize(view, dim=1)
        logits = raw @ model.hyper[m]                                  # [I, hyper_num]
        member_i = torch.softmax(logits / cfg.temperature, dim=1)
        member_u = torch.softmax(ratings @ logits / cfg.temperature, dim=1)
        edges = member_i.T @ e_id[n:]                                  # Z [hyper_num, d]
        global_views.append(torch.vstack([member_u @ edges, member_i @ edges]))
    return e_local + cfg.alpha * F.normalize(sum(global_views), dim=1), global_views


def _ssl(a, b, all_b, tau):
    """Σ over rows of -log softmax: row i of ``a`` against every row of ``all_b``, the target being ``b[i]``
    (``b`` is a selection of ``all_b``'s rows)."""
    a, b, all_b = F.normalize(a, dim=1), F.normalize(b, dim=1), F.normalize(all_b, dim=1)
    return (torch.logsumexp(a @ all_b.T / tau, dim=1) - (a * b).sum(dim=1) / tau).sum()


def _dense_loss(model, batch):
    """BPR + λ_C · InfoNCE between the first two modalities' global views (batch users against all users,
    positive items against all items) + λ_E · (‖u‖ + ‖p‖ + ‖n‖) / B."""
    cfg, n = model.config, model.n_users
    e, (first, second, *_) = _dense(model)
    u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
    bpr = F.softplus(-((u * p).sum(dim=1) - (u * q).sum(dim=1))).mean()
    users_first, users_second = first[:n], second[:n]
    items_first, items_second = first[n:], second[n:]
    cl = (_ssl(users_first[batch.users], users_second[batch.users], users_second, cfg.temperature)
          + _ssl(items_first[batch.pos_items], items_second[batch.pos_items], items_second, cfg.temperature))
    reg = (u.norm() + p.norm() + q.norm()) / len(batch.users)
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
        check_config_names_field(LGMRecConfig, field, value)


def test_learns_beyond_popularity(tiny, tmp_path):
    check_learns_beyond_popularity("lgmrec", tiny, tmp_path)


def test_info_nce_all_workspace_reuses_buffers_and_guards_them():
    from prismrec.models.layers import Workspace, info_nce_all
    torch.manual_seed(0)
    a = torch.randn(40, 8, requires_grad=True)
    b = torch.randn(60, 8, requires_grad=True)
    work = Workspace()
    for index in (torch.randint(0, 40, (30,)), torch.randint(0, 40, (12,)), torch.randint(0, 40, (35,))):
        got = []
        for ws in (None, work):   # the same bits with and without the buffer; distinct rows vary per call
            a.grad = b.grad = None
            loss = info_nce_all(a, b, index, 0.2, workspace=ws, key="users")
            loss.backward()
            got.append((loss.detach(), a.grad.clone(), b.grad.clone()))
        for x, y in zip(*got):
            assert torch.equal(x, y)
    assert len(work._buffers) == 1                                # one buffer, grown to the largest call
    # the buffer overwritten before the first graph's backward: autograd refuses, never a wrong gradient
    first = info_nce_all(a, b, torch.arange(20), 0.2, workspace=work, key="users")
    info_nce_all(a, b, torch.arange(20), 0.5, workspace=work, key="users")
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()
