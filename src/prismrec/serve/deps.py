"""Typed dependencies of the serving routes.

The look-ups are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, one
thread hand-off per dependency per request for what is an attribute read.
"""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prismrec.serve.metrics import Metrics
from prismrec.serve.settings import ServeSettings
from prismrec.serve.state import ServingState, StateHolder


async def get_holder(request: Request) -> StateHolder:
    return request.app.state.holder


async def get_state(request: Request) -> ServingState:
    """The state current when the request starts; the request uses it to the end (atomic reload)."""
    return request.app.state.holder.current


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.holder.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


_bearer = HTTPBearer(auto_error=False, description="admin token (PRISMREC_ADMIN_TOKEN or --admin-token)")


def require_admin(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Admin routes: 403 when no token is configured, 401 without the right bearer token."""
    token = request.app.state.holder.settings.token()
    if token is None:
        raise HTTPException(403, "admin routes are disabled; start the server with PRISMREC_ADMIN_TOKEN "
                                 "or --admin-token")
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


RecommenderDep = Annotated[ServingState, Depends(get_state)]
HolderDep = Annotated[StateHolder, Depends(get_holder)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdminDep = Annotated[None, Depends(require_admin)]
