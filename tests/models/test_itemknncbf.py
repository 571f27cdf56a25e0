"""ItemKNNCBF: the sparse scores equal the dense formula, the modality parts sum to the score,
it needs no training, beats most-popular on planted content, and saves, loads and serves."""
import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.errors import PrismrecError
from prismrec.graphs import knn_topk
from prismrec.models import build_model
from prismrec.models.itemknncbf import ItemKNNCBF, ItemKNNCBFConfig
from tests.models.helpers import check_config_names_field, check_serve_round_trip, check_tunable


def _dense_scores(ds, k: int, shrink: float) -> np.ndarray:
    """``R S`` written out densely: S keeps each row's k largest shrunk cosines."""
    x = np.concatenate([np.asarray(ds.features[m], np.float64) for m in ds.features], axis=1)
    norms = np.linalg.norm(x, axis=1)
    sim = (x @ x.T) / (np.outer(norms, norms) + shrink)
    s = np.zeros_like(sim)
    top = np.argsort(-sim, axis=1)[:, :k]
    rows = np.arange(len(x))[:, None]
    s[rows, top] = sim[rows, top]
    r = (ds.train.toarray() > 0).astype(np.float64)
    return r @ s


@pytest.mark.parametrize("shrink", [0.0, 10.0])
def test_scores_equal_the_dense_formula(tiny, shrink):
    model = build_model("itemknncbf", tiny, ItemKNNCBFConfig(knn_k=7, shrink=shrink))
    users = torch.arange(tiny.n_users)
    with model.scoring():
        got = model.score(users).numpy()
        buf = torch.empty(5, tiny.n_items)
        assert model.score(users[:5], out=buf) is buf
    np.testing.assert_allclose(got, _dense_scores(tiny, 7, shrink), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(buf.numpy(), got[:5])


def test_shrunk_knn_with_zero_shrink_is_the_cosine_knn():
    torch.manual_seed(0)
    x = torch.randn(50, 6)
    v0, c0 = knn_topk(x, 5)
    v1, c1 = knn_topk(x, 5, shrink=1e-30)  # the shrink path, with a negligible damping
    assert torch.equal(c0, c1)
    torch.testing.assert_close(v0, v1)
    v2, c2 = knn_topk(x * 0.01, 5, shrink=1.0)  # damping changes the order when norms are small
    n = (x * 0.01).norm(dim=1)
    want = (x * 0.01) @ (x * 0.01).T / (torch.outer(n, n) + 1.0)
    torch.testing.assert_close(v2, want.topk(5, dim=1).values)


def test_modality_parts_sum_to_the_score(tiny):
    model = build_model("itemknncbf", tiny)
    users = torch.arange(0, 40).repeat_interleave(3)
    items = torch.randint(0, tiny.n_items, (len(users),), generator=torch.Generator().manual_seed(1))
    parts = model.modality_contributions(users, items)
    assert set(parts) == set(tiny.features)
    with model.scoring():
        scores = model.score(users)[torch.arange(len(users)), items]
    torch.testing.assert_close(sum(parts.values()), scores, atol=1e-5, rtol=1e-4)
    assert (scores != 0).sum() > 10  # the check covers pairs that have a content path


def test_no_training_and_beats_most_popular_on_planted_content(tiny):
    rec = Recommender("itemknncbf", checkpoint=False).fit(tiny, show_progress=False)
    assert rec.metrics["epochs"] == 0 and [h["train_seconds"] for h in rec.result.history] == [0.0]
    pop = Recommender("pop", checkpoint=False).fit(tiny, show_progress=False)
    assert rec.metrics["test"]["recall@20"] > pop.metrics["test"]["recall@20"] + 0.1


def test_config_and_tune_ranges():
    check_config_names_field(ItemKNNCBFConfig, "knn_k", 0, ItemKNNCBF)
    check_config_names_field(ItemKNNCBFConfig, "shrink", -1.0, ItemKNNCBF)
    check_tunable("itemknncbf", {"knn_k", "shrink"})


def test_needs_features():
    from prismrec import make_synthetic
    ds = make_synthetic(60, 40, seed=0, modalities={})
    with pytest.raises(PrismrecError, match="needs at least 1 modality"):
        build_model("itemknncbf", ds)


def test_serve_round_trip(tiny, tmp_path):
    check_serve_round_trip("itemknncbf", tiny, tmp_path)
