"""What the browse routes and the web page show beside the scores: item popularity, titles and
images (the bundle's ``items_meta.json``, see :mod:`prismrec.data.items_meta`), helpful
unknown-user errors, and explanations whose parts add up to the score.

Popularity is derived once per :class:`~prismrec.serve.state.ServingState` and cached beside it
(weakly: a state replaced by a reload or a registration takes its cache with it).
"""
from __future__ import annotations

import json
import weakref
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch

from prismrec.data.items_meta import IMAGE_TYPES
from prismrec.explain import ID
from prismrec.serve.state import NotFound, ServingState

_popularity: "weakref.WeakKeyDictionary[ServingState, tuple[np.ndarray, np.ndarray]]" = weakref.WeakKeyDictionary()


def popularity(state: ServingState) -> tuple[np.ndarray, np.ndarray]:
    """``(counts [n_base], order)``: training interactions per bundle item and the items by
    descending count (ties: lower internal index first)."""
    cached = _popularity.get(state)
    if cached is None:
        counts = np.bincount(state.seen.indices, minlength=state.n_base)[:state.n_base]
        cached = counts, np.argsort(-counts, kind="stable")
        _popularity[state] = cached
    return cached


def popular(state: ServingState, k: int) -> tuple[list, list[float]]:
    """The ``k`` most popular bundle items (external ids) and their training interaction counts."""
    counts, order = popularity(state)
    top = order[:k]
    return state.item_external(top), counts[top].astype(float).tolist()


def _examples(state: ServingState) -> str:
    users = ", ".join(str(u) for u in state.user_map.ids[:3].tolist())
    return f"{len(state.user_map)} users known, e.g. {users} (GET /users lists them)"


def require_user(state: ServingState, user) -> int:
    """Internal index of a known user; an unknown one is a 404 that names example ids."""
    if str(user) not in state.user_map:
        raise NotFound(f"unknown user '{user}'; {_examples(state)}")
    return state.user_index(user)


def unknown_user_for_recommend(state: ServingState, user) -> NotFound:
    """The 404 of ``GET /recommend`` for an unknown user: example ids, the cold-start POST, the fallback."""
    if state.index is None:  # no item vectors: no cold-start list (POST /recommend answers 422)
        return NotFound(f"unknown user '{user}'; {_examples(state)}. Add fallback=popular to this request for "
                        f"the most popular items (model '{state.rec.model_name}' cannot recommend for a new user)")
    liked = json.dumps(popular(state, 2)[0])
    return NotFound(f"unknown user '{user}'; {_examples(state)}. For a new user, POST /recommend with the items "
                    f"they liked, e.g. {{\"items\": {liked}, \"k\": 10}}, or add fallback=popular to this request "
                    "for the most popular items")


# -- item metadata ----------------------------------------------------------------------------------
def _meta(state: ServingState) -> dict:
    meta = getattr(state.rec, "items_meta", None)
    return meta["items"] if meta else {}


def item_info(state: ServingState, idx: int) -> dict:
    """What the API shows about one item (internal index): title, image URL, popularity, fields."""
    ext = state.item_external([idx])[0]
    registered = idx >= state.n_base
    rec = {} if registered else _meta(state).get(str(ext), {})
    image = rec.get("image_url")
    if image is None and "image_file" in rec:
        image = f"/image?item={quote(str(ext), safe='')}"
    counts, _ = popularity(state)
    return {"item": ext, "title": rec.get("title"), "image": image,
            "popularity": 0 if registered else int(counts[idx]), "registered": registered,
            "fields": rec.get("fields", {})}


def image_file(state: ServingState, item) -> tuple[Path, str]:
    """(path, media type) of an item's local image file, as the bundle recorded it.

    The path comes from the bundle (written by ``prismrec train`` from the dataset's items table),
    never from the request, and only image files of the types in ``IMAGE_TYPES`` are served.
    """
    idx = state.item_index(item)
    rec = {} if idx >= state.n_base else _meta(state).get(str(state.item_external([idx])[0]), {})
    name = rec.get("image_file")
    if name is None:
        raise NotFound(f"item '{item}' has no local image" + ("; its image is at its image URL (GET /items/ID)"
                                                                if "image_url" in rec else ""))
    path = Path(name)
    kind = IMAGE_TYPES.get(path.suffix.lower())
    if kind is None or not path.is_file():
        raise NotFound(f"the image file of item '{item}' is no longer there")
    return path, kind


# -- explanations -----------------------------------------------------------------------------------
def explain_parts(state: ServingState, user, item) -> tuple[float, dict[str, float]]:
    """(score, parts) of one pair: ``"id"`` (the behaviour/ID part) and each modality; the parts
    sum to the score, as in ``prismrec explain``."""
    require_user(state, user)
    score, contributions = state.explain(user, item)
    if score is None:  # a model without item vectors: its own score of the pair
        u, i = state.user_index(user), state.item_index(item)
        with torch.no_grad():
            score = float(state.rec.model.score(torch.tensor([u]))[0, i])
    return score, {ID: score - sum(contributions.values()), **contributions}
