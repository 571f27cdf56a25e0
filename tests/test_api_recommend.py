"""Recommender.recommend for many users: the evaluation's blocked (and, for dot-product models,
norm-pruned) ranking gives the lists a plain full scoring gives (issue 23, item 11)."""
import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.errors import UnknownNameError


def reference(rec, users, k, masks=(), items=None):
    """Score everything, mask, sort: the simple implementation."""
    uidx = rec.dataset.user_map.index(users)
    with rec.model.scoring():
        s = rec.model.score(torch.from_numpy(np.asarray(uidx))).clone().numpy().astype(np.float64)
    for m in masks:
        s[m[uidx].toarray() > 0] = -np.inf
    if items is not None:
        keep = np.zeros(s.shape[1], bool)
        keep[rec.dataset.item_map.index(items)] = True
        s[:, ~keep] = -np.inf
    return s


@pytest.fixture(scope="module", params=["vbpr", "lightgcn", "ld4mrec"])  # ld4mrec: not a dot product
def fitted(request, tiny):
    return Recommender(request.param, epochs=2, batch_size=256).fit(tiny, show_progress=False)


def _check(rec, users, ids, vals, ref, k):
    internal = rec.dataset.item_map.index(ids.reshape(-1)).reshape(ids.shape)
    got = np.take_along_axis(ref, internal, axis=1)
    assert np.isfinite(got).all()  # nothing masked is returned
    np.testing.assert_allclose(vals, got, rtol=1e-5, atol=1e-5)  # the scores returned are the model's
    kth = -np.sort(-ref, axis=1)[:, k - 1]
    assert (vals[:, -1] >= kth - 1e-5).all()  # no better item was left out
    assert (np.diff(vals, axis=1) <= 1e-6).all()


def test_all_users_match_a_full_scoring(fitted, tiny):
    users = tiny.user_ids
    ids, vals = fitted.recommend(users, k=15)
    assert ids.shape == (tiny.n_users, 15)
    _check(fitted, users, ids, vals, reference(fitted, users, 15, [tiny.train]), 15)


def test_exclude_and_candidates(fitted, tiny):
    users = tiny.user_ids[:40]
    extra = (tiny.valid + tiny.test).tocsr()
    ids, vals = fitted.recommend(users, k=10, exclude=extra)
    _check(fitted, users, ids, vals, reference(fitted, users, 10, [tiny.train, extra]), 10)
    items = tiny.item_ids[::3]
    ids, vals = fitted.recommend(users, k=5, items=items)
    assert set(ids.reshape(-1).tolist()) <= set(items.tolist())
    _check(fitted, users, ids, vals, reference(fitted, users, 5, [tiny.train], items=items), 5)
    ids, _ = fitted.recommend(users, k=10, exclude_seen=False)
    _check(fitted, users, ids, _, reference(fitted, users, 10), 10)


def test_one_user_and_short_lists(fitted, tiny):
    ids, vals = fitted.recommend(tiny.user_ids[3], k=5)
    assert ids.shape == vals.shape == (5,)
    assert not set(tiny.train[3].indices.tolist()) & set(fitted.dataset.item_map.index(ids).tolist())
    ids, _ = fitted.recommend(tiny.user_ids[:4], k=10_000)  # more than the candidates: cut to the shortest
    assert ids.shape[1] == tiny.n_items - np.diff(tiny.train.indptr)[:4].max()


def test_unknown_user_names_examples(fitted):
    with pytest.raises(UnknownNameError, match=r"unknown user 'nobody'.*e\.g\. 0, 1, 2"):
        fitted.recommend("nobody")
