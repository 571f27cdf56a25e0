"""HTTP route for a music bundle: ``GET /music?video=ID&k=10``.

The serving app (``prismrec.serve``) mounts it with ``app.include_router(router(bundle_path))``;
nothing here depends on the recommendation app.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from prismrec.tasks.music.bundle import MusicBundle


class TrackScore(BaseModel):
    track: str
    score: float


class MusicMatches(BaseModel):
    """Ranked background tracks for one video."""

    video: str
    model: str
    tracks: list[TrackScore]
    used_track: str | None = None   # the track the video uses in the training data, when known


def router(bundle: str | Path | MusicBundle, *, max_k: int = 1000) -> APIRouter:
    """A router with ``GET /music?video=ID&k=10`` over a music bundle (path or loaded bundle).

    Args:
        bundle: a bundle directory written by ``prismrec music train`` (loaded once, here).
        max_k: the largest ``k`` accepted.
    """
    b = bundle if isinstance(bundle, MusicBundle) else MusicBundle(bundle)
    r = APIRouter(tags=["music"])

    @r.get("/music", response_model=MusicMatches, summary="Background tracks for a micro-video")
    def music(video: str = Query(..., description="external video id"),
              k: int = Query(10, ge=1, le=max_k, description="number of tracks")) -> MusicMatches:
        # plain `def`: scoring is CPU work, FastAPI runs it in a worker thread
        if video not in b.videos:
            raise HTTPException(status_code=404, detail=f"unknown video '{video}'")
        ids, scores = b.match(video, k)
        return MusicMatches(video=video, model=b.config["model"], used_track=str(b.used_track(video)),
                            tracks=[TrackScore(track=str(t), score=s) for t, s in zip(ids, scores)])

    return r
