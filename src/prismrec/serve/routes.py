"""The serving routes. Scoring is CPU work, so the routes that touch the model are plain ``def``
(FastAPI runs them in its thread pool, off the event loop), except ``GET /recommend``: its work is
bounded (one user's scores, or an ANN query above ``--ann-threshold`` items; well under a
millisecond on baby-like) and the thread hand-off cost more than the work itself (1.6 vs 1.3 ms of
server CPU per request in ``benchmarks/serve_load.py``), so it runs on the event loop."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, PlainTextResponse

from prismrec.models.base import Model
from prismrec.serve import catalog
from prismrec.serve import schemas as s
from prismrec.serve.deps import AdminDep, HolderDep, MetricsDep, RecommenderDep, SettingsDep
from prismrec.serve.state import run_name

UserQ = Annotated[str, Query(min_length=1, max_length=256, description="external user id")]
ItemQ = Annotated[str, Query(min_length=1, max_length=256, description="external item id")]
KQ = Annotated[int, Query(ge=1, le=s.MAX_K, description="list length")]
FallbackQ = Annotated[Literal["popular"] | None, Query(
    description="for an unknown user, answer with the most popular items (flagged by 'fallback' in the "
                "response) instead of a 404")]
NOT_FOUND = {404: {"model": s.ErrorBody, "description": "unknown user or item"}}
UNSUPPORTED = {422: {"model": s.ErrorBody, "description": "bad parameters, or the model cannot do this"}}

api = APIRouter()
admin = APIRouter(tags=["admin"], responses={401: {"model": s.ErrorBody}, 403: {"model": s.ErrorBody}})


@api.get("/health", response_model=s.Health, tags=["service"])
def health(state: RecommenderDep, settings: SettingsDep):
    """Liveness plus what the loaded bundle supports."""
    model = state.rec.model
    return s.Health(status="ok", model=state.rec.model_name, bundle=run_name(state.bundle), users=len(state.user_map),
                    items=state.n_items, registered_items=len(state.registered),
                    index=state.index.kind if state.index is not None else "model.score",
                    modalities=state.modalities,
                    explain=_overrides(model, "modality_contributions"),
                    cold_start_items=(state.index is not None and _overrides(model, "embed_items")
                                      and state.rec.missing_feature_norm() is None),
                    admin=settings.token() is not None, loaded_at=state.loaded_at)


def _overrides(model: Model, hook: str) -> bool:
    """Whether the model implements an optional hook of the contract (class or instance)."""
    return getattr(type(model), hook) is not getattr(Model, hook) or hook in vars(model)


@api.get("/metrics", response_class=PlainTextResponse, tags=["service"])
async def metrics(state: RecommenderDep, registry: MetricsDep) -> PlainTextResponse:
    """Prometheus text format: request counts, latency histogram, catalogue size."""
    text = registry.render({"prismrec_items": state.n_items, "prismrec_users": len(state.user_map),
                                       "prismrec_registered_items": len(state.registered)})
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@api.get("/users", response_model=s.Users, tags=["browse"])
def users(state: RecommenderDep, offset: Annotated[int, Query(ge=0)] = 0,
          limit: Annotated[int, Query(ge=1, le=s.MAX_K)] = 100):
    """A page of known user ids (the web page's picker)."""
    ids = state.user_map.ids
    return s.Users(users=ids[offset:offset + limit].tolist(), total=len(ids))


@api.get("/history", response_model=s.History, responses=NOT_FOUND, tags=["browse"])
def history(state: RecommenderDep, user: UserQ, limit: Annotated[int, Query(ge=1, le=s.MAX_K)] = 100):
    """The user's training items."""
    u = catalog.require_user(state, user)
    return s.History(user=state.user_map.external(u), items=state.history(user)[:limit])


@api.get("/recommend", response_model=s.Recommendation, responses=NOT_FOUND | UNSUPPORTED, tags=["recommend"])
async def recommend(state: RecommenderDep, user: UserQ, k: KQ = 10, exclude_seen: bool = True,
                    fallback: FallbackQ = None):
    """Top-k items for a known user (the same list as ``prismrec recommend``). An unknown user is a
    404 naming the cold-start ``POST /recommend``, unless ``fallback=popular``. Runs on the event
    loop (see the module docstring)."""
    if str(user) not in state.user_map:
        if fallback != "popular":
            raise catalog.unknown_user_for_recommend(state, user)
        items, scores = catalog.popular(state, k)
        return s.Recommendation(user=user, items=items, scores=scores, fallback="popular")
    items, scores = state.recommend(user, k, exclude_seen)
    return s.Recommendation(user=state.user_map.external(state.user_index(user)), items=items, scores=scores)


@api.get("/popular", response_model=s.Ranked, tags=["browse"])
async def popular(state: RecommenderDep, k: KQ = 10):
    """The most popular items (scores: training interaction counts), e.g. for a visitor not yet known."""
    items, scores = catalog.popular(state, k)
    return s.Ranked(items=items, scores=scores)


@api.post("/recommend", response_model=s.Ranked, responses=NOT_FOUND | UNSUPPORTED, tags=["recommend"])
def recommend_cold_start(state: RecommenderDep, body: s.ColdStartRequest):
    """Top-k items for a new user given the items they liked (mean of their vectors; no retraining)."""
    items, scores = state.recommend_for_items(body.items, body.k)
    return s.Ranked(items=items, scores=scores)


@api.get("/similar", response_model=s.Similar, responses=NOT_FOUND | UNSUPPORTED, tags=["recommend"])
def similar(state: RecommenderDep, item: ItemQ, k: KQ = 10):
    """Items closest to ``item`` by cosine of the model's item vectors."""
    items, scores = state.similar(item, k)
    return s.Similar(item=state.item_external([state.item_index(item)])[0], items=items, scores=scores)


@api.get("/explain", response_model=s.Explanation, responses=NOT_FOUND | UNSUPPORTED, tags=["recommend"])
def explain(state: RecommenderDep, user: UserQ, item: ItemQ):
    """The parts of the user's score of the item: ``id`` (the behaviour/ID part) and each modality,
    summing to ``score`` (models that split their scores by modality)."""
    score, contributions = catalog.explain_parts(state, user, item)
    return s.Explanation(user=state.user_map.external(state.user_index(user)),
                         item=state.item_external([state.item_index(item)])[0], score=score,
                         contributions=contributions)


@api.get("/items", response_model=s.ItemsInfo, responses=NOT_FOUND, tags=["browse"])
def items_info(state: RecommenderDep,
               ids: Annotated[list[s.IdText] | None, Query(max_length=s.MAX_K, description=(
                   "item ids (repeat: ids=1&ids=2); without them, a page in catalogue order"))] = None,
               offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=s.MAX_K)] = 100):
    """Titles, images, popularity and other metadata of items (from the dataset's items table)."""
    if ids is None:
        idx = range(offset, min(offset + limit, state.n_items))
    else:
        idx = [state.item_index(i) for i in ids]
    return s.ItemsInfo(items=[catalog.item_info(state, i) for i in idx], total=state.n_items)


@api.get("/items/{item}", response_model=s.ItemInfo, responses=NOT_FOUND, tags=["browse"])
def item_info(state: RecommenderDep, item: str):
    """Title, image, popularity and other metadata of one item."""
    return catalog.item_info(state, state.item_index(item))


@api.get("/image", response_class=FileResponse, responses=NOT_FOUND | {200: {"content": {"image/*": {}}}},
         tags=["browse"])
def image(state: RecommenderDep, item: ItemQ):
    """The item's local image file named by the dataset's items table (URLs are given by ``/items``)."""
    path, kind = catalog.image_file(state, item)
    return FileResponse(path, media_type=kind, headers={"X-Content-Type-Options": "nosniff",
                                                        "Cache-Control": "max-age=3600"})


@admin.post("/items", response_model=s.ItemRegistered, status_code=201,
            responses={409: {"model": s.ErrorBody}} | UNSUPPORTED)
def register_item(_: AdminDep, holder: HolderDep, body: s.NewItem):
    """Register a new item from its modality features; it is recommendable at once."""
    state = holder.register(body.id, body.features)
    return s.ItemRegistered(item=body.id, n_items=state.n_items)


@admin.post("/reload", response_model=s.Reloaded)
def reload(_: AdminDep, holder: HolderDep):
    """Load the bundle again (after retraining) and swap it in atomically."""
    state = holder.reload()
    return s.Reloaded(bundle=run_name(state.bundle), items=state.n_items, loaded_at=state.loaded_at)
