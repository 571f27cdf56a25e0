"""Shared helpers of the model tests."""
from __future__ import annotations

import numpy as np

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
