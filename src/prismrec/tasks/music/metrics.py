"""Retrieval metrics for one relevant track per video, by full ranking over the whole catalogue.

With a single relevant track the rank ``r`` of that track says everything:
Recall@K = Hit@K = ``[r <= K]``, NDCG@K = ``[r <= K] / log2(r + 1)``, MRR = ``1 / r``, MedR = the
median of ``r`` (lower is better). Ties are broken by track index (the lower index ranks first), the
order a stable descending sort gives, so a constant scorer is not rewarded.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

KS = (1, 5, 10, 20, 50)


def similarity(videos: torch.Tensor, tracks: torch.Tensor, kind: str) -> torch.Tensor:
    """Scores ``[N, T]`` between video and track embeddings.

    Args:
        kind: ``dot``; ``cosine``; ``neg_sqdist`` (``-‖v − t‖²``).
    """
    if kind == "dot":
        return videos @ tracks.T
    if kind == "cosine":
        return torch.nn.functional.normalize(videos, dim=1) @ torch.nn.functional.normalize(tracks, dim=1).T
    if kind == "neg_sqdist":
        return 2 * videos @ tracks.T - videos.pow(2).sum(1, keepdim=True) - tracks.pow(2).sum(1)[None, :]
    raise ValueError(f"unknown similarity '{kind}'; expected dot, cosine or neg_sqdist")


def true_ranks(scores: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's true track.

    Shapes:
        scores: [N, T]; truth: int64 [N]; returns int64 [N].
    """
    true_score = scores.gather(1, truth[:, None])                      # [N, 1]
    above = (scores > true_score).sum(1)
    idx = torch.arange(scores.shape[1], device=scores.device)[None, :]
    tied_before = ((scores == true_score) & (idx < truth[:, None])).sum(1)
    return above + tied_before + 1


def block_ranks(score_fn: Callable[[np.ndarray], torch.Tensor], videos: np.ndarray, truth: np.ndarray,
                block_size: int = 1024) -> np.ndarray:
    """Ranks of the true tracks for ``videos``, scoring ``block_size`` videos at a time.

    Args:
        score_fn: internal video indices -> scores ``[len, n_tracks]``.
        videos, truth: int arrays ``[N]`` (video indices, their true track indices).
    """
    out = []
    with torch.no_grad():
        for s in range(0, len(videos), block_size):
            sc = score_fn(videos[s:s + block_size])
            out.append(true_ranks(sc, torch.as_tensor(truth[s:s + block_size], device=sc.device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def metrics_from_ranks(ranks: np.ndarray, ks=KS) -> dict[str, float]:
    """``recall@K``, ``ndcg@K`` for each K, plus ``mrr``, ``medr`` and ``meanr``, averaged over videos."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no videos to evaluate")
    out = {}
    gain = 1.0 / np.log2(r + 1.0)
    for k in ks:
        hit = r <= k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float((hit * gain).mean())
    out["mrr"] = float((1.0 / r).mean())
    out["medr"] = float(np.median(r))
    out["meanr"] = float(r.mean())
    return out
