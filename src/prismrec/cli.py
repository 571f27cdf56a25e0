"""The ``prismrec`` command line: a thin layer over the Python API."""
from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from prismrec.errors import PrismrecError

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=HELP_OPTIONS,
                  help="prismrec: train, evaluate, explain and serve multimodal recommenders.")
datasets_app = typer.Typer(no_args_is_help=True, context_settings=HELP_OPTIONS,
                           help="Create and inspect datasets.")
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


def _version(value: bool) -> None:
    if value:
        from prismrec import __version__
        typer.echo(f"prismrec {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    """prismrec: train, evaluate, explain and serve multimodal recommenders."""


# ------------------------------------------------------------------------------------------------
@app.command()
def models():
    """List the registered models with one-line descriptions."""
    listing = _static_model_list()
    if listing is None:  # a model file the static reading does not understand: import them all
        from prismrec.models import registered_models
        listing = [(n, c.uses_features, c.description) for n, c in registered_models().items()]
    for name, uses_features, description in listing:
        tag = "multimodal" if uses_features else "ID only"
        typer.echo(f"{name:<12} {tag:<11} {description}")


def _static_model_list() -> list[tuple[str, bool, str]] | None:
    """``(name, uses_features, description)`` of the built-in models, read from their source files
    without importing them (importing the models imports torch: ~1.5 s before anything prints).

    Reads each ``@register``-decorated class's literal name (the decorator's argument or the
    ``name`` attribute), ``description`` and ``uses_features`` (inherited from a base class of
    the models package where not set). Returns
    ``None`` when a file holds anything else for these (the caller then imports the registry);
    ``tests/test_cli.py`` checks the result against the registry.
    """
    import ast
    folder = Path(__file__).parent / "models"
    classes: dict[str, tuple[list[str], dict, bool]] = {}  # class -> (bases, literal attributes, registered)
    for f in sorted(folder.glob("*.py")):
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (OSError, SyntaxError):
            return None
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            attrs = {}
            for stmt in node.body:
                target = (stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else
                          stmt.target if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else None)
                if isinstance(target, ast.Name) and target.id in ("name", "description", "uses_features"):
                    try:
                        attrs[target.id] = ast.literal_eval(stmt.value)
                    except ValueError:
                        return None
            bases = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "?"
                     for b in node.bases]
            registered = False
            for d in node.decorator_list:  # @register, or @register("name") which names the class
                fn = d.func if isinstance(d, ast.Call) else d
                if (fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)) != "register":
                    continue
                registered = True
                if isinstance(d, ast.Call):
                    if len(d.args) != 1 or not isinstance(d.args[0], ast.Constant):
                        return None
                    attrs["name"] = d.args[0].value
            classes[node.name] = (bases, attrs, registered)

    def lookup(cls: str, key: str, seen=()):
        if cls not in classes or cls in seen:
            return None
        bases, attrs, _ = classes[cls]
        if key in attrs:
            return attrs[key]
        for b in bases:
            v = lookup(b, key, (*seen, cls))
            if v is not None:
                return v
        return None
    out = []
    for cls, (_, _, registered) in classes.items():
        if not registered:
            continue
        name, desc, feats = (lookup(cls, k) for k in ("name", "description", "uses_features"))
        if not isinstance(name, str) or not isinstance(desc, str) or not isinstance(feats, (bool, type(None))):
            return None
        out.append((name, bool(feats), desc))
    return sorted(out) or None


@app.command()
def train(
    data: str = typer.Option(..., "--data", help="dataset: MMRec folder, generic CSV/Parquet folder or file, "
                             "or 'synthetic'"),
    model: str = typer.Option(..., "--model", help="model name (see `prismrec models`)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of training and model keys"),
    set_: List[str] = typer.Option([], "--set", help="override a config key: --set epochs=5 (repeatable)"),
    plugin: List[str] = typer.Option([], "--plugin", help="wrap the model with a plug-in (befa, erl)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<data>-<model>)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run directory's last checkpoint "
                                "(with its settings; see --allow-config-change)"),
    allow_config_change: List[str] = typer.Option(
        [], "--allow-config-change", metavar="KEY[,KEY]",
        help="with --resume: config keys meant to differ from the checkpoint's, e.g. epochs,learning_rate"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run already in --out (its bundle, "
                                   "checkpoint and logs are deleted first)"),
    distributed: bool = typer.Option(False, "--distributed", help="data-parallel training under torchrun"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.0, help="time budget: stop after "
                                                "this many minutes, keep the best epoch (resumable)"),
    device: Optional[str] = typer.Option(None, "--device", metavar="cpu|cuda|cuda:N",
                                         help="where to train (same as --set device=...; default cpu): a CUDA "
                                         "GPU needs a CUDA build of torch; the bundle is written for the CPU"),
):
    """Train a model (early stopping on the validation metric, Recall@20 by default) and write a bundle
    into the run directory.

    Ctrl-C (or SIGTERM, as a batch scheduler sends at its time limit) stops at the next batch: the
    bundle of the best epoch so far is written (marked interrupted in metrics.json), the command to
    continue with --resume is printed, and the exit code is 130 (143 after SIGTERM). The run
    directory also gets train.log: the command line, the prismrec version and one line per epoch.
    """
    _setup_logging(False)
    values = run_guarded(_collect_config, config, set_)
    if device is not None:
        values["device"] = device
    if max_minutes is not None and max_minutes <= 0:
        raise typer.BadParameter(f"must be > 0, got {max_minutes}", param_hint="--max-minutes")
    allowed = [k.strip() for a in allow_config_change for k in a.split(",") if k.strip()]
    run_guarded(_train, data, model, values, plugin, out, resume, distributed, quiet, max_minutes,
                overwrite=overwrite, allow_config_change=allowed)


def _resume_command() -> str:
    """This process's command line with ``--resume`` (once), shell-quoted, to print after a stop."""
    import shlex
    args = list(sys.argv[1:])
    if "--resume" not in args:
        args.append("--resume")
    return " ".join(shlex.quote(a) for a in ["prismrec", *args])


def _train(data, model, values, plugins, out, resume, distributed, quiet, max_minutes=None, *,
           overwrite=False, allow_config_change=()):
    from prismrec.api import TrainingInterrupted
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
    from prismrec.train.rundir import prepare_run_dir
    # the folder is checked (and with --overwrite cleared) before train.log is opened in it
    prepare_run_dir(out, resume=resume, overwrite=overwrite, allow_config_change=allow_config_change,
                    is_main=dist is None or dist.rank == 0)
    try:
        with run_log(out, enabled=dist is None or dist.rank == 0):
            rec.fit(ds, run_dir=out, resume=resume, show_progress=not quiet, dist=dist, data_path=str(data),
                    max_minutes=max_minutes, allow_config_change=allow_config_change)
    except TrainingInterrupted as e:
        if e.run_dir is None:
            typer.secho("interrupted before the first epoch finished: no bundle written", err=True,
                        fg=typer.colors.YELLOW)
        else:
            m = e.recommender.metrics
            typer.secho(f"interrupted after {m['epochs']} epoch(s): bundle of the best epoch so far "
                        f"({m['best_epoch']}, valid {_valid_text(rec)}) written to {out} (marked interrupted)",
                        err=True, fg=typer.colors.YELLOW)
        if (out / "checkpoint.safetensors").is_file():
            typer.secho(f"continue with: {_resume_command()}", err=True)
        raise typer.Exit(128 + e.signal)  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM
    if dist is None or dist.rank == 0:
        m = rec.metrics
        if m.get("stop_reason") == "time_budget":
            typer.secho(f"stopped: the --max-minutes {max_minutes:g} budget was used up after {m['epochs']} "
                        f"epoch(s); kept best epoch {m['best_epoch']}"
                        + (f"; continue with: {_resume_command()}" if rec.train_config.checkpoint else ""),
                        err=True, fg=typer.colors.YELLOW)
        typer.echo((f"best epoch {m['best_epoch']} of {m['epochs']}; {m['sec_per_epoch']:.2f} s/epoch; "
                    if rec.model_cls.trainable else f"no training ({rec.model_name} is built, not trained); ")
                   + f"bundle in {out}")
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
    as_json: bool = typer.Option(False, "--json", help="print {split: {metric@k: value}} as JSON"),
):
    """Evaluate a trained bundle by masked full ranking on valid and test: one row per metric@K,
    one column per split."""
    _setup_logging(False)
    run_guarded(_evaluate, run_dir, data, k, mask_valid, as_json)


def _evaluate(run_dir, data, ks, mask_valid, as_json=False):
    from prismrec import Recommender, load_dataset
    from prismrec import evaluate as ev
    rec = Recommender.load(run_dir)
    path = data or rec.bundle_config.get("data_path")
    if not path:
        fail("the bundle does not record its dataset; pass --data")
    res = ev(rec, load_dataset(path), ks=tuple(sorted(set(ks))), mask_valid_in_test=mask_valid)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    names = [f"{m}@{kk}" for m in ("recall", "ndcg", "precision", "map", "hit") for kk in sorted(set(ks))]
    splits = list(res)
    typer.echo(format_table([{"metric": n, **{s: res[s].get(n, float("nan")) for s in splits}} for n in names],
                            ["metric", *splits]))


@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="run directory or bundle"),
    user: List[str] = typer.Option([], "--user", help="external user id (repeatable)"),
    all_users: bool = typer.Option(False, "--all", help="every user of the bundle (needs --out)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the lists to FILE (.csv, .tsv or .jsonl) "
                                       "instead of printing them"),
    k: int = typer.Option(10, "-k", min=1, help="list length"),
    exclude: str = typer.Option("train", "--exclude", help="items never recommended to a user: 'train' (their "
                                "training items), 'all-seen' (also their validation and test items; reads "
                                "the dataset, see --data) or 'none'"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset for --exclude all-seen (default: the "
                                       "one the bundle was trained on)"),
    include_seen: bool = typer.Option(False, "--include-seen", help="same as --exclude none"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Top-k items for users (external ids in and out), or for every user into a file (--all --out)."""
    _setup_logging(False)
    if exclude not in ("train", "all-seen", "none"):
        raise typer.BadParameter(f"expected train, all-seen or none, got {exclude!r}", param_hint="--exclude")
    if all_users == bool(user):
        fail("give --user ID (repeatable) or --all")
    if all_users and out is None:
        fail("--all writes every user's list to a file: add --out FILE (.csv, .tsv or .jsonl)")
    if out is not None and out.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        fail(f"--out {out}: expected a .csv, .tsv or .jsonl file")
    run_guarded(_recommend, run_dir, user, all_users, out, k, "none" if include_seen else exclude, data, as_json)


def _recommend(run_dir, users, all_users, out, k, exclude, data, as_json):
    import time
    import numpy as np
    from prismrec import Recommender
    rec = Recommender.load(run_dir)
    ids = rec.dataset.user_ids
    users = ids if all_users else [_as_id(u, ids) for u in users]
    extra = _seen_elsewhere(rec, data) if exclude == "all-seen" else None
    t0 = time.perf_counter()
    items, scores = rec.recommend(np.asarray(users), k=k, exclude_seen=exclude != "none", exclude=extra)
    if out is not None:
        _write_lists(out, np.asarray(users), items, scores)
        typer.echo(f"wrote top-{items.shape[1]} lists of {len(users)} users to {out} "
                   f"({time.perf_counter() - t0:.1f} s)")
        return
    rows = [{"user": u, "items": i.tolist(), "scores": [round(float(x), 6) for x in sc]}
            for u, i, sc in zip(np.asarray(users).tolist(), items, scores)]
    if as_json:
        typer.echo(json.dumps(rows if len(rows) > 1 else rows[0]))
        return
    for o in rows:
        typer.echo(f"user {o['user']}:")
        for r, (i, sc) in enumerate(zip(o["items"], o["scores"]), 1):
            typer.echo(f"  {r:>3}. item {i}  score {sc:.4f}")


def _seen_elsewhere(rec, data):
    """The validation and test items of every user (CSR over the bundle's internal indices), from
    the dataset the bundle was trained on."""
    import numpy as np
    from prismrec import load_dataset
    path = data or rec.bundle_config.get("data_path")
    if not path:
        fail("--exclude all-seen needs the dataset's validation and test items, and the bundle does not "
             "record its dataset: pass --data")
    ds = load_dataset(path)
    if not (np.array_equal(ds.user_ids.astype(str), np.asarray(rec.dataset.user_ids).astype(str))
            and np.array_equal(ds.item_ids.astype(str), np.asarray(rec.dataset.item_ids).astype(str))):
        fail(f"{path}: its users/items are not the ones the bundle was trained on; pass the training "
             "dataset with --data")
    return (ds.valid + ds.test).tocsr()


def _write_lists(out: Path, users, items, scores) -> None:
    """Top-k lists as rows ``user, rank, item, score`` (.csv/.tsv) or one JSON object per user
    (.jsonl); written to a temporary file and renamed, so a failed run leaves no partial file."""
    import numpy as np
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        if out.suffix.lower() == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                for u, i, sc in zip(users.tolist(), items.tolist(), np.round(scores.astype(float), 6).tolist()):
                    f.write(json.dumps({"user": u, "items": i, "scores": sc}) + "\n")
        else:
            import pandas as pd
            k = items.shape[1]
            pd.DataFrame({"user": np.repeat(users, k), "rank": np.tile(np.arange(1, k + 1), len(users)),
                          "item": items.reshape(-1), "score": scores.reshape(-1)}).to_csv(
                tmp, sep="\t" if out.suffix.lower() == ".tsv" else ",", index=False, float_format="%.6g")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _valid_text(rec) -> str:
    metric = rec.train_config.valid_metric
    v = (rec.metrics.get("valid") or {}).get(metric)
    return f"{metric} {v:.4f}" if isinstance(v, float) else metric


class _RunLogHandler(logging.FileHandler):
    """``train.log``: opened at the first record (after the run folder was checked), and then
    headed by the command line, the prismrec version and the time."""

    def _open(self):
        import platform
        import time

        import torch

        from prismrec import __version__
        from prismrec.models.layers import precision_summary
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        stream = super()._open()
        stream.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  prismrec {__version__}, Python "
                     f"{platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs "
                     f"({precision_summary()})\n# command: {_command_line()}\n")
        return stream


class _RunLogFormatter(logging.Formatter):
    """``time message``; warnings and errors name their level."""

    def format(self, record):
        record.tag = f"{record.levelname} " if record.levelno >= logging.WARNING else ""
        return super().format(record)


@contextlib.contextmanager
def run_log(run_dir: Path | None, enabled: bool = True):
    """Append a human-readable ``train.log`` to ``run_dir`` while the block runs: a header with the
    command line, the prismrec version and the time, then prismrec's log lines (one per epoch)."""
    if run_dir is None or not enabled:
        yield
        return
    handler = _RunLogHandler(Path(run_dir) / "train.log", encoding="utf-8", delay=True)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(_RunLogFormatter("%(asctime)s %(tag)s%(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("prismrec")
    level = logger.getEffectiveLevel()
    # the epoch lines are DEBUG while a progress bar shows them: keep them in the file, and keep the
    # terminal's handlers at the level they had
    quiet_handlers = [h for h in logging.getLogger().handlers + logger.handlers if h.level == logging.NOTSET]
    for h in quiet_handlers:
        h.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        for h in quiet_handlers:
            h.setLevel(logging.NOTSET)
        handler.close()


def _command_line() -> str:
    import shlex
    return " ".join(shlex.quote(a) for a in ["prismrec", *sys.argv[1:]])


def _as_id(value: str, ids):
    """Command-line ids are strings; match the id map's type."""
    import numpy as np
    if np.issubdtype(np.asarray(ids).dtype, np.integer):
        try:
            return int(value)
        except ValueError:
            from prismrec.api import unknown_hint
            fail(f"unknown user '{value}'; {unknown_hint(ids, 'user')}")
    return value


@app.command()
def demo(
    epochs: int = typer.Option(40, help="epochs per model (early stopping may stop sooner)"),
    out: Path = typer.Option(Path("runs/demo"), help="where the demo's runs go"),
):
    """Synthetic data -> train BPR, LightGCN and VBPR -> print a metrics table (about a minute).

    Running it again replaces the demo's own runs (<out>/pop, bpr, lightgcn, vbpr)."""
    _setup_logging(False)
    logging.getLogger("prismrec").setLevel(logging.WARNING)
    from prismrec import Recommender, make_synthetic
    ds = make_synthetic()
    info = ds.info()
    typer.echo(f"synthetic data: {info['users']} users, {info['items']} items, {info['interactions']} "
               f"interactions, modalities {info['modalities']}")
    rows = []
    for name in ("pop", "bpr", "lightgcn", "vbpr"):
        rec = Recommender(name, epochs=epochs, patience=10).fit(ds, run_dir=out / name, show_progress=True,
                                                                overwrite=True)  # the demo's own folders
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
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of training and model keys for "
                                          "every model"),
    set_: List[str] = typer.Option([], "--set", help="config override applied to every model"),
    plugin: List[str] = typer.Option([], "--plugin", help="wrap every model with a plug-in (befa, erl)"),
    out: Path = typer.Option(Path("runs/compare"), "--out", help="directory for runs and the table"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the runs already in <out>/<model>"),
):
    """Train several models with the same protocol; print and write a comparison table (CSV + markdown)
    of their test metrics at the best validation epoch."""
    _setup_logging(False)
    values = run_guarded(_collect_config, config, set_)
    run_guarded(_compare, data, models_, values, out, quiet, overwrite, plugin)


COMPARE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def _compare(data, models_csv, values, out, quiet, overwrite=False, plugins=()):
    import csv
    from prismrec import Recommender, load_dataset
    from prismrec.bundle import write_json
    names = [m.strip() for m in models_csv.split(",") if m.strip()]
    recs = [Recommender(n, plugins=plugins, **values) for n in names]  # validate every name/key before training
    from prismrec.train.rundir import prepare_run_dir
    for name in names:  # and every run folder: a refusal after two models trained would waste them
        prepare_run_dir(out / name, overwrite=overwrite)
    ds = load_dataset(data)
    rows = []
    for name, rec in zip(names, recs):
        with run_log(out / name):
            rec.fit(ds, run_dir=out / name, show_progress=not quiet, data_path=str(data))
        m = rec.metrics
        rows.append({"model": name + "".join("+" + p for p in plugins), "best_epoch": m["best_epoch"],
                     "sec_per_epoch": round(m["sec_per_epoch"], 3),
                     **{f"test_{k}": round(m["test"].get(k, float("nan")), 4) for k in COMPARE_METRICS}})
    cols = ["model", "best_epoch", "sec_per_epoch", *[f"test_{k}" for k in COMPARE_METRICS]]
    table = format_table([{"model": r["model"], "best epoch": r["best_epoch"], "s/epoch": f"{r['sec_per_epoch']:.2f}",
                           **{f"test {k}": f"{r['test_' + k]:.4f}" for k in COMPARE_METRICS}} for r in rows],
                         ["model", "best epoch", "s/epoch", *[f"test {k}" for k in COMPARE_METRICS]])
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    with open(out / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    write_json(out / "comparison.json", rows)
    typer.echo(table)
    typer.echo(f"test metrics at each model's best validation epoch; written {out / 'comparison.csv'} and "
               f"{out / 'comparison.md'}")


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


def print_info(info: dict) -> None:
    """``key  value`` lines, the style of ``prismrec datasets info``: a nested mapping of counts is
    one line per entry (``train  160``), one of dimensions (``*modalities``) ``name (d-d)`` lines."""
    width = 12  # as `datasets info`; a longer key is followed by one space

    def line(key, value):
        typer.echo(f"{key:<{width}} {_fmt(value) if isinstance(value, float) else value}")
    for key, value in info.items():
        label = "dataset" if key == "name" else key.replace("_", " ")
        if isinstance(value, dict) and key.endswith("modalities"):
            for m, d in value.items():
                line(label.removesuffix("ies") + "y", f"{m} ({d}-d)")
            if not value:
                line(label.removesuffix("ies") + "y", "(none)")
        elif isinstance(value, dict):
            for sub, n in value.items():
                line(sub, n)
        else:
            line(label, value)


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


def reflow_help(text: str) -> str:
    """Join the lines of each prose paragraph of a command's docstring into one: Typer's rich help
    keeps single line breaks, so docstring lines (~100 characters) would break again at the
    terminal's width and print ragged. Paragraphs with indented, bulleted or table lines keep
    their layout."""
    out = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        # a bullet is "- " / "* "; a prose line may start with an option name ("--config")
        keep = para.startswith("\b") or any(line.startswith((" ", "- ", "* ", "|", "$", "\t")) for line in lines)
        out.append(para if keep else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _reflow_commands(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = reflow_help(inspect.getdoc(info.callback))
    for group in typer_app.registered_groups:
        _reflow_commands(group.typer_instance)


_reflow_commands(app)


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
