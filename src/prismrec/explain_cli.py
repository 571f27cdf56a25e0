"""``prismrec explain RUN_DIR --user ID [-k 10]``: which modality drove each recommendation."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to the prismrec CLI."""

    @app.command()
    def explain(
        run_dir: Path = typer.Argument(..., help="run directory or bundle"),
        user: str = typer.Option(..., "--user", help="external user id"),
        k: int = typer.Option(10, "-k", help="list length"),
        dims: int = typer.Option(5, "--dims", help="top feature dimensions shown per modality (0: none)"),
        method: str = typer.Option("auto", "--method", help="auto | model (the model's exact split) | occlusion"),
        baseline: str = typer.Option("zero", "--baseline", help="occluded features become: zero | mean"),
        summary: int = typer.Option(0, "--summary", help="also aggregate over this many sampled users"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ):
        """Per-modality contributions to a user's top-k scores, top feature dimensions, and optionally
        the share of recommendations each modality dominates across users."""
        from prismrec.cli import _setup_logging, run_guarded
        _setup_logging(False)
        run_guarded(_explain, run_dir, user, k, dims, method, baseline, summary, as_json)


def _explain(run_dir, user, k, dims, method, baseline, summary, as_json):
    from prismrec import Recommender
    from prismrec import explain as ex
    from prismrec.cli import _as_id, fail, format_table
    if method not in ("auto", "model", "occlusion"):
        fail(f"--method must be auto, model or occlusion, got '{method}'")
    if baseline not in ex.BASELINES:
        fail(f"--baseline must be zero or mean, got '{baseline}'")
    rec = Recommender.load(run_dir)
    uid = _as_id(user, rec.dataset.user_ids)
    if uid not in rec.dataset.user_map:
        fail(f"unknown user '{user}' (the bundle has {rec.dataset.n_users} users, e.g. "
             f"{', '.join(map(str, rec.dataset.user_ids[:3]))})")
    e = ex.explain(rec, uid, k=k, dims=dims > 0, method=method, baseline=baseline)
    parts = list(e.contributions)
    agg = ex.dominance(rec.model, rec.dataset.train, k=k, max_users=summary, method=method,
                       baseline=baseline) if summary > 0 else None
    if as_json:
        out = {"user": e.user, "method": e.method, "items": e.items.tolist(),
               "scores": e.scores.round(6).tolist(), "dominant": e.dominant.tolist(),
               "contributions": {p: v.round(6).tolist() for p, v in e.contributions.items()},
               "top_dimensions": {m: e.top_dimensions(m, dims) for m in e.feature_attributions}}
        if agg is not None:
            out["summary"] = agg
        typer.echo(json.dumps(out, default=str))
        return
    typer.echo(f"user {e.user}: top {len(e.items)} of model '{rec.model_name}'"
               f"{''.join(' +' + p for p in rec.plugins)}; contributions by {e.method}"
               f" ({'exact split' if e.method == 'model' else f'score drop when a modality is set to {baseline}'})")
    rows = [{"rank": r + 1, "item": e.items[r], "score": float(e.scores[r]),
             **{p: float(e.contributions[p][r]) for p in parts}, "dominant": e.dominant[r]}
            for r in range(len(e.items))]
    typer.echo(format_table(rows, ["rank", "item", "score", *parts, "dominant"]))
    for m, a in e.feature_attributions.items():
        if not abs(a).sum():
            typer.echo(f"{m}: the score does not depend on its features through a gradient (all 0)")
            continue
        top = ", ".join(f"{j} ({v:+.4f})" for j, v in e.top_dimensions(m, dims))
        typer.echo(f"{m} ({a.shape[1]}-d): top dimensions by mean |gradient x input|: {top}")
    if agg is not None:
        typer.echo(f"\nover {agg['users']} users' top-{agg['k']} lists:")
        typer.echo(format_table([{"part": p, "dominates": agg["dominant_share"][p],
                                  "mean |share|": agg["mean_abs_share"][p],
                                  "mean contribution": agg["mean_contribution"][p]} for p in agg["dominant_share"]],
                                ["part", "dominates", "mean |share|", "mean contribution"]))
