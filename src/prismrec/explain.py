"""Modality attribution: which modality (and which feature dimensions) drove a recommendation.

Three levels, all returning numpy arrays:

* :func:`modality_contributions` — for (user, item) pairs, each modality's additive share of the
  score plus the rest (``"id"``: the behaviour/ID part). Uses the model's own exact
  :meth:`~prismrec.models.base.Model.modality_contributions` when it has one (VBPR, FREEDOM);
  otherwise occlusion: the score drop when the modality's features are replaced by a baseline
  (zeros or the catalogue mean) for every item, read through ``features()`` like the model does.
* :func:`feature_attributions` — gradient × (input − baseline) over the raw feature dimensions
  of a modality, summed over every item row the score reads (the item's own features and, for
  graph models, its neighbours'). For a model linear in the features (VBPR) with a zero baseline
  it is exact: the dimensions sum to the modality's contribution.
* :func:`dominance` — over many users' top-k lists, the share of recommendations each part
  dominates and the mean share of |contribution| per part.

:func:`explain` is the entry point on a fitted :class:`~prismrec.Recommender` (external ids).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from prismrec.errors import PrismrecError
from prismrec.evaluation.ranking import DEFAULT_BLOCK, topk_items
from prismrec.models.base import Model

log = logging.getLogger("prismrec")
ID = "id"
BASELINES = ("zero", "mean")


@dataclass
class Explanation:
    """Attribution of one user's top-k list.

    Attributes:
        user: external user id.
        items: external item ids ``[k]``, best first.
        scores: model scores ``[k]``.
        contributions: part (``"id"`` and each modality) -> ``[k]``; the parts sum to ``scores``.
        dominant: the part with the largest contribution, per item ``[k]``.
        feature_attributions: modality -> ``[k, d_m]`` per-dimension attribution (raw features).
        method: ``"model"`` (the model's exact split) or ``"occlusion"``.
    """

    user: object
    items: np.ndarray
    scores: np.ndarray
    contributions: dict[str, np.ndarray]
    dominant: np.ndarray
    feature_attributions: dict[str, np.ndarray] = field(default_factory=dict)
    method: str = "model"

    def top_dimensions(self, modality: str, n: int = 5) -> list[tuple[int, float]]:
        """The ``n`` dimensions with the largest mean |attribution| over the list, with signed means."""
        a = self.feature_attributions[modality]
        order = np.argsort(-np.abs(a).mean(axis=0))[:n]
        return [(int(j), float(a[:, j].mean())) for j in order]


# ------------------------------------------------------------------------------------------------
def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.long)


def _feature_tensor(model: Model, m: str) -> torch.Tensor:
    f = getattr(model, f"feat_{m}", None)
    if f is None:
        raise PrismrecError(f"model '{model.name}' has no features for modality '{m}'; it has {model.modalities}")
    return f


def _baseline(f: torch.Tensor, baseline: str) -> torch.Tensor:
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    return torch.zeros_like(f) if baseline == "zero" else f.detach().mean(dim=0, keepdim=True).expand_as(f)


@contextlib.contextmanager
def _swapped(model: Model, m: str, values: torch.Tensor):
    """Temporarily replace the raw features of modality ``m`` (a buffer or a trainable table) by a
    new tensor object, so that caches keyed on the features' identity are not reused."""
    name, f = f"feat_{m}", _feature_tensor(model, m)
    new = values.detach().contiguous()
    setattr(model, name, torch.nn.Parameter(new, requires_grad=f.requires_grad)
            if isinstance(f, torch.nn.Parameter) else new)
    try:
        yield
    finally:
        setattr(model, name, f)


def pair_scores(model: Model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores of (user, item) pairs ``[n]``, differentiable where the model is (eval mode is the caller's)."""
    if model.is_dot_product:
        u, i = model.embeddings()
        return (u[users] * i[items]).sum(dim=1)
    model.prepare_scoring()
    try:
        uniq, inv = torch.unique(users, return_inverse=True)
        return model.score(uniq)[inv, items]
    finally:
        model._cache = None


@contextlib.contextmanager
def _eval(model: Model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def modality_contributions(model: Model, users, items, method: str = "auto", baseline: str = "zero",
                           block_size: int = 4096) -> dict[str, np.ndarray]:
    """Each modality's (and the ID part's) contribution to the scores of (user, item) pairs.

    Args:
        model: a built, trained model.
        users, items: internal indices of equal length ``[n]`` (pairs).
        method: ``"auto"`` (the model's own split when it has one, else occlusion), ``"model"``
            or ``"occlusion"``.
        baseline: what an occluded modality's features become: ``"zero"`` or the item ``"mean"``.
        block_size: pairs scored at once.

    Returns:
        ``{"id": [n], modality: [n], ...}``; the values sum to the pairs' scores.
    """
    users, items = _t(users), _t(items)
    if len(users) != len(items):
        raise ValueError(f"users and items must be pairs of equal length, got {len(users)} and {len(items)}")
    if not model.modalities:
        raise PrismrecError(f"model '{model.name}' reads no modality features; nothing to attribute")
    out: dict[str, list] = {}
    with _eval(model), torch.no_grad():
        for s in range(0, len(users), block_size):
            u, i = users[s:s + block_size], items[s:s + block_size]
            score = pair_scores(model, u, i)
            parts = model.modality_contributions(u, i) if method in ("auto", "model") else None
            if parts is None:
                if method == "model":
                    raise PrismrecError(f"model '{model.name}' has no modality_contributions; use method='occlusion'")
                parts = {}
                for m in model.modalities:
                    with _swapped(model, m, _baseline(_feature_tensor(model, m), baseline)):
                        parts[m] = score - pair_scores(model, u, i)
            parts = {m: parts[m].detach().float() for m in model.modalities if m in parts}
            block = {ID: score - sum(parts.values()), **parts}
            for k, v in block.items():
                out.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def contribution_method(model: Model) -> str:
    """``"model"`` when the model splits its scores itself, else ``"occlusion"``."""
    with _eval(model), torch.no_grad():
        z = torch.zeros(1, dtype=torch.long)
        return "model" if model.modality_contributions(z, z) is not None else "occlusion"


def feature_attributions(model: Model, users, items, modalities=None, baseline: str = "zero") -> dict[str, np.ndarray]:
    """Gradient × (input − baseline) of each pair's score over the raw feature dimensions.

    One backward pass per pair (meant for a user's top-k list, not a whole catalogue).

    Args:
        model: a built, trained model.
        users, items: internal indices, pairs ``[n]``.
        modalities: which modalities (default all).
        baseline: ``"zero"`` or the item ``"mean"``.

    Returns:
        modality -> ``[n, d_m]``.
    """
    users, items = _t(users), _t(items)
    mods = list(modalities or model.modalities)
    leaves, restore = {}, []
    for m in mods:
        f = _feature_tensor(model, m)
        if isinstance(f, torch.nn.Parameter):
            leaves[m] = f                      # a trainable table (MGCN): its .grad is filled by backward
        else:
            leaf = f.detach().clone().requires_grad_(True)
            setattr(model, f"feat_{m}", leaf)
            restore.append((m, f))
            leaves[m] = leaf
    out = {m: np.zeros((len(users), leaves[m].shape[1]), np.float32) for m in mods}
    delta = {m: (leaves[m] - _baseline(leaves[m], baseline)).detach() for m in mods}
    try:
        with _eval(model), torch.enable_grad():
            scores = pair_scores(model, users, items)
            if not scores.requires_grad:
                log.warning("model '%s' scores do not depend on its features differentiably; attributions are 0",
                            model.name)
                return out
            for k in range(len(users)):
                for leaf in leaves.values():
                    leaf.grad = None
                scores[k].backward(retain_graph=k + 1 < len(users))
                for m, leaf in leaves.items():
                    if leaf.grad is not None:
                        out[m][k] = (leaf.grad * delta[m]).sum(dim=0).numpy()
    finally:
        for m, f in restore:
            setattr(model, f"feat_{m}", f)
        for p in model.parameters():
            p.grad = None
    return out


def recommended_pairs(users, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(user, item)`` pairs of the lists ``top`` of :func:`recommend_internal`, the ``-1`` padding
    (users with fewer than ``k`` unseen items) left out."""
    pu, pi = np.repeat(np.asarray(users), top.shape[1]), top.ravel()
    ok = pi >= 0
    return pu[ok], pi[ok]


def recommend_internal(model: Model, train, users, k: int, block_size: int = DEFAULT_BLOCK) -> np.ndarray:
    """Top-``k`` internal item indices ``[len(users), k]`` with training items masked (``-1`` pads a
    row when the user has fewer than ``k`` unseen items)."""
    with model.scoring():
        return topk_items(model.score, np.asarray(users, dtype=np.int64), k, mask=train, block_size=block_size)


def _dominant(contrib: dict[str, np.ndarray]) -> np.ndarray:
    names = list(contrib)
    return np.asarray(names)[np.argmax(np.stack([contrib[n] for n in names]), axis=0)]


def dominance(model: Model, train, users=None, k: int = 10, max_users: int = 2000, seed: int = 0,
              method: str = "auto", baseline: str = "zero") -> dict:
    """Aggregate attribution over users' top-``k`` lists.

    Args:
        model: a built, trained model.
        train: the training CSR (masked from the lists).
        users: internal users (default: a random sample of ``max_users`` users with training data).
        k: list length.

    Returns:
        ``{"users": n, "k": k, "method": ..., "dominant_share": {part: fraction of recommendations
        whose largest contribution is that part}, "modality_dominant_share": {modality: same among
        modalities only}, "mean_abs_share": {part: mean |c_part| / Σ|c|}, "mean_contribution": {part: mean}}``.
    """
    if users is None:
        active = np.flatnonzero(np.diff(train.indptr) > 0)
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(active, size=min(max_users, len(active)), replace=False))
    users = np.asarray(users, dtype=np.int64)
    top = recommend_internal(model, train, users, k)                      # [U, k]
    pu, pi = recommended_pairs(users, top)
    contrib = modality_contributions(model, pu, pi, method=method, baseline=baseline)
    dom = _dominant(contrib)
    mods = {m: contrib[m] for m in model.modalities}
    mdom = _dominant(mods)
    absval = np.stack([np.abs(v) for v in contrib.values()])
    shares = absval / np.maximum(absval.sum(axis=0, keepdims=True), 1e-12)
    return {"users": len(users), "k": int(top.shape[1]),
            "method": method if method != "auto" else contribution_method(model),
            "dominant_share": {p: float((dom == p).mean()) for p in contrib},
            "modality_dominant_share": {m: float((mdom == m).mean()) for m in mods},
            "mean_abs_share": {p: float(s) for p, s in zip(contrib, shares.mean(axis=1))},
            "mean_contribution": {p: float(v.mean()) for p, v in contrib.items()}}


def explain(rec, user, k: int = 10, dims: bool = True, method: str = "auto", baseline: str = "zero") -> Explanation:
    """Explain the top-``k`` list of one external ``user`` of a fitted :class:`~prismrec.Recommender`."""
    model = rec._require_fitted()
    ds = rec.dataset
    u = int(ds.user_map.index(user))
    top = recommend_internal(model, ds.train, np.array([u]), k)[0]
    top = top[top >= 0]  # fewer than k unseen items
    users = np.full(len(top), u)
    contrib = modality_contributions(model, users, top, method=method, baseline=baseline)
    scores = sum(contrib.values())
    feats = feature_attributions(model, users, top, baseline=baseline) if dims else {}
    return Explanation(user=user, items=np.asarray(ds.item_ids)[top], scores=scores, contributions=contrib,
                       dominant=_dominant(contrib), feature_attributions=feats,
                       method=method if method != "auto" else contribution_method(model))
