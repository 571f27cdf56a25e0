"""``prismrec tune``: optuna search over a model's tunable config fields (see :mod:`prismrec.train.hpo`)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``tune`` command to the ``prismrec`` CLI."""

    @app.command()
    def tune(
        data: str = typer.Option(..., "--data", help="dataset path or 'synthetic'"),
        model: str = typer.Option(..., "--model", help="model name (see `prismrec models`)"),
        trials: int = typer.Option(20, "--trials", min=1, help="finished trials the study should reach"),
        out: Optional[Path] = typer.Option(None, "--out", help="run directory holding study.db and best.yaml "
                                           "(default runs/tune-<data>-<model>); rerun to resume"),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="start no new trial after S seconds"),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML of fixed keys for every trial"),
        set_: List[str] = typer.Option([], "--set", help="fixed key for every trial: --set epochs=50 (repeatable)"),
        space: List[str] = typer.Option([], "--space", help="extra range: key=low:high[:log] or key=a,b,c "
                                        "(repeatable; overrides the model's own range)"),
        plugin: List[str] = typer.Option([], "--plugin", help="wrap the model with a plug-in"),
        seed: int = typer.Option(0, "--seed", help="seed of the TPE sampler"),
        warmup: int = typer.Option(3, "--warmup", help="epochs before a trial may be pruned"),
        verbose: bool = typer.Option(False, "--verbose", help="log every epoch of every trial"),
    ):
        """Tune a model's hyper-parameters on the validation metric (valid_metric, Recall@20 by default);
        prints the best config as YAML.

        The search space is the model's tunable config fields plus the learning rate (unless fixed
        with --set/--config); it is printed first, then each trial's parameters and result. Runs are
        seeded, so a trial that draws the parameters of an earlier one takes its result without
        training again (common on small discrete spaces). The study is stored in SQLite inside the
        run directory: run the same command again to add trials or to continue after an
        interruption. Feed the printed YAML (also written to <out>/best.yaml) to `prismrec train
        --config`.
        """
        import logging
        from prismrec.cli import _collect_config, _setup_logging, run_guarded
        _setup_logging(False)
        if not verbose:  # per-trial lines only
            logging.getLogger("prismrec").setLevel(logging.WARNING)
            logging.getLogger("prismrec.tune").setLevel(logging.INFO)
        values = run_guarded(_collect_config, config, set_)
        run_dir = out or Path("runs") / f"tune-{Path(str(data)).name}-{model}{''.join('+' + p for p in plugin)}"
        res, text = run_guarded(_tune, data, model, trials, run_dir, timeout, values, space, plugin, seed, warmup)
        typer.echo(text, nl=False)
        repeats = f" ({res.n_repeats} drew an earlier trial's parameters: not run again)" if res.n_repeats else ""
        typer.secho(f"# {res.summary()}; {res.n_complete} complete, {res.n_pruned} pruned{repeats}; "
                    f"written {run_dir / 'best.yaml'}", err=True)


def _tune(data, model, trials, run_dir, timeout, values, space, plugins, seed, warmup):
    from prismrec import load_dataset
    from prismrec.train.hpo import parse_space, search_space, tune
    extra = parse_space(space)
    search_space(model, plugins, extra, fixed=tuple(values))  # fail on a bad model/space before loading data
    ds = load_dataset(data)
    res = tune(ds, model, trials, run_dir, plugins=tuple(plugins), base_config=values, extra_space=extra,
               timeout=timeout, seed=seed, warmup_epochs=warmup)
    return res, res.to_yaml(model, plugins)
