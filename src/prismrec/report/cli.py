"""``prismrec report RUN_DIR [RUN_DIR ...] [--out FILE]``: one self-contained HTML report."""
from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to the prismrec CLI."""

    @app.command()
    def report(
        run_dirs: list[Path] = typer.Argument(..., help="run directories (prismrec train --out) to report on"),
        out: Path | None = typer.Option(None, "--out", help="HTML file (default <run>/report.html, or "
                                           "report.html for several runs)"),
        no_attribution: bool = typer.Option(False, "--no-attribution", help="skip the modality attribution plots"),
        users: int = typer.Option(300, "--users", help="users sampled for the modality shares"),
        title: str | None = typer.Option(None, "--title", help="page title"),
    ):
        """Metrics table, training curves and modality attribution plots in one HTML file."""
        from prismrec.cli import _setup_logging, run_guarded
        from prismrec.report import build_report
        _setup_logging(False)
        path = run_guarded(build_report, run_dirs, out, attribution=not no_attribution, attribution_users=users,
                           title=title)
        typer.echo(f"wrote {path}")
