"""Top-K metrics from a hit matrix, exactly as MMRec computes them (``specs/protocol.md`` §6).

Everything here is vectorised over users: a hit matrix ``hit[u, r]`` (rank ``r`` 0-based) and the
number of ground-truth items ``n_u`` give every metric at every K in a few array operations.
"""
from __future__ import annotations

import numpy as np

METRICS = ("recall", "ndcg", "precision", "map", "hit")


def metrics_from_hits(hit: np.ndarray, n_pos: np.ndarray, ks, metrics=METRICS) -> dict[str, float]:
    """Mean of each metric over users.

    Args:
        hit: bool ``[U, K_max]``, ``hit[u, r]`` is True when the item ranked ``r`` is relevant.
        n_pos: int ``[U]``, number of relevant items of each user (all > 0).
        ks: cut-offs, each ``<= K_max``.
        metrics: subset of ``recall, ndcg, precision, map, hit``.

    Returns:
        ``{"recall@20": ..., ...}``. Recall divides by ``n_u`` (not ``min(n_u, K)``), as MMRec does.
    """
    hit = np.asarray(hit, dtype=bool)
    n_users, kmax = hit.shape
    n_pos = np.asarray(n_pos, dtype=np.float64)
    # Hits are sparse (well under one per user and cut-off), so every sum below runs over the hit
    # positions only: np.nonzero lists them by user, then rank.
    rows, ranks = np.nonzero(hit)
    first = np.searchsorted(rows, rows)                      # index of the user's first hit
    nth = np.arange(len(rows)) - first + 1                   # 1 for a user's first hit, 2 for ...
    disc_table = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))
    idcg_table = np.cumsum(disc_table)
    gain = disc_table[ranks]                                  # DCG term of each hit
    prec = nth / (ranks + 1.0)                                # precision at each hit's rank (AP term)
    out = {}
    for k in ks:
        if not 1 <= k <= kmax:
            raise ValueError(f"cut-off {k} outside 1..{kmax}")
        sel = ranks < k
        r = rows[sel]
        h = np.bincount(r, minlength=n_users).astype(np.float64)
        denom = np.minimum(n_pos, k)
        for m in metrics:
            if m == "recall":
                v = h / n_pos
            elif m == "precision":
                v = h / k
            elif m == "ndcg":
                v = np.bincount(r, weights=gain[sel], minlength=n_users) / idcg_table[denom.astype(np.int64) - 1]
            elif m == "map":
                v = np.bincount(r, weights=prec[sel], minlength=n_users) / denom
            elif m == "hit":
                v = (h > 0).astype(np.float64)
            else:
                raise ValueError(f"unknown metric '{m}'; known: {', '.join(METRICS)}")
            out[f"{m}@{k}"] = float(v.mean()) if len(v) else 0.0
    return out
