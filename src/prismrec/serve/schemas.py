"""Pydantic request and response models of the serving API (one per use)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_K = 1000  # longest list one request may ask for
ItemId = Annotated[int | str, Field(description="external item id (as in items.json)")]
IdText = Annotated[str, Field(min_length=1, max_length=256)]


class Ranked(BaseModel):
    """Items best first with their scores (inner products of the model's vectors)."""

    items: list[ItemId]
    scores: list[float]


class Recommendation(Ranked):
    """``GET /recommend``: the same fields as ``prismrec recommend --json``."""

    user: int | str


class ColdStartRequest(BaseModel):
    """``POST /recommend``: a user known only by the items they liked."""

    model_config = ConfigDict(extra="forbid")
    items: list[ItemId] = Field(..., min_length=1, max_length=1000, description="liked item ids")
    k: int = Field(10, ge=1, le=MAX_K)


class Similar(Ranked):
    """``GET /similar``: items most similar to ``item`` (cosine of the item vectors)."""

    item: int | str


class NewItem(BaseModel):
    """``POST /items``: a new item from its raw modality features (every modality, its dimension)."""

    model_config = ConfigDict(extra="forbid")
    id: int | IdText = Field(..., description="external id; must not exist yet")
    features: dict[str, list[float]] = Field(..., description="modality -> feature vector")


class ItemRegistered(BaseModel):
    item: int | str
    n_items: int


class Explanation(BaseModel):
    """``GET /explain``: per-modality contributions to the score of one (user, item) pair."""

    user: int | str
    item: int | str
    score: float | None
    contributions: dict[str, float]


class History(BaseModel):
    user: int | str
    items: list[ItemId]


class Users(BaseModel):
    """A page of known user ids (for the web page's picker) and the total count."""

    users: list[int | str]
    total: int


class Health(BaseModel):
    status: str
    model: str
    bundle: str
    users: int
    items: int
    registered_items: int
    index: str
    modalities: dict[str, int]
    explain: bool
    cold_start_items: bool
    admin: bool
    loaded_at: float


class Reloaded(BaseModel):
    bundle: str
    items: int
    loaded_at: float


class ErrorBody(BaseModel):
    detail: str | list
