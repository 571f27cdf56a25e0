"""Shared helpers of the model tests."""
from __future__ import annotations

import numpy as np
import torch

from prismrec.data.sampler import PairwiseSampler


def epoch_losses(model, dataset, *, epochs: int = 8, batch_size: int = 256, learning_rate: float = 1e-2) -> list[float]:
    """Mean training loss per epoch of a bare loop over fixed pairwise batches (no trainer)."""
    opt = model.configure_optimizer(learning_rate, 0.0)
    batches = list(PairwiseSampler(dataset.train, batch_size, np.random.default_rng(0)))
    losses = []
    for epoch in range(epochs):
        model.on_epoch_start(epoch)
        total = 0.0
        for b in batches:
            opt.zero_grad(set_to_none=True)
            loss = model.loss(b)
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / len(batches))
    return losses


def assert_learns_and_scores(rec, dataset, *, min_drop: float = 0.0) -> None:
    """The fitted ``rec``'s training loss fell by more than ``min_drop`` and its scores are finite ``[B, n_items]``."""
    losses = [h["loss"] for h in rec.result.history]
    assert losses[-1] < losses[0] - min_drop, losses
    with rec.model.scoring():
        s = rec.model.score(torch.tensor([0, 5, 9, 11]))
    assert s.shape == (4, dataset.n_items) and torch.isfinite(s).all()
