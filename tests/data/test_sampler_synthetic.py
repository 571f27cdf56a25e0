"""Negative sampling and the synthetic generator."""
import numpy as np
import scipy.sparse as sp

from prismrec.data import make_synthetic
from prismrec.data.sampler import PairwiseSampler, UserSampler, sample_negatives


def test_negatives_are_never_positives():
    rng = np.random.default_rng(0)
    dense = rng.random((50, 30)) < 0.6  # dense rows force many redraws
    dense[:, 29] = False                 # item 29 never in train: never a candidate
    train = sp.csr_matrix(dense.astype(np.float32))
    users = np.repeat(np.arange(50), 40)
    neg = sample_negatives(train, users, rng)
    assert not dense[users, neg].any()
    assert (neg != 29).all()


def test_pairwise_sampler_epoch(tiny):
    s = PairwiseSampler(tiny.train, 256, np.random.default_rng(3))
    batches = list(s)
    assert len(batches) == len(s)
    users = np.concatenate([b.users.numpy() for b in batches])
    pos = np.concatenate([b.pos_items.numpy() for b in batches])
    neg = np.concatenate([b.neg_items.numpy() for b in batches])
    assert len(users) == tiny.train.nnz
    dense = tiny.train.toarray() > 0
    assert dense[users, pos].all() and not dense[users, neg].any()
    again = list(PairwiseSampler(tiny.train, 256, np.random.default_rng(3)))
    assert all((a.neg_items == b.neg_items).all() for a, b in zip(batches, again))


def test_user_sampler(tiny):
    s = UserSampler(tiny.train, 64, np.random.default_rng(0))
    users = np.concatenate([b.users.numpy() for b in s])
    assert sorted(users.tolist()) == np.flatnonzero(np.diff(tiny.train.indptr) > 0).tolist()


def test_synthetic_is_deterministic_and_valid():
    a, b = make_synthetic(200, 80, seed=5), make_synthetic(200, 80, seed=5)
    assert (a.train != b.train).nnz == 0
    assert np.array_equal(a.features["image"], b.features["image"])
    total = a.train + a.valid + a.test
    assert total.max() == 1  # no interaction in two splits
    assert (np.diff(total.indptr) >= 5).all()
