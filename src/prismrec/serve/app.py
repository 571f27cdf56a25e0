"""The app factory: load a bundle into app state, include the routers, map errors to JSON.

Errors are JSON ``{"detail": ...}``: unknown user/item 404, bad parameters or an unsupported
operation 422, an existing item id 409; never a traceback.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from prismrec import __version__
from prismrec.errors import PrismrecError, UnsupportedError
from prismrec.serve.metrics import Metrics, MetricsMiddleware
from prismrec.serve.routes import admin, api
from prismrec.serve.settings import ServeSettings
from prismrec.serve.state import Conflict, NotFound, StateHolder, load_holder, run_name

log = logging.getLogger("prismrec")
STATIC = Path(__file__).parent / "static"


def create_app(settings: ServeSettings | None = None, *, holder: StateHolder | None = None) -> FastAPI:
    """A FastAPI app serving the bundle named by ``settings`` (read from ``PRISMREC_*`` when None).

    Args:
        settings: where the bundle is, index and admin options.
        holder: an already loaded state (tests share one between apps); loaded from ``settings`` when None.
    """
    if holder is None:
        holder = load_holder(settings if settings is not None else ServeSettings())
    app = FastAPI(title="prismrec", version=__version__, docs_url=None, redoc_url=None,
                  description=f"Recommendations from the run `{run_name(holder.current.bundle)}` "
                              f"(model `{holder.current.rec.model_name}`).")
    app.state.holder = holder
    app.state.metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(api)
    app.include_router(admin)
    music = holder.settings.music_bundle
    if music is not None:
        from prismrec.tasks.music.serving import router as music_router
        app.include_router(music_router(music))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    _add_docs(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    for exc, status in ((NotFound, 404), (Conflict, 409), (UnsupportedError, 422), (PrismrecError, 422),
                        (ValueError, 422)):
        app.add_exception_handler(exc, _handler(status))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """The OpenAPI schema, with ``POST /items``'s ``features`` spelled out for this bundle: every
    modality required, with its exact dimension (a generic map would promise that ``{}`` is fine)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        new_item = schema.get("components", {}).get("schemas", {}).get("NewItem")
        state = app.state.holder.current
        mods, limits = state.modalities, state.feature_limits
        if new_item is not None and mods:
            new_item["properties"]["features"] = {
                "type": "object", "title": "Features", "additionalProperties": False, "required": list(mods),
                "description": "modality -> feature vector: every modality of the bundle, each of its dimension, "
                               "values within the range of the training features (10x their largest)",
                "properties": {m: {"type": "array", "minItems": d, "maxItems": d,
                                   "items": {"type": "number", **({"minimum": -limits[m], "maximum": limits[m]}
                                                                  if m in limits else {})}}
                               for m, d in mods.items()}}
        app.openapi_schema = schema
    return app.openapi_schema


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path accepts (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        for route in request.app.router.routes:  # (included routers answer for their own routes)
            if route.matches(scope)[0] == Match.FULL:
                methods |= {"GET", "HEAD"} if isinstance(route, Mount) else {method}  # static files
                break
    return sorted(methods | {"OPTIONS"}) if methods else []


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """405 with an ``Allow`` header naming all the path's methods; ``OPTIONS`` answered with 204 and
    that header; a body that is not UTF-8 a 422 like any other malformed body (FastAPI says 400)."""
    if exc.status_code == 405:
        allow = ", ".join(_allowed_methods(request))
        if request.method == "OPTIONS" and allow:
            return Response(status_code=204, headers={"Allow": allow})
        return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": allow})
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        return JSONResponse({"detail": "the request body is not valid UTF-8 JSON"}, status_code=422)
    return await http_exception_handler(request, exc)


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` from the ``swagger-ui-bundle-v2`` package's files: no CDN, so the docs
    work on a machine without internet access."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg",
                                   swagger_ui_parameters={"validatorUrl": None})


def _handler(status: int):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)
    return handle


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
