"""benchmarks/cold_items.py: the held-out items leave every split, and the measurement can tell a
content signal from none (the synthetic set plants one)."""
import importlib.util
from pathlib import Path

import numpy as np

from prismrec import Recommender

_PATH = Path(__file__).parents[2] / "benchmarks" / "cold_items.py"
_spec = importlib.util.spec_from_file_location("cold_items", _PATH)
cold_items = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cold_items)


def test_held_out_items_leave_every_split(tiny):
    warm, cold = cold_items.hold_out_items(tiny, 0.2, seed=3)
    assert len(cold) == 24 and warm.n_items == tiny.n_items - 24
    assert not set(warm.item_ids) & set(tiny.item_ids[cold])
    kept = np.setdiff1d(np.arange(tiny.n_items), cold)
    for split in ("train", "valid", "test"):  # the warm items keep all their interactions
        assert warm.split(split).nnz == tiny.split(split)[:, kept].nnz
    for m, f in warm.features.items():
        assert np.array_equal(f, tiny.features[m][kept])
    users, truth = cold_items.cold_truth(tiny, warm, cold)
    every = (tiny.train + tiny.valid + tiny.test)[:, cold]
    assert truth.nnz == every[users].nnz and np.all(np.diff(truth.indptr) > 0)


def test_content_ranks_cold_items_above_chance_and_noise_does_not(tiny):
    warm, cold = cold_items.hold_out_items(tiny, 0.2, seed=3)
    users, truth = cold_items.cold_truth(tiny, warm, cold)
    feats = {m: f[cold] for m, f in tiny.features.items()}
    chance = 20 / len(cold)
    assert cold_items.rank_metrics(cold_items.centroid_scores(warm, users, feats), truth)["recall@20"] > chance + 0.1
    noise = np.random.default_rng(0).standard_normal((len(users), len(cold))).astype(np.float32)
    assert abs(cold_items.rank_metrics(noise, truth)["recall@20"] - chance) < 0.1
    rec = Recommender("vbpr", epochs=3, batch_size=256).fit(warm, show_progress=False)
    scores = cold_items.user_vectors(rec)[users] @ rec.embed_items(feats).T
    assert cold_items.rank_metrics(scores, truth)["recall@20"] > chance
