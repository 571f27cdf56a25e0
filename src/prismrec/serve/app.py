"""The app factory: load a bundle into app state, include the routers, map errors to JSON.

Errors are JSON ``{"detail": ...}``: unknown user/item 404, bad parameters or an unsupported
operation 422, an existing item id 409; never a traceback.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from prismrec import __version__
from prismrec.errors import PrismrecError, UnsupportedError
from prismrec.serve.metrics import Metrics, MetricsMiddleware
from prismrec.serve.routes import admin, api
from prismrec.serve.settings import ServeSettings
from prismrec.serve.state import Conflict, NotFound, StateHolder, load_holder

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
                  description=f"Recommendations from the bundle `{holder.current.bundle}` "
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
    app.add_exception_handler(Exception, _internal)
    return app


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
