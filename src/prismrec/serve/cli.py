"""``prismrec serve``: run the HTTP API over a trained bundle with uvicorn."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``prismrec`` CLI."""

    @app.command()
    def serve(
        bundle: Path = typer.Argument(..., help="run directory or bundle written by `prismrec train`"),
        host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
        port: int = typer.Option(8000, help="port"),
        admin_token: Optional[str] = typer.Option(
            None, "--admin-token", envvar="PRISMREC_ADMIN_TOKEN", show_envvar=True,
            help="bearer token enabling POST /items and POST /reload (prefer the environment variable: "
                 "command lines are visible to other users)"),
        ann_threshold: int = typer.Option(50_000, help="catalogues with at least this many items use a faiss index"),
        ann_kind: str = typer.Option("hnsw", help="faiss index kind: hnsw or ivf"),
        ef_search: int = typer.Option(64, help="HNSW search beam (higher: better recall, slower)"),
        threads: int = typer.Option(1, help="torch/faiss threads per request"),
        log_level: str = typer.Option("warning", help="uvicorn log level"),
        music: Optional[Path] = typer.Option(None, "--music", help="also serve GET /music?video=ID&k=10 "
                                             "from a bundle written by `prismrec music train`"),
    ):
        """Serve recommendations over HTTP, and a web page at / (/?user=ID opens
        a user's page; without one it shows the most popular items).

        GET /recommend?user=ID&k=10: a known user's list. An unknown user is a
        404 naming the cold-start POST; &fallback=popular answers with the most
        popular items instead.

        POST /recommend {"items": \\[12, 7], "k": 10}: a new user, by liked items.

        GET /popular, /similar, /users, /history; /explain: the score's parts
        (id + each modality).

        GET /items/ID, /items?ids=1&ids=2, /image?item=ID: titles and images
        from an items.csv/.tsv/.parquet in the dataset folder, carried into the
        bundle by `prismrec train`.

        GET /health, /metrics; admin POST /items, POST /reload; docs at /docs.
        """
        from prismrec.cli import _setup_logging, fail
        from prismrec.errors import PrismrecError
        _setup_logging(False)
        try:
            import pydantic
            from prismrec.serve.settings import ServeSettings
            settings = ServeSettings(bundle=bundle, host=host, port=port, admin_token=admin_token,
                                     ann_threshold=ann_threshold, ann_kind=ann_kind, hnsw_ef_search=ef_search,
                                     torch_threads=threads, music_bundle=music)
        except pydantic.ValidationError as e:
            fail("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()))
        run(settings, log_level=log_level, guard=(PrismrecError, FileNotFoundError), fail=fail)


def run(settings, *, log_level: str = "warning", guard=(), fail=None) -> None:
    """Load the bundle and run uvicorn until interrupted."""
    import torch
    import uvicorn

    from prismrec._faiss import import_faiss
    from prismrec.serve.app import create_app
    faiss = import_faiss()
    torch.set_num_threads(settings.torch_threads)
    try:
        app = create_app(settings)
    except guard as e:
        fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    faiss.omp_set_num_threads(settings.torch_threads)  # after the build, which uses every core
    typer.echo(f"serving {settings.bundle} on http://{settings.host}:{settings.port} (docs at /docs)", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False)
