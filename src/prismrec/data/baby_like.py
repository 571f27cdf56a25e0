"""The reference benchmark dataset *baby-like*: Amazon Baby's shape with a planted multimodal signal.

``write_baby_like(out)`` writes an MMRec-format folder (``<name>.inter``, ``image_feat.npy``,
``text_feat.npy``) with the statistics of Amazon Baby: 19,445 users, 7,050 items and 160,792
interactions, at least 5 per user, every item used, a per-user chronological ~80/10/10 split.

The generative story:

* every item has a latent ``z_i`` (16-d) and every user a preference ``p_u``;
* a user picks ``n_u`` distinct items, the ``n_u`` largest of ``beta · p_u·z_i + log pop_i + Gumbel
  noise`` (Gumbel top-k sampling without replacement, so probability ∝ softmax of the logits);
  popularity is Zipf-like over a random item order;
* history lengths are ``5 + extra`` where the extras are a heavy-tailed share of the remaining
  interactions, so the total is exactly ``interactions``;
* items nobody picked take over one interaction of an item that has more than 5, so that every
  item id occurs;
* "image" features are ``relu(z W + noise)`` (4096-d, non-negative like a CNN's fc7 output) and
  "text" features ``normalise(z W' + 0.7 noise)`` (384-d, L2-normalised like a sentence encoder's).

With the defaults and seed 0 the files are byte for byte those listed in the project's reference
data description (sha256 of ``baby-like.inter`` 60de9344…, ``image_feat.npy`` 7f42d0a5…,
``text_feat.npy`` 8629620f…), whatever the machine, as long as numpy draws the same random stream
(numpy ≥ 1.17's ``default_rng``) and the BLAS rounds the ``z W`` products the same way.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prismrec.errors import PrismrecError

log = logging.getLogger("prismrec")


@dataclass(frozen=True)
class BabyLikeShape:
    """Size and signal of a baby-like dataset; the defaults are Amazon Baby's statistics."""

    users: int = 19445
    items: int = 7050
    interactions: int = 160792
    seed: int = 0
    latent: int = 16          # dimension of the planted latent space
    beta: float = 0.6         # strength of the preference signal in the choice logits
    min_per_user: int = 5
    image_dim: int = 4096
    text_dim: int = 384

    def check(self) -> None:
        if min(self.users, self.items, self.latent, self.min_per_user, self.image_dim, self.text_dim) < 1:
            raise PrismrecError("baby-like: users, items, latent, min_per_user and the feature dimensions "
                                "must all be at least 1")
        if self.interactions < self.users * self.min_per_user:
            raise PrismrecError(f"baby-like: interactions must be at least users × {self.min_per_user} = "
                                f"{self.users * self.min_per_user}, got {self.interactions}")
        if self.interactions > self.users * self.items // 2:
            raise PrismrecError(f"baby-like: at most users × items / 2 = {self.users * self.items // 2} "
                                f"interactions fit (each user picks at most half the catalogue), got "
                                f"{self.interactions}")
        if self.items // 2 < self.min_per_user:
            raise PrismrecError(f"baby-like: items must be at least {2 * self.min_per_user}, got {self.items}")


def _history_lengths(rng: np.random.Generator, s: BabyLikeShape) -> np.ndarray:
    """Per-user history lengths: ``min_per_user`` plus a heavy-tailed share of the rest, summing exactly."""
    spare = s.interactions - s.users * s.min_per_user
    share = rng.exponential(1.0, s.users) ** 1.5
    extra = np.floor(share / share.sum() * spare).astype(np.int64)
    extra[rng.choice(s.users, size=spare - extra.sum(), replace=False)] += 1  # rounding remainder
    cap = s.items // 2
    n_u = np.minimum(s.min_per_user + extra, cap)
    while (left := s.interactions - n_u.sum()) > 0:  # hand clipped interactions to users below the cap
        open_users = np.flatnonzero(n_u < cap)
        n_u[rng.choice(open_users, size=min(left, len(open_users)), replace=False)] += 1
    return n_u


def _choose_items(rng, s: BabyLikeShape, z, p, log_pop, n_u) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``n_u`` items by Gumbel top-k over the choice logits, best first."""
    users, items = [], []
    block = 1024
    for lo in range(0, s.users, block):
        hi = min(s.users, lo + block)
        logits = s.beta * (p[lo:hi] @ z.T) + log_pop[None, :]           # [block, items] float32
        logits += rng.gumbel(size=logits.shape).astype(np.float32)
        k = int(n_u[lo:hi].max())
        top = np.argpartition(-logits, k, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(logits, top, axis=1), axis=1), axis=1)
        keep = np.arange(k)[None, :] < n_u[lo:hi, None]                  # each user's first n_u picks
        users.append(np.broadcast_to(np.arange(lo, hi)[:, None], keep.shape)[keep])
        items.append(top[keep])
    return np.concatenate(users).astype(np.int64), np.concatenate(items).astype(np.int64)


def _cover_every_item(rng, users: np.ndarray, items: np.ndarray, n_items: int, floor: int = 5) -> None:
    """Give every unpicked item one interaction taken from an item picked more than ``floor`` times.

    Donor positions are visited in a random order; a donor is skipped when its item has dropped to
    ``floor`` or when its user already holds the new item. Sequential by nature (each move changes
    the counts the next one reads), but it runs only for the few items nobody picked.
    """
    counts = np.bincount(items, minlength=n_items)
    unpicked = np.flatnonzero(counts == 0)
    if not len(unpicked):
        return
    donors = np.flatnonzero(counts[items] > floor)
    rng.shuffle(donors)
    held: dict[int, set] = {}
    at = 0
    for item in unpicked:
        while True:
            pos = donors[at]
            at += 1
            u = int(users[pos])
            if counts[items[pos]] <= floor:
                continue
            mine = held.get(u)
            if mine is None:
                mine = held[u] = set(items[users == u].tolist())
            if item in mine:
                continue
            mine.discard(int(items[pos]))
            mine.add(int(item))
            counts[items[pos]] -= 1
            counts[item] += 1
            items[pos] = item
            break


def _split_labels(n_u: np.ndarray) -> np.ndarray:
    """x_label per row of users sorted by (user, time): train, then ~10% valid, then ~10% test."""
    tenth = np.maximum(1, np.round(0.1 * n_u).astype(np.int64))       # half to even, like round()
    n_test, n_valid = tenth.copy(), tenth.copy()
    n_train = n_u - n_test - n_valid
    tiny = n_train < 1                                                 # keep one training row
    n_train[tiny], n_valid[tiny], n_test[tiny] = n_u[tiny] - 1, 0, np.where(n_u[tiny] >= 2, 1, 0)
    rank = np.arange(n_u.sum()) - np.repeat(np.cumsum(n_u) - n_u, n_u)  # position within the user
    n_train, n_valid = np.repeat(n_train, n_u), np.repeat(n_valid, n_u)
    return np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2)).astype(np.int64)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def write_baby_like(out: str | Path, shape: BabyLikeShape | None = None) -> dict:
    """Write a baby-like dataset folder (MMRec format); returns its counts.

    Args:
        out: the folder; its name is the dataset name (``<name>.inter``).
        shape: sizes, seed and signal strength (default: Amazon Baby's statistics, seed 0).

    Returns:
        ``{"users", "items", "interactions", "train", "valid", "test", "image_dim", "text_dim"}``.
    """
    s = shape or BabyLikeShape()
    s.check()
    out = Path(out)
    rng = np.random.default_rng(s.seed)
    z = rng.standard_normal((s.items, s.latent)).astype(np.float32)     # item latents
    p = rng.standard_normal((s.users, s.latent)).astype(np.float32)     # user preferences
    log_pop = (-0.8 * np.log(rng.permutation(s.items) + 1.0)).astype(np.float32)
    log_pop -= log_pop.mean()
    n_u = _history_lengths(rng, s)
    users, items = _choose_items(rng, s, z, p, log_pop, n_u)
    _cover_every_item(rng, users, items, s.items)

    stamps = rng.integers(1_000_000_000, 1_400_000_000, size=len(users))
    order = np.lexsort((stamps, users))                                 # by user, then time
    users, items, stamps = users[order], items[order], stamps[order]
    labels = _split_labels(n_u)
    rating = rng.integers(1, 6, size=len(users))
    rating = np.where(rng.random(len(users)) < 0.6, 5, rating)

    w_img = (rng.standard_normal((s.latent, s.image_dim)) / np.sqrt(s.latent)).astype(np.float32)
    image = z @ w_img + 1.0 * rng.standard_normal((s.items, s.image_dim)).astype(np.float32)
    image = np.maximum(image, 0.0).astype(np.float32)
    w_txt = (rng.standard_normal((s.latent, s.text_dim)) / np.sqrt(s.latent)).astype(np.float32)
    text = z @ w_txt + 0.7 * rng.standard_normal((s.items, s.text_dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True) + 1e-8

    out.mkdir(parents=True, exist_ok=True)
    name = out.resolve().name
    rows = np.column_stack([users, items, rating, stamps, labels])

    def write_inter(f):
        f.write(b"userID\titemID\trating\ttimestamp\tx_label\n")
        np.savetxt(f, rows, fmt="%d", delimiter="\t")

    _write_atomic(out / f"{name}.inter", write_inter)
    _write_atomic(out / "image_feat.npy", lambda f: np.save(f, image))
    _write_atomic(out / "text_feat.npy", lambda f: np.save(f, text.astype(np.float32)))
    split = np.bincount(labels, minlength=3)
    info = {"users": int(len(np.unique(users))), "items": int(len(np.unique(items))),
            "interactions": int(len(users)), "train": int(split[0]), "valid": int(split[1]),
            "test": int(split[2]), "image_dim": s.image_dim, "text_dim": s.text_dim}
    log.debug("wrote %s: %s", out, info)
    return info
