"""Most-popular baseline: every user gets the items with the most training interactions."""
from __future__ import annotations

import numpy as np
import torch

from prismrec.models.base import Model, register


@register("pop")
class Pop(Model):
    """Scores each item by its number of training interactions (no training).

    Shapes:
        score(users) -> [len(users), n_items], identical rows.
    """

    description = "Most popular items (training interaction counts); no learning"
    trainable = False

    def setup(self, dataset):
        counts = np.asarray(dataset.train.sum(axis=0)).ravel().astype(np.float32)
        self.register_buffer("popularity", torch.from_numpy(counts))

    def embeddings(self):
        return torch.ones(self.n_users, 1), self.popularity[:, None]
