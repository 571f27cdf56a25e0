"""What one loaded bundle serves: an immutable :class:`ServingState`.

Requests read the current state once (``RecommenderDep``) and use only that object, so a reload
or a newly registered item (which build a *new* state and swap one reference) never changes a
request half-way through.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import scipy.sparse as sp
import torch

from prismrec.api import Recommender
from prismrec.data.idmap import IdMap
from prismrec.errors import BundleError, PrismrecError, UnsupportedError
from prismrec.serve.index import ItemIndex, make_searcher, normalize
from prismrec.serve.settings import ServeSettings

log = logging.getLogger("prismrec")


class Conflict(PrismrecError):
    """An item id that exists already (answered with 409)."""


class NotFound(KeyError):
    """An unknown user or item (answered with 404)."""

    def __str__(self) -> str:
        return str(self.args[0])


def run_name(bundle: str | Path) -> str:
    """The run's name (its folder's name) for display: never the server's filesystem path."""
    bundle = Path(bundle)
    return bundle.parent.name if bundle.name == "bundle" and bundle.parent.name else bundle.name


def resolve_bundle(path: str | Path) -> Path:
    """The bundle directory of a run directory or bundle path (``<run>/bundle`` when that exists)."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "bundle" / "config.json").is_file():
        return path / "bundle"
    return path


@dataclass(frozen=True)
class RegisteredItem:
    """An item added through ``POST /items``: its id and raw features (kept to re-embed on reload)."""

    id: int | str
    features: MappingProxyType


@dataclass(frozen=True, eq=False)
class ServingState:
    """A loaded bundle plus its search indexes. Never mutated: ``with_item`` returns a new state.

    Internal item indices ``0 .. n_base-1`` are the bundle's items; registered items follow.
    """

    bundle: Path
    rec: Recommender
    user_map: IdMap
    item_ids: np.ndarray  # external ids of the bundle's items, internal order
    seen: sp.csr_matrix  # training interactions [n_users, n_base]
    user_vecs: torch.Tensor | None  # [n_users, d] for dot-product models
    index: ItemIndex | None  # user -> item search (inner product)
    sim_index: ItemIndex | None  # item -> item search (cosine)
    registered: tuple[RegisteredItem, ...] = ()
    extra_lookup: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    loaded_at: float = field(default_factory=time.time)
    # modality -> the largest |value| POST /items accepts: FEATURE_RANGE x the training features' largest
    feature_limits: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: ServeSettings) -> "ServingState":
        """Load ``settings.bundle`` (safetensors + JSON only) and build the indexes."""
        bundle = resolve_bundle(settings.bundle)
        rec = Recommender.load(bundle)  # refuses pickle-based files, checks the weights
        model, ds = rec.model, rec.dataset
        model.eval()
        ds.item_map  # build the id map now, not in the first request's thread
        user_vecs = index = sim_index = None
        if model.is_dot_product:
            with model.scoring():  # the same path as Recommender.recommend: identical scores
                user_vecs, item_vecs = (t.detach().contiguous() for t in model.embeddings())
            opts = dict(threshold=settings.ann_threshold, kind=settings.ann_kind, hnsw_m=settings.hnsw_m,
                        ef_construction=settings.hnsw_ef_construction, ef_search=settings.hnsw_ef_search,
                        nlist=settings.ivf_nlist, nprobe=settings.ivf_nprobe)
            index = ItemIndex(item_vecs, make_searcher(item_vecs, **opts))
            unit = normalize(item_vecs)
            sim_index = ItemIndex(unit, make_searcher(unit, **opts))
        else:
            with torch.no_grad():
                model.prepare_scoring()  # kept for the life of this state (score() needs it)
        log.info("serving %s (%s, %d users, %d items, %s index)", bundle, rec.model_name, ds.n_users,
                 ds.n_items, index.kind if index else "model.score")
        state = cls(bundle=bundle, rec=rec, user_map=ds.user_map, item_ids=np.asarray(ds.item_ids),
                    seen=ds.train, user_vecs=user_vecs, index=index, sim_index=sim_index,
                    feature_limits=MappingProxyType(feature_limits(ds.features, rec)))
        state.self_check()
        return state

    def self_check(self) -> None:
        """Answer one request of each kind before serving: a bundle that loads must not give 5xx.

        Raises:
            BundleError: non-finite item/user vectors or scores, or a query that fails.
        """
        where = f"{self.bundle}: the model of this bundle"
        for name, t in (("user vectors", self.user_vecs), ("item vectors", self.index.base if self.index else None)):
            if t is not None and not bool(torch.isfinite(t).all()):
                raise BundleError(f"{where} gives non-finite {name}; re-create the bundle")
        users = np.unique(np.array([0, len(self.user_map) - 1]))
        try:
            for u in users:
                items, scores = self.recommend(self.user_map.external(int(u)), 10)
                n_seen = int(self.seen.indptr[u + 1] - self.seen.indptr[u])
                # non-finite scores are dropped from the list: a short list means there were some
                if not np.isfinite(scores).all() or len(items) < min(10, self.n_base - n_seen):
                    raise BundleError(f"{where} gives non-finite scores; re-create the bundle")
            if self.sim_index is not None:
                self.similar(self.item_ids[0].item(), 10)
        except (PrismrecError, NotFound):
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as e:
            raise BundleError(f"{where} fails on a first query ({type(e).__name__}: {e}); re-create the "
                              "bundle") from None

    # -- ids ------------------------------------------------------------------------------------
    @property
    def n_base(self) -> int:
        return len(self.item_ids)

    @property
    def n_items(self) -> int:
        return self.n_base + len(self.registered)

    @property
    def modalities(self) -> dict[str, int]:
        return {m: int(f.shape[1]) for m, f in self.rec.dataset.features.items()}

    def user_index(self, user) -> int:
        if str(user) not in self.user_map:
            raise NotFound(f"unknown user '{user}'")
        return int(self.user_map.index(user))

    def item_index(self, item) -> int:
        key = str(item)
        if key in self.rec.dataset.item_map:
            return int(self.rec.dataset.item_map.index(item))
        if key in self.extra_lookup:
            return self.extra_lookup[key]
        raise NotFound(f"unknown item '{item}'")

    def item_external(self, idx: np.ndarray) -> list:
        """External ids (JSON scalars) of internal item indices."""
        idx = np.asarray(idx, dtype=np.int64)
        if not len(self.registered) or (idx < self.n_base).all():
            return self.item_ids[idx].tolist()
        return [self.item_ids[i].item() if i < self.n_base else self.registered[i - self.n_base].id for i in idx]

    def history(self, user) -> list:
        u = self.user_index(user)
        return self.item_external(self.seen.indices[self.seen.indptr[u]:self.seen.indptr[u + 1]])

    # -- queries --------------------------------------------------------------------------------
    def _require_index(self, what: str) -> ItemIndex:
        if self.index is None:
            raise UnsupportedError(f"model '{self.rec.model_name}' has no item vectors, so {what} is not supported")
        return self.index

    def recommend(self, user, k: int, exclude_seen: bool = True) -> tuple[list, list[float]]:
        """Top-``k`` (external ids, scores) for a known user; same list as ``Recommender.recommend``."""
        u = self.user_index(user)
        seen = self.seen.indices[self.seen.indptr[u]:self.seen.indptr[u + 1]] if exclude_seen else None
        if self.index is None:
            return self._recommend_by_score(u, k, seen)
        idx, scores = self.index.topk(self.user_vecs[u:u + 1], k, seen)
        return self.item_external(idx), scores.tolist()

    def _recommend_by_score(self, u: int, k: int, seen) -> tuple[list, list[float]]:
        with torch.no_grad():
            scores = self.rec.model.score(torch.tensor([u])).clone()  # [1, n_items]
        if seen is not None and len(seen):
            scores[0, torch.from_numpy(seen.astype(np.int64))] = -torch.inf
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        vals, idx = top.values[0].numpy(), top.indices[0].numpy()
        ok = np.isfinite(vals)
        return self.item_external(idx[ok]), vals[ok].tolist()

    def recommend_for_items(self, items: list, k: int) -> tuple[list, list[float]]:
        """Cold-start user: the mean of the liked items' vectors as the user vector (no retraining);
        the liked items themselves are left out."""
        index = self._require_index("cold-start recommendation")
        liked = np.unique(np.array([self.item_index(i) for i in items], dtype=np.int64))
        query = index.vectors(liked).mean(dim=0, keepdim=True)  # [1, d]
        idx, scores = index.topk(query, k, liked)
        return self.item_external(idx), scores.tolist()

    def similar(self, item, k: int) -> tuple[list, list[float]]:
        """Items most similar to ``item`` by cosine of the model's item vectors (itself left out)."""
        self._require_index("item similarity")
        i = self.item_index(item)
        idx, scores = self.sim_index.topk(self.sim_index.vectors(np.array([i])), k, np.array([i]))
        return self.item_external(idx), scores.tolist()

    def explain(self, user, item) -> tuple[float | None, dict[str, float]]:
        """(score, modality -> contribution) of one pair from ``model.modality_contributions``."""
        u, i = self.user_index(user), self.item_index(item)
        model = self.rec.model
        if i >= self.n_base:
            raise UnsupportedError("explanations are available for the bundle's own items only, "
                                   f"not for registered item '{item}'")
        with torch.no_grad():
            try:
                contrib = model.modality_contributions(torch.tensor([u]), torch.tensor([i]))
            except NotImplementedError:
                contrib = None
        if not contrib:
            raise UnsupportedError(f"model '{self.rec.model_name}' does not support per-modality explanations")
        score = None
        if self.index is not None:
            score = float((self.user_vecs[u] * self.index.vectors(np.array([i]))[0]).sum())
        return score, {m: float(torch.as_tensor(v).reshape(-1)[0]) for m, v in contrib.items()}

    # -- changes (each returns a new state) -----------------------------------------------------
    def with_item(self, item_id, features: dict[str, np.ndarray]) -> "ServingState":
        """A new state in which ``item_id`` (with these raw modality features) is recommendable.

        Raises:
            Conflict: an id that exists.
            ValueError: features that do not fit (names the modality).
            UnsupportedError: the model cannot embed unseen items.
        """
        index = self._require_index("registering items")
        problem = self.rec.missing_feature_norm()
        if problem:  # named without the server's path (clients see this message)
            raise UnsupportedError(f"feature_norm.json: {problem}")
        if str(item_id) in self.rec.dataset.item_map or str(item_id) in self.extra_lookup:
            raise Conflict(f"item '{item_id}' already exists")
        feats = check_features(features, self.modalities, self.feature_limits)
        # the raw features go through the training's fitted feature_norm, then the model's content path
        vec = torch.from_numpy(self.rec.embed_items({m: f[None, :] for m, f in feats.items()}))  # [1, d]
        vec = vec.to(index.base.dtype)
        if vec.shape != (1, index.base.shape[1]):
            raise UnsupportedError(f"model '{self.rec.model_name}' embedded the item as {list(vec.shape)}, "
                                   f"expected [1, {index.base.shape[1]}]")
        limit = 1e3 * float(index.base.norm(dim=1).max().clamp_min(1.0))  # keeps every score finite
        if not torch.isfinite(vec).all() or float(vec.norm()) > limit:
            raise ValueError("these features give a non-finite or out-of-range item vector; "
                             "scale them like the training features")
        reg = RegisteredItem(item_id, MappingProxyType(feats))
        lookup = dict(self.extra_lookup)
        lookup[str(item_id)] = self.n_items
        return replace(self, index=index.with_items(vec), sim_index=self.sim_index.with_items(normalize(vec)),
                       registered=self.registered + (reg,), extra_lookup=MappingProxyType(lookup))


FEATURE_RANGE = 10.0


def feature_limits(features: dict[str, np.ndarray], rec: Recommender | None = None) -> dict[str, float]:
    """Per modality, the largest absolute value a registered item's raw features may hold:
    :data:`FEATURE_RANGE` times the raw training features' largest (at least 1). The OpenAPI schema
    states it, so that valid-looking features are never refused for their size.

    ``features`` are the bundle's (as the model reads them). For a bundle trained with
    ``feature_norm`` they are transformed, so the raw range comes from the fitted transform's
    ``input_abs_max``; a modality without it gets no limit (finite values only).
    """
    if rec is not None and rec.train_config.feature_norm != "none":
        norm = rec.feature_norm
        largest = dict(norm.input_abs_max) if norm is not None else {}
    else:
        largest = {m: float(np.abs(f).max(initial=0.0)) for m, f in features.items()}
    # a float32 number, so that a value equal to the limit stays within it once stored as float32
    return {m: float(np.float32(max(FEATURE_RANGE * v, 1.0))) for m, v in largest.items()}


def check_features(features: dict, modalities: dict[str, int],
                   limits: MappingProxyType | dict | None = None) -> dict[str, np.ndarray]:
    """Validated float32 features: every modality, the right dimension, finite values (within
    ``limits[m]`` in absolute value, where given)."""
    missing = [m for m in modalities if m not in features]
    extra = [m for m in features if m not in modalities]
    if missing or extra:
        raise ValueError(f"expected features for exactly the modalities {list(modalities)}; "
                         + (f"missing {missing}" if missing else f"unknown {extra}"))
    out = {}
    for m, d in modalities.items():
        f = np.asarray(features[m], dtype=np.float64)
        if f.ndim != 1 or len(f) != d:
            raise ValueError(f"modality '{m}' needs a vector of {d} numbers, got shape {list(f.shape)}")
        if not np.isfinite(f).all() or (np.abs(f) > np.finfo(np.float32).max).any():
            raise ValueError(f"modality '{m}' has non-finite values")
        limit = (limits or {}).get(m)
        if limit is not None and (np.abs(f) > limit).any():
            raise ValueError(f"modality '{m}' has values out of range: |value| <= {limit:g} "
                             f"({FEATURE_RANGE:g}x the training features' largest); scale them like the "
                             "training features")
        out[m] = f.astype(np.float32)
    return out


class StateHolder:
    """The current :class:`ServingState`; writers (reload, register) take a lock, readers never do."""

    def __init__(self, settings: ServeSettings, state: ServingState):
        self.settings, self.current = settings, state
        self._lock = threading.Lock()

    def reload(self) -> ServingState:
        """Load the bundle again and swap it in; registered items are re-embedded by the new model."""
        with self._lock:
            new = ServingState.load(self.settings)
            for reg in self.current.registered:
                try:
                    new = new.with_item(reg.id, dict(reg.features))
                except (ValueError, PrismrecError) as e:
                    log.warning("registered item '%s' dropped on reload: %s", reg.id, e)
            self.current = new  # one reference assignment: requests in flight keep the old state
            return new

    def register(self, item_id, features: dict) -> ServingState:
        with self._lock:
            self.current = self.current.with_item(item_id, features)
            return self.current


def load_holder(settings: ServeSettings) -> StateHolder:
    """Load the bundle named by ``settings`` (BundleError when it is not a bundle)."""
    try:
        return StateHolder(settings, ServingState.load(settings))
    except FileNotFoundError as e:
        raise BundleError(str(e)) from None
