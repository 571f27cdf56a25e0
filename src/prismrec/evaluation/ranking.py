"""Batched full ranking: score all items, mask training items, take the top K (protocol §5)."""
from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp
import torch

from prismrec.evaluation.metrics import METRICS, metrics_from_hits

DEFAULT_KS = (5, 10, 20, 50)


def topk_items(score_fn, users: np.ndarray, k: int, mask: sp.csr_matrix | None = None,
               block_size: int = 512, extra_mask: sp.csr_matrix | None = None) -> np.ndarray:
    """Top-k item indices per user, with the users' ``mask`` items (and ``extra_mask``) excluded.

    Args:
        score_fn: ``users (LongTensor [B]) -> scores (Tensor [B, n_items])``.
        users: internal user indices ``[U]``.
        k: list length.
        mask: ``[n_users, n_items]`` CSR of items never to recommend (usually train).
        block_size: users scored at once; blocks of a few hundred keep the score matrix in cache.

    Returns:
        int64 ``[U, k]`` item indices, best first; ``-1`` pads the rows when ``k > n_items``.
    """
    out = np.full((len(users), k), -1, dtype=np.int64)
    masks = [m for m in (mask, extra_mask) if m is not None]
    with torch.no_grad():
        for s in range(0, len(users), block_size):
            ub = users[s:s + block_size]
            scores = score_fn(torch.from_numpy(ub))
            n_items = scores.shape[1]
            for m in masks:
                flat = _cached(m, ("mask", ub.tobytes(), n_items),
                               lambda: torch.from_numpy(_flat_coords(m, ub, n_items)))
                scores.view(-1)[flat] = -torch.inf
            kk = min(k, n_items)
            out[s:s + len(ub), :kk] = torch.topk(scores, kk, dim=1).indices.numpy()
    return out


# Per-matrix cache of what every evaluation of the same split recomputes (the flat positions of
# the training items of each user block, the sorted keys of the ground truth): about 10% of an
# evaluation on baby-like. Keyed by the matrix object itself (a weak reference, so a freed matrix
# whose id is reused is never mistaken for the old one); small: a few MB per split.
_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def _cached(m: sp.csr_matrix, key: tuple, make):
    entry = _CACHE.get(id(m))
    if entry is None or entry[0]() is not m:
        for dead in [i for i, (ref, _) in _CACHE.items() if ref() is None]:
            del _CACHE[dead]
        entry = _CACHE[id(m)] = (weakref.ref(m), {})
    store = entry[1]
    if key not in store:
        store[key] = make()
    return store[key]


def _flat_coords(m: sp.csr_matrix, users: np.ndarray, n_cols: int) -> np.ndarray:
    rows, cols = _block_coords(m, users)
    return rows * n_cols + cols


def _block_coords(m: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row-in-block, column) of the non-zeros of ``m[users]``, without building the sub-matrix."""
    starts, ends = m.indptr[users], m.indptr[users + 1]
    counts = ends - starts
    rows = np.repeat(np.arange(len(users), dtype=np.int64), counts)
    offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = m.indices[np.repeat(starts, counts) + offs].astype(np.int64)
    return rows, cols


def hits_of(top: np.ndarray, users: np.ndarray, truth: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Boolean hit matrix ``[U, K]`` of ranked items against ``truth`` rows, and ``n_pos`` ``[U]``."""
    n_items = truth.shape[1]
    keys = _cached(truth, ("keys",), lambda: _sorted_keys(truth))  # row * n_items + col, all rows
    q = (np.asarray(users, dtype=np.int64)[:, None] * n_items + top).ravel()
    pos = np.searchsorted(keys, q)
    pos[pos == len(keys)] = 0
    hit = (keys[pos] == q).reshape(top.shape) if len(keys) else np.zeros(top.shape, bool)
    hit &= top >= 0  # padding of lists longer than the catalogue
    return hit, np.diff(truth.indptr)[users]


def _sorted_keys(m: sp.csr_matrix) -> np.ndarray:
    m = sp.csr_matrix(m)
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return np.sort(rows * m.shape[1] + m.indices)


def evaluate_splits(score_fn, train: sp.csr_matrix, truths: dict[str, sp.csr_matrix], *,
                    ks=DEFAULT_KS, metrics=METRICS, block_size: int = 512,
                    extra_masks: dict[str, sp.csr_matrix] | None = None,
                    require_train: bool = True) -> dict[str, dict[str, float]]:
    """Evaluate several splits (e.g. valid and test) from **one** ranking pass.

    Only training items are masked (protocol §3.4), so valid and test share the same ranked
    list and each user is scored once. Users with no ground truth in a split are skipped for
    that split; with ``require_train`` users with no training interaction are skipped too
    (MMRec's ``filter_out_cod_start_users``).

    Args:
        extra_masks: split -> additional items to mask for that split (e.g. valid items when
            evaluating test). Splits with an extra mask get their own ranking pass.
    """
    kmax = max(ks)
    has_train = np.diff(train.indptr) > 0
    results = {}
    extra_masks = extra_masks or {}
    shared = {s: t for s, t in truths.items() if s not in extra_masks}
    groups = [(shared, None)] + [({s: truths[s]}, extra_masks[s]) for s in truths if s in extra_masks]
    for group, extra in groups:
        if not group:
            continue
        per_split_users = {}
        for s, t in group.items():
            u = np.flatnonzero(np.diff(t.indptr) > 0)
            per_split_users[s] = u[has_train[u]] if require_train else u
        all_users = np.unique(np.concatenate(list(per_split_users.values())))
        top = topk_items(score_fn, all_users, kmax, train, block_size, extra)
        for s, u in per_split_users.items():
            sub = top if len(u) == len(all_users) else top[np.searchsorted(all_users, u)]  # u ⊆ all_users
            hit, n_pos = hits_of(sub, u, group[s])
            results[s] = metrics_from_hits(hit, n_pos, ks, metrics)
    return {s: results[s] for s in truths}
