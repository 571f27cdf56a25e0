"""Hyper-parameter tuning with optuna: search space from the model config, pruning, resumable study.

The search space is read from the model's config dataclass: a field declared with
:func:`prismrec.config.tunable` carries ``{"search": {"low", "high", "log", "choices"}}`` in its
metadata; ``choices`` makes it categorical, otherwise an int field gets ``suggest_int`` and a float
field ``suggest_float`` over ``[low, high]`` (log-uniform with ``log=True``). Fields without a range
keep their value. Every trainable model's space also holds the learning rate (log-uniform over
:data:`LEARNING_RATE_RANGE`, widened to hold the model's default), unless it is fixed in the base
config. Extra ranges can be passed in ``extra_space``; they override these.

The first trial of a new study runs the defaults, so the result says whether tuning beat them.
Every trial trains with early stopping and reports the validation metric (Recall@20) after each
epoch; optuna's median pruner stops trials that trail the others at the same epoch, once they have
not improved for two epochs (a trial still climbing is never cut). The study lives
in ``<run_dir>/study.db`` (SQLite): running the same command again continues it up to ``n_trials``
finished trials, and re-runs the trial an interruption cut short. One tuner per run directory.
Selection is by validation only; the test metrics of each trial are kept as user attributes for
reference (MMRec selects by test, which this does not do).
"""
from __future__ import annotations

import logging
import math
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from prismrec.api import Recommender, model_class_with_plugins
from prismrec.config import TrainConfig, resolve
from prismrec.data.dataset import Dataset
from prismrec.errors import ConfigError, PrismrecError

log = logging.getLogger("prismrec.tune")
STUDY_DB = "study.db"
BEST_YAML = "best.yaml"
# The learning rate's range in every trainable model's space: two decades around Adam's 1e-3,
# where the published configs of the models here lie (MMRec's grids: 1e-4 .. 1e-2).
LEARNING_RATE_RANGE = (1e-4, 1e-2)


# ---------------------------------------------------------------------------------------------
# search space
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One tunable parameter: ``choices`` (categorical) or a ``[low, high]`` range of ``kind``."""

    name: str
    kind: type            # int, float, bool or str
    default: Any
    low: Any = None
    high: Any = None
    log: bool = False
    choices: tuple | None = None

    def describe(self) -> str:
        """One line: ``name  float  log-uniform [0.0001, 0.01]  (default 0.001)``."""
        kind = getattr(self.kind, "__name__", str(self.kind))
        if self.choices is not None:
            where = "one of " + ", ".join(map(str, self.choices))
        else:
            where = f"{'log-uniform' if self.log else 'uniform'} [{self.low:g}, {self.high:g}]"
        return f"{self.name:<20} {kind:<6} {where}  (default {self.default!r})"

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def _param(name: str, kind, default, search: dict) -> Param:
    choices = search.get("choices")
    low, high = search.get("low"), search.get("high")
    if choices is None and kind is bool:
        choices = (False, True)
    if choices is None and kind not in (int, float):
        raise ConfigError(f"tunable field '{name}' of type {getattr(kind, '__name__', kind)} needs choices")
    if choices is None:
        if low is None or high is None or not low <= high:
            raise ConfigError(f"tunable field '{name}': need low <= high, got low={low}, high={high}")
        if search.get("log") and low <= 0:
            raise ConfigError(f"tunable field '{name}': a log range needs low > 0, got {low}")
    if choices is not None and default is not None and default not in choices:
        choices = (default, *choices)  # the defaults are always in the space: trial 0 runs them
    return Param(name, kind, default, low, high, bool(search.get("log")),
                 tuple(choices) if choices is not None else None)


def search_space(model: str, plugins=(), extra_space: dict[str, dict] | None = None,
                 fixed=()) -> list[Param]:
    """The tunable parameters of ``model`` (with ``plugins``) from its config field metadata, plus
    the learning rate for a trainable model.

    Args:
        model: registered model name.
        plugins: plug-ins wrapping it (their config fields count too).
        extra_space: more ranges, name -> ``{"low", "high", "log", "choices"}``; a name may be a
            model or a training key (``learning_rate``) and overrides the metadata range.
        fixed: keys the caller fixes for every trial: the learning rate is not added when it is one.

    Raises:
        ConfigError: the model has nothing to tune, or a range is malformed / names an unknown key.
    """
    cls = model_class_with_plugins(model, plugins)
    space: dict[str, Param] = {}
    by_name = {}
    for config_cls in (cls.Config, TrainConfig):
        hints = typing.get_type_hints(config_cls)
        for f in fields(config_cls):
            default = f.default if f.default is not MISSING else None
            by_name.setdefault(f.name, (hints[f.name], default))
            if config_cls is cls.Config and "search" in f.metadata:
                space[f.name] = _param(f.name, hints[f.name], default, f.metadata["search"])
    train_defaults = getattr(cls, "train_defaults", {})
    if cls.trainable and "learning_rate" not in fixed and "learning_rate" not in space:
        lr = float(train_defaults.get("learning_rate", by_name["learning_rate"][1]))
        low, high = LEARNING_RATE_RANGE
        space["learning_rate"] = _param("learning_rate", float, lr,
                                        {"low": min(low, lr), "high": max(high, lr), "log": True})
    for name, search in (extra_space or {}).items():
        if name not in by_name:
            raise ConfigError(f"cannot tune unknown key '{name}' of model '{model}'; "
                              f"known: {', '.join(sorted(by_name))}")
        kind, default = by_name[name]
        space[name] = _param(name, kind, train_defaults.get(name, default), search)
    if not space:
        raise ConfigError(f"model '{model}' declares no tunable parameters; pass ranges with --space "
                          "(e.g. --space learning_rate=1e-4:1e-2:log)")
    return list(space.values())


def parse_space(specs: list[str]) -> dict[str, dict]:
    """``["learning_rate=1e-4:1e-2:log", "num_layers=1,2,3"]`` -> ranges for :func:`search_space`.

    ``low:high`` (optionally ``:log``) is a range; ``a,b,c`` a list of choices (YAML scalars).
    """
    out = {}
    for s in specs:
        if "=" not in s:
            raise ConfigError(f"--space {s!r} must look like key=low:high[:log] or key=a,b,c")
        k, v = (x.strip() for x in s.split("=", 1))
        if ":" in v:
            parts = v.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
                raise ConfigError(f"--space {s!r}: expected low:high or low:high:log")
            low, high = (_scalar(p) for p in parts[:2])
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (low, high)):
                raise ConfigError(f"--space {s!r}: low and high must be numbers")
            out[k] = {"low": low, "high": high, "log": len(parts) == 3, "choices": None}
        else:
            out[k] = {"low": None, "high": None, "log": False,
                      "choices": tuple(_scalar(c) for c in v.split(",") if c.strip())}
    return out


def _scalar(text: str):
    """``"3"`` -> 3, ``"1e-4"`` -> 1e-4 (which YAML 1.1 would keep a string), else a YAML scalar."""
    text = text.strip()
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


# ---------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What :func:`tune` returns."""

    best_params: dict          # the tuned keys of the best trial
    best_config: dict          # best_params merged over the fixed base config: what to train with
    best_value: float          # its validation metric
    default_value: float | None  # the defaults' validation metric (None if that trial never finished)
    defaults_best: bool        # no trial beat the defaults
    metric: str
    n_complete: int
    n_pruned: int
    best_trial: int
    study: Any                 # the optuna Study
    n_repeats: int = 0         # finished trials that drew an earlier trial's parameters (not run again)

    def summary(self) -> str:
        if self.default_value is None:
            return f"best {self.metric} {self.best_value:.4f} (trial {self.best_trial}); the defaults did not finish"
        if self.defaults_best:
            return f"the defaults were best: {self.metric} {self.default_value:.4f}"
        gain = (self.best_value / self.default_value - 1) * 100 if self.default_value > 0 else math.inf
        return (f"tuning improved validation {self.metric} from {self.default_value:.4f} (defaults) to "
                f"{self.best_value:.4f} ({gain:+.1f}%), trial {self.best_trial}")

    def to_yaml(self, model: str, plugins=()) -> str:
        head = (f"# prismrec tune: model {model}{''.join(' +' + p for p in plugins)}; {self.summary()}\n"
                f"# use: prismrec train --model {model} --config best.yaml ...\n")
        return head + yaml.safe_dump({k: _plain(v) for k, v in self.best_config.items()}, sort_keys=True)


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _finished(study):
    from optuna.trial import TrialState
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _recover_interrupted(study, storage, space: list[Param]) -> None:
    """Mark trials a killed process left RUNNING as failed, and queue again every cut-short trial
    whose parameters were not tried since."""
    from optuna.trial import TrialState
    names = {p.name for p in space}
    tried = [t.params for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED,
                                                             TrialState.WAITING)]
    for t in study.trials:
        if t.state == TrialState.RUNNING:
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        elif not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")):
            continue
        params = {k: v for k, v in t.params.items() if k in names}
        if params and params not in tried:
            log.info("re-queueing trial %d, cut short by an interruption: %s", t.number, params)
            study.enqueue_trial(params, user_attrs={"retry_of": t.number, **({"defaults": True} if
                                                    t.user_attrs.get("defaults") else {})})
            tried.append(params)


def _plateau_median_pruner(startup_trials: int, warmup_epochs: int, patience: int):
    """optuna's median pruner, vetoed while the trial still improves: a trial is cut only when it
    trails the median of earlier trials at the same epoch *and* its last ``patience`` epochs did
    not beat its best before them. (optuna's PatientPruner waits for a decline, not a plateau.)"""
    import optuna

    class PlateauMedianPruner(optuna.pruners.BasePruner):
        def __init__(self):
            self.median = optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)

        def prune(self, study, trial) -> bool:
            values = [v for _, v in sorted(trial.intermediate_values.items())]
            if len(values) <= patience:
                return False
            if max(values[-patience:]) > max(values[:-patience]):
                return False  # still improving
            return self.median.prune(study, trial)
    return PlateauMedianPruner()


def tune(dataset: Dataset, model: str, n_trials: int, run_dir: str | Path, *, plugins=(),
         base_config: dict[str, Any] | None = None, extra_space: dict[str, dict] | None = None,
         timeout: float | None = None, seed: int = 0, warmup_epochs: int = 3, startup_trials: int = 3,
         show_progress: bool = False) -> TuneResult:
    """Tune ``model`` on ``dataset``'s validation split; resumable from ``run_dir/study.db``.

    Args:
        dataset: the data (trials train on ``train``, are scored on ``valid``).
        model: registered model name.
        n_trials: finished (completed or pruned) trials the study should have; a resumed study runs
            only the missing ones.
        run_dir: directory of the SQLite study and ``best.yaml``.
        plugins: plug-ins wrapping the model.
        base_config: fixed training/model keys for every trial (e.g. ``{"epochs": 50, "patience": 5}``).
        extra_space: extra ranges (see :func:`search_space`).
        timeout: stop starting new trials after this many seconds.
        seed: seed of the TPE sampler.
        warmup_epochs: epochs before a trial can be pruned.
        startup_trials: trials that finish before pruning starts.
    """
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = dict(base_config or {})
    space = search_space(model, plugins, extra_space, fixed=tuple(base))
    cls = model_class_with_plugins(model, plugins)
    train_cfg, model_cfg = resolve(cls, base)  # validates the base keys before anything runs
    base = {k: getattr(model_cfg if hasattr(model_cfg, k) else train_cfg, k) for k in base}  # typed: "10" -> 10
    metric = train_cfg.valid_metric
    for p in space:
        if p.name in base:
            raise ConfigError(f"'{p.name}' is both fixed ({base[p.name]!r}) and tuned; drop one")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / STUDY_DB).resolve()}")
    name = f"{model}{''.join('+' + p for p in plugins)}"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                pruner=_plateau_median_pruner(startup_trials, warmup_epochs, patience=2))
    # a resumed study must not replay the random start-up draws of the first session: offset the seed
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials),
                                               n_startup_trials=max(3, min(10, n_trials // 2)))
    if not study.trials:
        defaults = {p.name: _plain(p.default) for p in space}
        study.enqueue_trial(defaults, user_attrs={"defaults": True}, skip_if_exists=True)
    else:
        _recover_interrupted(study, storage, space)
        log.info("resuming study %s in %s: %d trial(s) finished", name, run_dir, len(_finished(study)))

    log.info("search space of %s (%d parameters; a new study starts with the defaults):\n  %s", name, len(space),
             "\n  ".join(p.describe() for p in space))

    def objective(trial):
        params = {p.name: p.suggest(trial) for p in space}
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={_short(v)}" for k, v in params.items()))
        earlier = _same_parameters(study, trial.number, params)
        if earlier is not None:  # training is seeded: the same parameters give the same result
            return _repeat(trial, earlier, metric)
        pruned = False

        def report(epoch, rec):
            nonlocal pruned
            trial.report(rec["valid"][metric], epoch)
            if trial.should_prune():
                pruned = True
                return False
            return True
        try:
            rec = Recommender(model, plugins=plugins, **{**base, "checkpoint": False, **params})
            rec.fit(dataset, show_progress=show_progress, callback=report)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except PrismrecError as e:  # divergence and the like: a bad region, not a broken tuner
            trial.set_user_attr("error", str(e))
            log.info("trial %d failed (%s): pruned", trial.number, e)
            raise optuna.TrialPruned() from None
        m = rec.metrics
        trial.set_user_attr("best_epoch", m["best_epoch"])
        trial.set_user_attr("epochs", m["epochs"])
        trial.set_user_attr("test", {k: v for k, v in m["test"].items() if k.endswith(("@10", "@20"))})
        value = m["valid"].get(metric, float("nan"))
        where = f"best epoch {m['best_epoch']} of {m['epochs']}" if rec.model_cls.trainable else "no training"
        log.info("trial %d %s: %s %.4f (%s)", trial.number, "pruned" if pruned else "done", metric, value, where)
        if pruned:
            raise optuna.TrialPruned()
        return value

    remaining = n_trials - len(_finished(study))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=timeout, catch=())
    return _result(study, space, base, metric, run_dir, model, plugins)


def _same_parameters(study, number: int, params: dict):
    """The first finished trial before ``number`` that ran exactly ``params``, or ``None``. TPE
    draws a point of a small discrete space again and again (8 points, 8 trials: often 5 distinct)."""
    from optuna.trial import TrialState
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number < number and t.params == params and not t.user_attrs.get("error"):
            return t
    return None


def _repeat(trial, earlier, metric: str) -> float:
    """Record trial ``earlier``'s outcome for ``trial`` without training again."""
    import optuna
    from optuna.trial import TrialState
    trial.set_user_attr("repeat_of", earlier.number)
    for k in ("best_epoch", "epochs", "test"):
        if k in earlier.user_attrs:
            trial.set_user_attr(k, earlier.user_attrs[k])
    if earlier.state == TrialState.PRUNED:
        log.info("trial %d: the parameters of trial %d, which was pruned: pruned (not run again)",
                 trial.number, earlier.number)
        raise optuna.TrialPruned()
    log.info("trial %d: the parameters of trial %d: %s %.4f (not run again)", trial.number, earlier.number,
             metric, earlier.value)
    return earlier.value


def _result(study, space, base, metric, run_dir: Path, model, plugins) -> TuneResult:
    from optuna.trial import TrialState
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not done:
        raise PrismrecError(f"no trial of study '{study.study_name}' completed yet; run more trials")
    best = max(done, key=lambda t: (t.value, -t.number))
    defaults = [t for t in done if t.user_attrs.get("defaults")]
    default_value = defaults[0].value if defaults else None
    params = {p.name: best.params[p.name] for p in space if p.name in best.params}
    res = TuneResult(best_params=params, best_config={**base, **params}, best_value=best.value,
                     default_value=default_value,
                     defaults_best=default_value is not None and best.value <= default_value,
                     metric=metric, n_complete=len(done),
                     n_pruned=sum(t.state == TrialState.PRUNED for t in study.trials),
                     best_trial=best.number, study=study,
                     n_repeats=sum("repeat_of" in t.user_attrs for t in study.trials))
    if res.defaults_best:  # ties go to the defaults
        res.best_params = {p.name: defaults[0].params.get(p.name, _plain(p.default)) for p in space}
        res.best_config = {**base, **res.best_params}
        res.best_trial = defaults[0].number
    (run_dir / BEST_YAML).write_text(res.to_yaml(model, plugins))
    return res
