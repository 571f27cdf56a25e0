"""Training batch samplers, vectorised over the whole epoch (no Python loop per user or sample)."""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch


class Batch(NamedTuple):
    """One training batch; internal indices. ``pos_items``/``neg_items`` are ``None`` for user batches."""

    users: torch.Tensor
    pos_items: torch.Tensor | None = None
    neg_items: torch.Tensor | None = None


def sample_negatives(train: sp.csr_matrix, users: np.ndarray, rng: np.random.Generator,
                     candidates: np.ndarray | None = None, max_rounds: int = 1000) -> np.ndarray:
    """One uniform negative per user entry, never a training positive of that user.

    Negatives are drawn from ``candidates`` (default: items that occur in ``train``, as MMRec does);
    entries that hit a positive are redrawn in vectorised rounds until none is left.

    Shapes:
        users: [N] -> returns int64 [N].
    """
    train = train.tocsr()
    n_items = train.shape[1]
    if candidates is None:
        candidates = np.flatnonzero(np.diff(train.tocsc().indptr) > 0)
    full = np.diff(train.indptr)[users] >= len(candidates)
    if full.any():
        raise ValueError(f"user {int(users[np.flatnonzero(full)[0]])} has interacted with every candidate "
                         "item; no negative can be sampled")
    coo_rows = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr))
    keys = coo_rows * n_items + train.indices  # sorted: CSR rows ascending, indices sorted per row
    neg = candidates[rng.integers(0, len(candidates), size=len(users))]
    todo = np.arange(len(users))
    for _ in range(max_rounds):
        q = users[todo].astype(np.int64) * n_items + neg[todo]
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        clash = keys[pos] == q
        if not clash.any():
            return neg
        todo = todo[clash]
        neg[todo] = candidates[rng.integers(0, len(candidates), size=len(todo))]
    raise RuntimeError("negative sampling did not converge")  # only with near-full users


class PairwiseSampler:
    """(user, positive, negative) batches over the shuffled training interactions (MMRec's loader).

    Args:
        train: binary ``[n_users, n_items]`` CSR.
        batch_size: rows per batch.
        rng: numpy generator; its state is the whole sampler state (saved in checkpoints).
        users: restrict to interactions of these users (a data-parallel shard).
    """

    def __init__(self, train: sp.csr_matrix, batch_size: int, rng: np.random.Generator,
                 rows: np.ndarray | None = None):
        coo = train.tocoo()
        self.train = train
        self.users = coo.row.astype(np.int64)
        self.items = coo.col.astype(np.int64)
        if rows is not None:
            self.users, self.items = self.users[rows], self.items[rows]
        self.candidates = np.flatnonzero(np.diff(train.tocsc().indptr) > 0)
        self.batch_size = batch_size
        self.rng = rng

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        perm = self.rng.permutation(len(self.users))
        u, p = self.users[perm], self.items[perm]
        n = sample_negatives(self.train, u, self.rng, self.candidates)
        u, p, n = (torch.from_numpy(a) for a in (u, p, n))
        for s in range(0, len(u), self.batch_size):
            yield Batch(u[s:s + self.batch_size], p[s:s + self.batch_size], n[s:s + self.batch_size])


class UserSampler:
    """Batches of user indices (users with at least one training interaction), shuffled per epoch."""

    def __init__(self, train: sp.csr_matrix, batch_size: int, rng: np.random.Generator,
                 rows: np.ndarray | None = None):
        self.users = np.flatnonzero(np.diff(train.indptr) > 0) if rows is None else rows
        self.batch_size = batch_size
        self.rng = rng

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        u = torch.from_numpy(self.rng.permutation(self.users))
        for s in range(0, len(u), self.batch_size):
            yield Batch(u[s:s + self.batch_size])


SAMPLERS = {"pairwise": PairwiseSampler, "users": UserSampler}
