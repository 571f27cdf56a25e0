"""Serving a trained bundle over HTTP: ``prismrec serve RUN_DIR`` or, from Python::

    from prismrec.serve import ServeSettings, create_app
    app = create_app(ServeSettings(bundle="runs/vbpr"))   # a FastAPI app; run it with uvicorn

Routes: ``GET /recommend``, ``POST /recommend`` (cold-start user), ``GET /similar``,
``POST /items`` and ``POST /reload`` (admin, bearer token), ``GET /explain``, ``GET /health``,
``GET /metrics`` (Prometheus), OpenAPI docs at ``/docs`` and a web page at ``/``.
"""
__all__ = ["create_app", "ServeSettings"]


def __getattr__(name: str):  # lazy: `prismrec --help` should not import FastAPI
    if name == "create_app":
        from prismrec.serve.app import create_app
        return create_app
    if name == "ServeSettings":
        from prismrec.serve.settings import ServeSettings
        return ServeSettings
    raise AttributeError(f"module 'prismrec.serve' has no attribute '{name}'")
