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


def check_trains_with_plugin(name: str, dataset, plugin: str, **config) -> None:
    """``name`` wrapped by ``plugin`` trains two epochs with a falling loss and finite scores."""
    from prismrec import Recommender
    rec = Recommender(name, plugins=[plugin], epochs=2, batch_size=256, checkpoint=False, seed=0,
                      **config).fit(dataset, show_progress=False)
    losses = [h["loss"] for h in rec.result.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.isfinite(rec.score(np.arange(3))).all()


def check_serve_round_trip(name: str, dataset, run_dir, **config) -> None:
    """A bundle of ``name`` served over a TestClient answers ``/recommend`` with the API's list."""
    from fastapi.testclient import TestClient

    from prismrec import Recommender
    from prismrec.serve.app import create_app
    from prismrec.serve.settings import ServeSettings
    from prismrec.serve.state import ServingState, StateHolder
    rec = Recommender(name, epochs=2, batch_size=256, seed=0, **config).fit(dataset, run_dir=run_dir,
                                                                          show_progress=False)
    settings = ServeSettings(bundle=run_dir)
    with TestClient(create_app(holder=StateHolder(settings, ServingState.load(settings)))) as client:
        got = client.get("/recommend", params={"user": str(dataset.user_ids[3]), "k": 10})
        assert got.status_code == 200
        ids, _ = rec.recommend(dataset.user_ids[3], k=10)
        assert [str(i) for i in got.json()["items"]] == [str(i) for i in ids]


def assert_loss_and_grads_match(model, batch, reference, *, relative_grad_atol: float | None = None) -> None:
    """``model.loss(batch)`` and its gradients equal ``reference(model, batch)``'s (a dense version of the
    paper's equations). With ``relative_grad_atol`` the gradient tolerance is that fraction of each
    gradient's largest entry (float32 sums taken in another order)."""
    fast = model.loss(batch)
    fast.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    ref = reference(model, batch)
    ref.backward()
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    for k, p in model.named_parameters():
        atol = 1e-7 if relative_grad_atol is None else relative_grad_atol * p.grad.abs().max().item()
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=atol, msg=k)
