"""The ``prismrec`` command line: a thin layer over the Python API."""
from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from prismrec.errors import PrismrecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="prismrec: train, evaluate, explain and serve multimodal recommenders.")
datasets_app = typer.Typer(no_args_is_help=True, help="Create and inspect datasets.")
app.add_typer(datasets_app, name="datasets")
log = logging.getLogger("prismrec")

# Sub-commands that live beside their feature (serve, extract, music, report, tune, ...): each such
# module defines register(app). Listed here so that `prismrec --help` shows them all.
PLUGGED_COMMANDS = ("prismrec.serve.cli", "prismrec.features.cli", "prismrec.tasks.music.cli",
                    "prismrec.report.cli", "prismrec.train.tune_cli", "prismrec.explain_cli")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("prismrec").setLevel(logging.DEBUG if verbose else logging.INFO)


def fail(msg: str) -> None:
    """Print a one-line error and exit 2 (no traceback for expected errors)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def run_guarded(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (PrismrecError, KeyError, FileNotFoundError) as e:
        # KeyError quotes its message: show the message itself
        fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))


def _collect_config(config: Optional[Path], sets: List[str]) -> dict:
    from prismrec.config import load_yaml, parse_overrides
    values = load_yaml(config) if config else {}
    values.update(parse_overrides(sets or []))
    return values


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table (also valid markdown)."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) if cells else len(c) for j, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


# ------------------------------------------------------------------------------------------------
@app.command()
def models():
    """List the registered models with one-line descriptions."""
    from prismrec.models import registered_models
    for name, cls in registered_models().items():
        tag = "multimodal" if cls.uses_features else "ID only"
        typer.echo(f"{name:<12} {tag:<11} {cls.description}")


@app.command()
def train(
    data: str = typer.Option(..., "--data", help="dataset: MMRec folder, generic CSV/Parquet folder or file, "
                             "or 'synthetic'"),
    model: str = typer.Option(..., "--model", help="model name (see `prismrec models`)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of training and model keys"),
    set_: List[str] = typer.Option([], "--set", help="override a config key: --set epochs=5 (repeatable)"),
    plugin: List[str] = typer.Option([], "--plugin", help="wrap the model with a plug-in (befa, erl)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<data>-<model>)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run directory's last checkpoint"),
    distributed: bool = typer.Option(False, "--distributed", help="data-parallel training under torchrun"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
):
    """Train a model (early stopping on validation Recall@20) and write a bundle into the run directory."""
    _setup_logging(False)
    values = run_guarded(_collect_config, config, set_)
    run_guarded(_train, data, model, values, plugin, out, resume, distributed, quiet)


def _train(data, model, values, plugins, out, resume, distributed, quiet):
    from prismrec import Recommender, load_dataset
    world = os.environ.get("WORLD_SIZE", "1")
    if not distributed and world not in ("", "1"):  # N independent runs writing one folder otherwise
        raise PrismrecError(f"this process is one of {world} started by torchrun (WORLD_SIZE={world}), but "
                            "--distributed is not set: each process would train its own model and all would "
                            "write the same run folder; add --distributed, or run without torchrun")
    rec = Recommender(model, plugins=plugins, **values)
    ds = load_dataset(data)
    out = out or Path("runs") / f"{Path(str(data)).name}-{model}{''.join('+' + p for p in plugins)}"
    dist = None
    if distributed:
        from prismrec.train.distributed import DistContext
        dist = DistContext.from_env()
    rec.fit(ds, run_dir=out, resume=resume, show_progress=not quiet, dist=dist, data_path=str(data))
    if dist is None or dist.rank == 0:
        m = rec.metrics
        typer.echo(f"best epoch {m['best_epoch']} of {m['epochs']}; {m['sec_per_epoch']:.2f} s/epoch; "
                   f"bundle in {out}")
        typer.echo(format_table([{"split": s, **{k: m[s].get(k, float('nan')) for k in
                                                 ('recall@10', 'recall@20', 'ndcg@10', 'ndcg@20')}}
                                 for s in ("valid", "test") if m.get(s)],
                                ["split", "recall@10", "recall@20", "ndcg@10", "ndcg@20"]))
    if dist is not None:
        dist.close()


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="run directory or bundle"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset (default: the one the run was trained on)"),
    k: List[int] = typer.Option([5, 10, 20, 50], "-k", help="cut-offs (repeatable)"),
    mask_valid: bool = typer.Option(False, "--mask-valid", help="also mask validation items when ranking for test"),
):
    """Evaluate a trained bundle by masked full ranking on valid and test."""
    _setup_logging(False)
    run_guarded(_evaluate, run_dir, data, k, mask_valid)


def _evaluate(run_dir, data, ks, mask_valid):
    from prismrec import Recommender, load_dataset
    from prismrec import evaluate as ev
    rec = Recommender.load(run_dir)
    path = data or rec.bundle_config.get("data_path")
    if not path:
        fail("the bundle does not record its dataset; pass --data")
    res = ev(rec, load_dataset(path), ks=tuple(sorted(ks)), mask_valid_in_test=mask_valid)
    cols = [f"{m}@{kk}" for m in ("recall", "ndcg", "precision", "map", "hit") for kk in sorted(ks)]
    typer.echo(format_table([{"split": s, **res[s]} for s in res], ["split", *cols]))


@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="run directory or bundle"),
    user: List[str] = typer.Option(..., "--user", help="external user id (repeatable)"),
    k: int = typer.Option(10, "-k", help="list length"),
    include_seen: bool = typer.Option(False, "--include-seen", help="do not drop the user's training items"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Top-k items for users (external ids in and out)."""
    run_guarded(_recommend, run_dir, user, k, include_seen, as_json)


def _recommend(run_dir, users, k, include_seen, as_json):
    from prismrec import Recommender
    rec = Recommender.load(run_dir)
    users = [_as_id(u, rec.dataset.user_ids) for u in users]
    out = []
    for u in users:
        ids, scores = rec.recommend(u, k=k, exclude_seen=not include_seen)
        out.append({"user": u, "items": ids.tolist(), "scores": [round(float(s), 6) for s in scores]})
    if as_json:
        typer.echo(json.dumps(out if len(out) > 1 else out[0]))
        return
    for o in out:
        typer.echo(f"user {o['user']}:")
        for r, (i, s) in enumerate(zip(o["items"], o["scores"]), 1):
            typer.echo(f"  {r:>3}. item {i}  score {s:.4f}")


def _as_id(value: str, ids):
    """Command-line ids are strings; match the id map's type."""
    import numpy as np
    if np.issubdtype(np.asarray(ids).dtype, np.integer):
        try:
            return int(value)
        except ValueError:
            fail(f"unknown user '{value}'")
    return value


@app.command()
def demo(
    epochs: int = typer.Option(40, help="epochs per model (early stopping may stop sooner)"),
    out: Path = typer.Option(Path("runs/demo"), help="where the demo's runs go"),
):
    """Synthetic data -> train BPR, LightGCN and VBPR -> print a metrics table (about a minute)."""
    _setup_logging(False)
    logging.getLogger("prismrec").setLevel(logging.WARNING)
    from prismrec import Recommender, make_synthetic
    ds = make_synthetic()
    info = ds.info()
    typer.echo(f"synthetic data: {info['users']} users, {info['items']} items, {info['interactions']} "
               f"interactions, modalities {info['modalities']}")
    rows = []
    for name in ("pop", "bpr", "lightgcn", "vbpr"):
        rec = Recommender(name, epochs=epochs, patience=10).fit(ds, run_dir=out / name, show_progress=True)
        m = rec.metrics
        rows.append({"model": name, "best_epoch": m["best_epoch"], "s/epoch": m["sec_per_epoch"],
                     **{k: m["test"][k] for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")}})
    typer.echo(format_table(rows, ["model", "best_epoch", "s/epoch", "recall@10", "recall@20", "ndcg@10",
                                   "ndcg@20"]))
    typer.echo(f"bundles in {out}/<model>; try: prismrec recommend {out}/vbpr --user 0")


@app.command()
def compare(
    data: str = typer.Option(..., "--data", help="dataset path or 'synthetic'"),
    models_: str = typer.Option(..., "--models", help="comma-separated model names, e.g. bpr,lightgcn,freedom"),
    set_: List[str] = typer.Option([], "--set", help="config override applied to every model"),
    out: Path = typer.Option(Path("runs/compare"), "--out", help="directory for runs and the table"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
):
    """Train several models with the same protocol; print and write a comparison table (CSV + markdown)."""
    _setup_logging(False)
    run_guarded(_compare, data, models_, set_, out, quiet)


def _compare(data, models_csv, sets, out, quiet):
    import csv
    from prismrec import Recommender, load_dataset
    from prismrec.config import parse_overrides
    from prismrec.bundle import write_json
    names = [m.strip() for m in models_csv.split(",") if m.strip()]
    values = parse_overrides(sets)
    recs = [Recommender(n, **values) for n in names]  # validate every name/key before training
    ds = load_dataset(data)
    rows = []
    for name, rec in zip(names, recs):
        rec.fit(ds, run_dir=out / name, show_progress=not quiet, data_path=str(data))
        m = rec.metrics
        rows.append({"model": name, "best_epoch": m["best_epoch"], "sec_per_epoch": round(m["sec_per_epoch"], 3),
                     **{k: round(m["test"].get(k, float("nan")), 4) for k in
                        ("recall@10", "recall@20", "ndcg@10", "ndcg@20")}})
    cols = ["model", "best_epoch", "sec_per_epoch", "recall@10", "recall@20", "ndcg@10", "ndcg@20"]
    table = format_table(rows, cols)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    with open(out / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    write_json(out / "comparison.json", rows)
    typer.echo(table)
    typer.echo(f"written {out / 'comparison.csv'} and {out / 'comparison.md'}")


# ------------------------------------------------------------------------------------------------
@datasets_app.command("synth")
def datasets_synth(
    out: Path = typer.Option(..., "--out", help="output folder (its name is the dataset name)"),
    like: Optional[str] = typer.Option(None, "--like", help="'baby': the reference benchmark set baby-like, "
                                       "Amazon Baby's shape (19,445 users, 7,050 items, 160,792 interactions, "
                                       "4096-d image + 384-d text features, ~10 s); the same files as the "
                                       "project's reference generator for the same sizes and seed"),
    users: Optional[int] = typer.Option(None, help="number of users (default 2000; 19445 with --like baby)"),
    items: Optional[int] = typer.Option(None, help="number of items (default 1000; 7050 with --like baby)"),
    interactions: Optional[int] = typer.Option(None, help="total interactions, with --like baby only "
                                               "(default 160792)"),
    per_user: float = typer.Option(None, help="mean interactions per user, at least 5 "
                                              "(default 12 for mmrec, 15 for microvideo); not with --like"),
    seed: int = typer.Option(0, help="random seed"),
    fmt: str = typer.Option("mmrec", "--format", help="'mmrec': planted-signal image/text set in MMRec "
                            "format; 'microvideo': visual/acoustic/textual set in the micro-video format, "
                            "one modality pure noise for a known subset of items (noise_items.json)"),
):
    """Write a synthetic planted-signal dataset (MMRec or micro-video format, or baby-like with --like baby).

    The reference benchmark dataset: prismrec datasets synth --like baby --out data/baby-like
    """
    _setup_logging(False)
    if like is not None:
        if like != "baby":
            raise typer.BadParameter(f"expected 'baby', got {like!r}", param_hint="--like")
        if per_user is not None or fmt != "mmrec":
            raise typer.BadParameter("--like baby sets its own shape: use --users/--items/--interactions",
                                     param_hint="--per-user/--format")
        from prismrec.data.baby_like import BabyLikeShape, write_baby_like
        d = BabyLikeShape()
        shape = BabyLikeShape(users=users or d.users, items=items or d.items,
                              interactions=interactions or d.interactions, seed=seed)
        info = run_guarded(write_baby_like, out, shape)
        typer.echo(f"wrote {out}: {json.dumps(info)}")
        return
    if interactions is not None:
        raise typer.BadParameter("--interactions goes with --like baby; use --per-user here",
                                 param_hint="--interactions")
    users, items = users or 2000, items or 1000
    if fmt == "mmrec":
        from prismrec.data import make_synthetic, save_mmrec
        ds = run_guarded(make_synthetic, users, items, per_user or 12.0, seed=seed, name=out.name)
        run_guarded(save_mmrec, ds, out)
    elif fmt == "microvideo":
        from prismrec.data.microvideo import make_microvideo, save_microvideo
        ds, noise = run_guarded(make_microvideo, users, items, per_user or 15.0, seed=seed, name=out.name)
        run_guarded(save_microvideo, ds, out, noise)
    else:
        raise typer.BadParameter(f"expected 'mmrec' or 'microvideo', got {fmt!r}", param_hint="--format")
    typer.echo(f"wrote {out}: {json.dumps(ds.info())}")


@datasets_app.command("info")
def datasets_info(path: str = typer.Argument(..., help="dataset path")):
    """Users, items, interactions, density, per-split counts, modalities and their dimensions."""
    from prismrec.data import load_dataset
    ds = run_guarded(load_dataset, path)
    i = ds.info()
    typer.echo(f"dataset      {i['name']}\nusers        {i['users']}\nitems        {i['items']}\n"
               f"interactions {i['interactions']}\ndensity      {i['density']:.6f}")
    for s, n in i["splits"].items():
        typer.echo(f"{s:<12} {n}")
    disk = ds.provenance.get("feature_dtypes", {})
    for m, d in i["modalities"].items():
        cast = f", {disk[m]} on disk → float32" if disk.get(m, "float32") != "float32" else ""
        typer.echo(f"modality     {m} ({d}-d{cast})")
    if not i["modalities"]:
        typer.echo("modality     (none)")
    if ds.provenance.get("format"):
        layout = ds.provenance.get("layout") or ds.provenance.get("split")
        typer.echo(f"format       {ds.provenance['format']}{f' ({layout})' if layout else ''}")
    if ds.item_meta is not None:
        typer.echo(f"item meta    {', '.join(c for c in ds.item_meta.columns if c != 'item')}")


for _mod in PLUGGED_COMMANDS:
    try:
        importlib.import_module(_mod).register(app)
    except ModuleNotFoundError as _e:
        if _e.name != _mod:
            raise


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
