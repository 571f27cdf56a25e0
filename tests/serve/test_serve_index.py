"""Item search: exact against brute force, faiss (HNSW, IVF) against exact, registered items, exclusion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from prismrec.serve.index import ExactSearcher, FaissSearcher, ItemIndex, make_searcher, normalize
from prismrec.serve.settings import ServeSettings
from prismrec.serve.state import ServingState


def low_rank(n, d=32, rank=8, seed=0):
    """Vectors like a trained model's: low-rank structure plus noise, varied norms."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=g)
    return torch.randn(n, rank, generator=g) @ basis + 0.3 * torch.randn(n, d, generator=g)


@pytest.fixture(scope="module")
def items():
    return low_rank(4000)


@pytest.fixture(scope="module")
def queries():
    return low_rank(50, seed=1)


def brute_topk(q, items, k, exclude=()):
    s = (items @ q).numpy().astype(np.float64)
    s[list(exclude)] = -np.inf
    return np.argsort(-s, kind="stable")[:k]


def test_exact_matches_brute_force(items, queries):
    s, i = ExactSearcher(items).search(queries, 10)
    for j, q in enumerate(queries):
        assert set(i[j].tolist()) == set(brute_topk(q, items, 10).tolist())
    assert (s[:, :-1] >= s[:, 1:]).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_recall(items, queries, kind):
    ann = FaissSearcher(items, kind, nlist=64, nprobe=16, ef_search=64)
    _, got = ann.search(queries, 10)
    _, exact = ExactSearcher(items).search(queries, 10)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(got, exact)])
    assert recall >= 0.95, recall


def test_make_searcher_threshold(items):
    assert isinstance(make_searcher(items, threshold=len(items) + 1), ExactSearcher)
    assert isinstance(make_searcher(items, threshold=len(items), nlist=16, kind="ivf"), FaissSearcher)
    with pytest.raises(ValueError, match="unknown index kind"):
        FaissSearcher(items[:100], "lsh")


@pytest.mark.parametrize("exact", [True, False])
def test_item_index_exclusion_and_registered_items(items, queries, exact):
    searcher = ExactSearcher(items) if exact else FaissSearcher(items, "hnsw", ef_search=128)
    index = ItemIndex(items, searcher)
    q = queries[:1]
    top, _ = index.topk(q, 10)
    excluded = top[:4]
    got, scores = index.topk(q, 10, excluded)
    assert not set(excluded) & set(got.tolist()) and len(got) == 10
    assert list(got[:6]) == list(top[4:])
    # a registered item pointing along the query is found first, by the new index only
    new = index.with_items(5 * q / q.norm() * items.norm(dim=1).max())
    assert new.n_items == len(items) + 1 and index.n_items == len(items)
    got, _ = new.topk(q, 10)
    assert got[0] == len(items)
    got, _ = new.topk(q, 10, np.array([len(items)]))
    assert len(items) not in got
    assert torch.equal(new.vectors(np.array([len(items)])), new.extra)


def test_ann_falls_back_to_exact_when_short(items, queries):
    """Excluding most of the catalogue leaves the graph search short: the answer is still exact."""
    index = ItemIndex(items, FaissSearcher(items, "hnsw", ef_search=16))
    q = queries[:1]
    exclude = np.arange(0, len(items) - 5)
    got, _ = index.topk(q, 10, exclude)
    assert sorted(got.tolist()) == list(range(len(items) - 5, len(items)))


def test_normalize():
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(normalize(v), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


def test_state_with_faiss_index_agrees_with_exact(vbpr_bundle, vbpr_state):
    ann = ServingState.load(ServeSettings(bundle=vbpr_bundle, ann_threshold=50))
    assert ann.index.kind == "hnsw" and vbpr_state.index.kind == "exact"
    overlap = [len(set(ann.recommend(u, 10)[0]) & set(vbpr_state.recommend(u, 10)[0])) / 10 for u in range(0, 300, 10)]
    assert np.mean(overlap) >= 0.95
    assert ann.similar(3, 5)[0] == vbpr_state.similar(3, 5)[0]
