"""Shared helpers of the model tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from prismrec.data.sampler import Batch, PairwiseSampler


def first_batch(ds, size: int = 64, seed: int = 0):
    """The first pairwise batch of ``size`` rows of an epoch drawn with ``seed``."""
    return next(iter(PairwiseSampler(ds.train, size, np.random.default_rng(seed))))


def assert_ignores_negatives(model, batch) -> None:
    """The loss of ``batch`` is unchanged when every negative item is replaced by item 0 (models
    trained without negatives: BM3, SelfCF, SLMRec), under the same random draws."""
    torch.manual_seed(1)
    expected = model.loss(batch)
    torch.manual_seed(1)
    torch.testing.assert_close(model.loss(Batch(batch.users, batch.pos_items, torch.zeros_like(batch.neg_items))),
                               expected)


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


def assert_matches_dense_reference(model, loss, grads, ref, params, embeddings, n_scored: int) -> None:
    """The fast path's ``loss`` and its ``grads`` (of ``params``) equal the dense reference ``ref``'s, and
    ``score`` of the first ``n_scored`` users is their dot product with every item of the reference's
    ``embeddings`` (users, then items)."""
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, torch.autograd.grad(ref, params)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
    e, n = embeddings, model.n_users
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(n_scored)), (e[:n_scored] @ e[n:].T).detach(),
                                   atol=1e-5, rtol=1e-5)


def check_config_names_field(config_cls, field: str, value, model_cls=None, match: str | None = None) -> None:
    """``field=value`` is a ``ValueError`` naming the field (``match``, when the message says it otherwise)
    from ``config_cls``, and, given ``model_cls``, a ``ConfigError`` from resolving the model's config."""
    from prismrec.config import resolve
    from prismrec.errors import ConfigError
    with pytest.raises(ValueError, match=match or field):
        config_cls(**{field: value})
    if model_cls is not None:
        with pytest.raises(ConfigError, match=match or field):
            resolve(model_cls, {field: value})


def check_tunable(name: str, expected: set[str]) -> None:
    """The hyper-parameter search space of model ``name`` holds every name of ``expected``."""
    from prismrec.train.hpo import search_space
    assert expected <= {p.name for p in search_space(name)}


def check_beats_most_popular(name: str, dataset, **config):
    """``name`` trained six epochs: the loss falls by more than 0.1 and the best valid Recall@20 is more
    than 0.2 above most-popular's. Returns the fitted recommender."""
    from prismrec import Recommender
    kw = dict(epochs=6, batch_size=256, checkpoint=False, learning_rate=0.01, seed=0)
    rec = Recommender(name, **{**kw, **config}).fit(dataset, show_progress=False)
    pop = Recommender("pop", epochs=1, checkpoint=False).fit(dataset, show_progress=False)
    losses = [h["loss"] for h in rec.result.history]
    assert losses[-1] < losses[0] - 0.1
    assert rec.result.best_valid["recall@20"] > pop.result.best_valid["recall@20"] + 0.2
    return rec


def check_learns_beyond_popularity(name: str, dataset, run_dir):
    """``name`` trained ten epochs into ``run_dir``: test Recall@20 more than 0.03 above most-popular's, and
    the saved bundle scores as the fitted model does. Returns the fitted recommender."""
    from prismrec import Recommender
    pop = Recommender("pop").fit(dataset, show_progress=False).metrics["test"]["recall@20"]
    rec = Recommender(name, epochs=10, batch_size=256, learning_rate=1e-2).fit(dataset, run_dir=run_dir,
                                                                              show_progress=False)
    assert rec.metrics["test"]["recall@20"] > pop + 0.03
    loaded = Recommender.load(run_dir)
    np.testing.assert_allclose(loaded.score(np.arange(6)), rec.score(np.arange(6)), rtol=1e-5, atol=1e-5)
    return rec


def check_low_precision_close(make_model, batch, grad_of, *, seed: int | None = None,
                              loss_rel: float = 1e-2, grad_rel: float = 0.1) -> None:
    """The model built by ``make_model(precision)`` for ``"float32"`` and ``"bfloat16"``: one loss on
    ``batch`` (torch reseeded to ``seed`` first, if given) within ``loss_rel``, and the gradient
    ``grad_of(model)`` within ``grad_rel`` but not identical (so the bf16 path did run)."""
    out = {}
    for precision in ("float32", "bfloat16"):
        model = make_model(precision)
        if seed is not None:
            torch.manual_seed(seed)
        loss = model.loss(batch)
        loss.backward()
        out[precision] = loss.item(), grad_of(model).clone()
    assert out["bfloat16"][0] == pytest.approx(out["float32"][0], rel=loss_rel)
    a, b = out["float32"][1], out["bfloat16"][1]
    assert 0 < (a - b).norm() / a.norm() < grad_rel
