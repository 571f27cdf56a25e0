"""Serving settings: one pydantic ``BaseSettings`` class, read from ``PRISMREC_*`` environment
variables and overridden by ``prismrec serve`` options."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    """How ``prismrec serve`` runs.

    ``bundle`` has no default: the service refuses to start without one.
    ``admin_token`` (env ``PRISMREC_ADMIN_TOKEN``) enables ``POST /items`` and ``POST /reload``;
    without it those routes answer 403.
    """

    model_config = SettingsConfigDict(env_prefix="PRISMREC_", extra="forbid")

    bundle: Path
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    admin_token: SecretStr | None = None
    # Catalogues with at least this many items are searched with a faiss index; smaller ones
    # exactly by one matrix product (exact search of 50k x 64 takes well under 2 ms per query).
    ann_threshold: int = Field(50_000, ge=1)
    ann_kind: Literal["hnsw", "ivf"] = "hnsw"
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(64, ge=8)
    ivf_nlist: int = Field(1024, ge=1)
    ivf_nprobe: int = Field(64, ge=1)
    # Each request scores one query; one torch thread per request avoids oversubscription
    # (the thread pool already runs requests in parallel).
    torch_threads: int = Field(1, ge=1)
    # optional background-music bundle (`prismrec music train`): adds GET /music?video=ID&k=10
    music_bundle: Path | None = None

    @field_validator("bundle")
    @classmethod
    def _bundle_exists(cls, v: Path) -> Path:
        if not Path(v).exists():
            raise ValueError(f"bundle '{v}' does not exist; pass a run directory written by `prismrec train`")
        return Path(v)

    def token(self) -> str | None:
        """The admin token, or None when admin routes are disabled (an empty token disables them too)."""
        t = self.admin_token.get_secret_value() if self.admin_token is not None else ""
        return t or None
