"""Vectorised retrieval metrics against a brute-force per-video reference."""
from __future__ import annotations

import numpy as np
import torch

from prismrec.tasks.music import evaluate_model
from prismrec.tasks.music.metrics import block_ranks, metrics_from_ranks, similarity, true_ranks
from prismrec.tasks.music.model import build
from prismrec.tasks.music.train import tensors


def _brute_metrics(scores: np.ndarray, truth: np.ndarray, ks) -> dict:
    ranks = []
    for s, t in zip(scores, truth):
        order = np.argsort(-s, kind="stable")          # ties: lower track index first
        ranks.append(int(np.flatnonzero(order == t)[0]) + 1)
    out = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean([r <= k for r in ranks]))
        out[f"ndcg@{k}"] = float(np.mean([1 / np.log2(r + 1) if r <= k else 0.0 for r in ranks]))
    out["mrr"] = float(np.mean([1 / r for r in ranks]))
    out["medr"] = float(np.median(ranks))
    out["meanr"] = float(np.mean(ranks))
    return out, np.array(ranks)


def test_ranks_and_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(97, 40)).astype(np.float32)   # many ties
    truth = rng.integers(0, 40, size=97)
    ks = (1, 5, 10, 20, 50)
    want, want_ranks = _brute_metrics(scores, truth, ks)
    ranks = true_ranks(torch.from_numpy(scores), torch.from_numpy(truth)).numpy()
    np.testing.assert_array_equal(ranks, want_ranks)
    got = metrics_from_ranks(ranks, ks)
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) < 1e-12, key
    blocked = block_ranks(lambda idx: torch.from_numpy(scores[idx]), np.arange(97), truth, block_size=10)
    np.testing.assert_array_equal(blocked, want_ranks)


def test_constant_scorer_is_not_rewarded():
    ranks = true_ranks(torch.zeros(3, 10), torch.tensor([0, 5, 9]))
    assert ranks.tolist() == [1, 6, 10]


def test_similarities():
    v, t = torch.randn(4, 3), torch.randn(5, 3)
    torch.testing.assert_close(similarity(v, t, "neg_sqdist"), -torch.cdist(v, t).pow(2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(similarity(v, t, "cosine"), torch.nn.functional.cosine_similarity(
        v[:, None], t[None], dim=-1))


def test_evaluate_model_matches_brute_force(music_small):
    torch.manual_seed(0)
    model = build("cmvae", {"latent_dim": 8, "hidden": "32"}, {m: f.shape[1] for m, f in
                  music_small.video_features.items()}, {m: f.shape[1] for m, f in
                  music_small.track_features.items()}, music_small.n_tracks)
    model.setup(music_small)
    model.eval()
    res = evaluate_model(model, music_small, ("test",), block=7)["test"]
    vf, tf = tensors(music_small.video_features), tensors(music_small.track_features)
    test = music_small.videos("test")
    with torch.no_grad():
        v = model.embed_videos({m: f[test] for m, f in vf.items()})
        t = model.embed_tracks(tf)
    scores = -((v[:, None, :] - t[None]) ** 2).sum(-1).numpy()
    want, _ = _brute_metrics(scores, music_small.video_track[test], (1, 5, 10, 20, 50))
    for key in want:
        assert abs(res[key] - want[key]) < 1e-9, key
