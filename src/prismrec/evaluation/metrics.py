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
    hit = np.asarray(hit, dtype=np.float64)
    n_pos = np.asarray(n_pos, dtype=np.float64)
    kmax = hit.shape[1]
    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    cum_hits = np.cumsum(hit, axis=1)                       # [U, K]
    disc = 1.0 / np.log2(ranks + 1.0)                       # [K]
    dcg = np.cumsum(hit * disc, axis=1)                      # [U, K]
    idcg_table = np.cumsum(disc)                             # [K]
    prec_at_r = cum_hits / ranks                             # [U, K]
    ap_sum = np.cumsum(prec_at_r * hit, axis=1)              # [U, K]
    out = {}
    for k in ks:
        if not 1 <= k <= kmax:
            raise ValueError(f"cut-off {k} outside 1..{kmax}")
        h = cum_hits[:, k - 1]
        denom = np.minimum(n_pos, k)
        for m in metrics:
            if m == "recall":
                v = h / n_pos
            elif m == "precision":
                v = h / k
            elif m == "ndcg":
                v = dcg[:, k - 1] / idcg_table[denom.astype(np.int64) - 1]
            elif m == "map":
                v = ap_sum[:, k - 1] / denom
            elif m == "hit":
                v = (h > 0).astype(np.float64)
            else:
                raise ValueError(f"unknown metric '{m}'; known: {', '.join(METRICS)}")
            out[f"{m}@{k}"] = float(v.mean()) if len(v) else 0.0
    return out
