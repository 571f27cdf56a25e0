"""Metrics: hand-computed cases and a slow per-user reference on random data (issue 3)."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from prismrec.evaluation import evaluate_splits, metrics_from_hits, topk_items


def test_hand_computed_case():
    # user 0: relevant {a, b}; ranked hits at ranks 1 and 3 (of 3). user 1: 1 relevant item, no hit.
    hit = np.array([[1, 0, 1], [0, 0, 0]], dtype=bool)
    m = metrics_from_hits(hit, np.array([2, 1]), ks=(1, 3))
    assert m["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@3"] == pytest.approx((2 / 2 + 0) / 2)
    assert m["precision@3"] == pytest.approx((2 / 3) / 2)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx(dcg / idcg / 2)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 2) / 2)
    assert m["hit@1"] == pytest.approx(0.5) and m["hit@3"] == pytest.approx(0.5)


def test_recall_divides_by_all_relevant_items():
    hit = np.ones((1, 2), dtype=bool)
    assert metrics_from_hits(hit, np.array([5]), ks=(2,))["recall@2"] == pytest.approx(2 / 5)


def _reference(scores, train, truth, ks):
    """Slow per-user loop: mask train items, sort, compute each metric from its definition."""
    out = {f"{m}@{k}": [] for m in ("recall", "ndcg", "precision", "map", "hit") for k in ks}
    for u in range(scores.shape[0]):
        gt = set(truth[u].indices.tolist())
        if not gt or train[u].nnz == 0:
            continue
        s = scores[u].copy()
        s[train[u].indices] = -np.inf
        order = np.argsort(-s, kind="stable")
        for k in ks:
            top = order[:k]
            hits = [1.0 if i in gt else 0.0 for i in top]
            out[f"recall@{k}"].append(sum(hits) / len(gt))
            out[f"precision@{k}"].append(sum(hits) / k)
            out[f"hit@{k}"].append(float(sum(hits) > 0))
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(gt), k)))
            out[f"ndcg@{k}"].append(dcg / idcg)
            ap, c = 0.0, 0
            for r, h in enumerate(hits):
                if h:
                    c += 1
                    ap += c / (r + 1)
            out[f"map@{k}"].append(ap / min(len(gt), k))
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.mark.parametrize("block", [7, 64, 1000])
def test_vectorised_matches_brute_force(block):
    rng = np.random.default_rng(0)
    n_users, n_items = 90, 60
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    dense = (rng.random((n_users, n_items)) < 0.15).astype(np.float32)
    dense[5] = 0  # a user without training items is skipped (MMRec filters cold-start users)
    train = sp.csr_matrix(dense)
    truth = sp.csr_matrix(((rng.random((n_users, n_items)) < 0.1) & (train.toarray() == 0)).astype(np.float32))
    ks = (1, 5, 10, 20)
    fast = evaluate_splits(lambda u: torch.from_numpy(scores[u.numpy()]), train, {"test": truth}, ks=ks,
                           block_size=block)["test"]
    ref = _reference(scores, train, truth, ks)
    for k, v in ref.items():
        assert fast[k] == pytest.approx(v, abs=1e-9), k


def test_valid_and_test_share_one_pass_and_extra_mask():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((30, 25)).astype(np.float32)
    train = sp.csr_matrix((rng.random((30, 25)) < 0.2).astype(np.float32))
    valid = sp.csr_matrix(((rng.random((30, 25)) < 0.1) & (train.toarray() == 0)).astype(np.float32))
    test = sp.csr_matrix(((rng.random((30, 25)) < 0.1) & (train.toarray() == 0) & (valid.toarray() == 0)).astype(np.float32))
    fn = lambda u: torch.from_numpy(scores[u.numpy()])  # noqa: E731
    both = evaluate_splits(fn, train, {"valid": valid, "test": test}, ks=(5,))
    alone = evaluate_splits(fn, train, {"test": test}, ks=(5,))
    assert both["test"] == alone["test"]
    masked = evaluate_splits(fn, train, {"test": test}, ks=(5,), extra_masks={"test": valid})
    ref = _reference(scores, train + valid, test, (5,))
    assert masked["test"]["recall@5"] == pytest.approx(ref["recall@5"])


def test_topk_never_returns_masked_items():
    scores = np.tile(np.arange(10, dtype=np.float32), (3, 1))
    mask = sp.csr_matrix(np.eye(3, 10, k=7, dtype=np.float32))
    top = topk_items(lambda u: torch.from_numpy(scores[u.numpy()]), np.arange(3), 3, mask)
    for u in range(3):
        assert 7 + u not in top[u]


def test_cutoffs_longer_than_the_catalogue():
    """Regression (found by the extraction end-to-end test): K=50 with fewer than 50 items."""
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((20, 12)).astype(np.float32)
    train = sp.csr_matrix((rng.random((20, 12)) < 0.2).astype(np.float32))
    truth = sp.csr_matrix(((rng.random((20, 12)) < 0.2) & (train.toarray() == 0)).astype(np.float32))
    res = evaluate_splits(lambda u: torch.from_numpy(scores[u.numpy()]), train, {"test": truth}, ks=(10, 50))["test"]
    ref = _reference(scores, train, truth, (10,))
    assert res["recall@10"] == pytest.approx(ref["recall@10"])
    assert res["recall@50"] == pytest.approx(1.0)  # every unmasked item is in a list of 50


def test_masked_items_are_never_listed_even_when_too_few_are_left():
    """A user with fewer than k unseen items gets -1 padding, not masked items at the tail."""
    scores = np.tile(np.arange(6, dtype=np.float32), (2, 1))
    mask = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32))
    top = topk_items(lambda u: torch.from_numpy(scores[u.numpy()]), np.arange(2), 4, mask)
    assert top[0].tolist() == [5, 4, -1, -1]
    assert top[1].tolist() == [5, 4, 3, 2]


def test_score_buffer_is_reused_and_results_unchanged():
    """A score function taking ``out`` gets one buffer for all blocks; metrics equal the plain path."""
    rng = np.random.default_rng(4)
    scores = torch.from_numpy(rng.standard_normal((50, 40)).astype(np.float32))
    train = sp.csr_matrix((rng.random((50, 40)) < 0.2).astype(np.float32))
    truth = sp.csr_matrix(((rng.random((50, 40)) < 0.1) & (train.toarray() == 0)).astype(np.float32))
    seen = []

    def with_out(u, out=None):
        seen.append(None if out is None else out.data_ptr())
        return torch.index_select(scores, 0, u, out=out) if out is not None else scores[u]

    a = evaluate_splits(with_out, train, {"test": truth}, ks=(5, 10), block_size=16)
    b = evaluate_splits(lambda u: scores[u], train, {"test": truth}, ks=(5, 10), block_size=16)
    assert a == b
    assert seen[0] is None and len(set(seen[1:])) == 1  # first block allocates, the rest reuse it



class _DotModel:
    """A dot-product scorer as :class:`Model` exposes one: ``score(u) = U[u] @ Iᵀ``."""

    def __init__(self, u, i):
        self.u, self.i = u, i

    def scoring_factors(self):
        return self.u, self.i

    def score(self, users, out=None):
        return torch.mm(self.u[users], self.i.T, out=out)


def _skewed(seed, n_users=300, n_items=2000, d=16):
    rng = np.random.default_rng(seed)
    u = torch.from_numpy(rng.standard_normal((n_users, d)).astype(np.float32))
    scale = 1.0 / (1.0 + rng.permutation(n_items)) ** 1.5  # a few items with large norms, as in graph models
    i = torch.from_numpy((rng.standard_normal((n_items, d)) * scale[:, None]).astype(np.float32))
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.02).astype(np.float32))
    extra = sp.csr_matrix(((rng.random((n_users, n_items)) < 0.01) & (train.toarray() == 0)).astype(np.float32))
    return u, i, train, extra


@pytest.mark.parametrize("skew", [True, False])
def test_norm_pruned_ranking_equals_a_full_scan(skew, monkeypatch):
    """A model's own dot-product ``score`` is ranked by norm-ordered segments, skipping what
    Cauchy-Schwarz rules out; the lists equal a full scan's. Without skew it gives up after the
    first block and scores the rest plainly."""
    u, i, train, extra = _skewed(0)
    if not skew:
        i = i / i.norm(dim=1, keepdim=True)
    model = _DotModel(u, i)
    plain = lambda users: model.score(users)  # noqa: E731  (not the model's method: a full scan)
    users = np.arange(u.shape[0])
    cells = []
    mm = torch.mm

    def counting_mm(a, b, **kw):
        cells.append(a.shape[0] * b.shape[1])
        return mm(a, b, **kw)

    for mask_extra in (None, extra):
        monkeypatch.setattr(torch, "mm", counting_mm)
        cells.clear()
        pruned = topk_items(model.score, users, 50, train, block_size=64, extra_mask=mask_extra)
        scored = sum(cells)
        monkeypatch.setattr(torch, "mm", mm)
        np.testing.assert_array_equal(pruned, topk_items(plain, users, 50, train, block_size=64,
                                                         extra_mask=mask_extra))
        full = u.shape[0] * i.shape[0]
        assert scored < full / 2 if skew else scored >= full
    truth = sp.csr_matrix(((np.random.default_rng(1).random(train.shape) < 0.02) & (train.toarray() == 0))
                          .astype(np.float32))
    assert evaluate_splits(model.score, train, {"test": truth}, ks=(10, 50)) == \
        evaluate_splits(plain, train, {"test": truth}, ks=(10, 50))


def test_norm_pruned_ranking_pads_short_lists():
    """Fewer unmasked items than k: -1 padding, masked items never listed (pruned path)."""
    u, i, _, _ = _skewed(2, n_users=20, n_items=40)
    dense = np.zeros((20, 40), dtype=np.float32)
    dense[0, :38] = 1
    model = _DotModel(u, i)
    top = topk_items(model.score, np.arange(20), 5, sp.csr_matrix(dense))
    assert set(top[0][:2].tolist()) == {38, 39} and (top[0][2:] == -1).all()
    np.testing.assert_array_equal(top, topk_items(lambda x: model.score(x), np.arange(20), 5, sp.csr_matrix(dense)))


def test_gpu_top_k_selects_what_the_cpu_heap_selects():
    """select_top_torch (the ranking of a model on a GPU, run here on CPU tensors) returns the same
    items as the faiss heap: masked (-inf) and NaN scores never, -1 where too few are left."""
    from prismrec.evaluation.ranking import _select_top, select_top_torch
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 300, generator=g)  # continuous: no ties, so both orders are the same
    scores[scores < -0.5] = -torch.inf
    scores[3, :] = -torch.inf
    scores[4, :295] = -torch.inf
    scores[4, 295:] = torch.arange(5.0)
    scores[5, 7] = float("nan")
    for k in (1, 10, 50):
        a, b = _select_top(scores.clone(), k), select_top_torch(scores.clone(), k)
        assert np.array_equal(a, b), k
    assert (select_top_torch(scores, 10)[3] == -1).all()
    assert select_top_torch(scores, 10)[4].tolist() == [299, 298, 297, 296, 295] + [-1] * 5
    assert 7 not in select_top_torch(scores, 300)[5]
    assert select_top_torch(scores[:, :0], 5).shape == (64, 5)


def test_evaluation_ranks_where_the_model_is(tiny):
    """A model on another device is ranked there: the score function gets user indices on the model's
    device (here a stand-in that records them) and the metrics equal the CPU ranking's."""
    from prismrec import Recommender
    from prismrec.evaluation import ranking
    rec = Recommender("bpr", epochs=1, batch_size=256).fit(tiny, show_progress=False)
    model, seen = rec.model, []
    with model.scoring():
        base = evaluate_splits(model.score, tiny.train, {"test": tiny.test})

        def score(users, out=None):
            seen.append(users.device)
            return model.score(users, out=out)
        score.__self__ = model  # what _score_device reads from a bound method
        orig = ranking._select_top
        ranking._select_top = lambda s, k: ranking.select_top_torch(s, k)
        try:
            other = evaluate_splits(score, tiny.train, {"test": tiny.test})
        finally:
            ranking._select_top = orig
    assert seen and all(d == model.device for d in seen)
    assert other == base
