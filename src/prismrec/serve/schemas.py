"""Pydantic request and response models of the serving API (one per use)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_K = 1000  # longest list one request may ask for


def _json_integer(v):
    """JSON Schema's integer is 5 or 5.0; request models are strict otherwise ("5" and true refused)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
RequestItemId = Annotated[JsonInt | str, Field(description="external item id (as in items.json)")]
ItemId = Annotated[int | str, Field(description="external item id (as in items.json)")]
IdText = Annotated[str, Field(min_length=1, max_length=256)]


class Ranked(BaseModel):
    """Items best first with their scores (inner products of the model's vectors)."""

    items: list[ItemId]
    scores: list[float]


class Recommendation(Ranked):
    """``GET /recommend``: the same fields as ``prismrec recommend --json``, plus ``fallback``."""

    user: int | str
    fallback: Literal["popular"] | None = Field(
        None, description="'popular' when the user is unknown and fallback=popular was asked: the items are "
                          "the most popular ones and the scores their training interaction counts")


class ColdStartRequest(BaseModel):
    """``POST /recommend``: a user known only by the items they liked."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "k": "5" or "items": [true] are refused
    items: list[RequestItemId] = Field(..., min_length=1, max_length=1000, description="liked item ids")
    k: JsonInt = Field(10, ge=1, le=MAX_K)


class Similar(Ranked):
    """``GET /similar``: items most similar to ``item`` (cosine of the item vectors)."""

    item: int | str


class NewItem(BaseModel):
    """``POST /items``: a new item from its raw modality features (every modality, its dimension;
    the app's OpenAPI schema names them)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: JsonInt | IdText = Field(..., description="external id; must not exist yet")
    features: dict[str, list[float]] = Field(..., description="modality -> feature vector")


class ItemRegistered(BaseModel):
    item: int | str
    n_items: int


class Explanation(BaseModel):
    """``GET /explain``: the parts of the score of one (user, item) pair."""

    user: int | str
    item: int | str
    score: float | None
    contributions: dict[str, float] = Field(
        ..., description="'id' (the behaviour/ID part) and each modality; they sum to score")


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
    bundle: str = Field(..., description="the run's name (never the server's path)")
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


class ItemInfo(BaseModel):
    """``GET /items/{item}``: what the bundle knows about an item for display."""

    item: int | str
    title: str | None = Field(None, description="from the dataset's items table, when it has one")
    image: str | None = Field(None, description="image URL: as given in the items table, or /image?item=ID "
                                                "for a local file")
    popularity: int = Field(..., description="training interactions")
    registered: bool = Field(..., description="added through POST /items")
    fields: dict[str, Any] = Field(default_factory=dict, description="the items table's other columns")


class ItemsInfo(BaseModel):
    """``GET /items``: items with their metadata, and the catalogue size."""

    items: list[ItemInfo]
    total: int


class ErrorBody(BaseModel):
    detail: str | list
