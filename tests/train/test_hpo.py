"""Tuning: search space from config metadata, a 10-trial study, pruning, resume, the CLI."""
from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from prismrec.cli import app
from prismrec.config import load_yaml, resolve
from prismrec.errors import ConfigError
from prismrec.models.base import get_model_class
from prismrec.train import hpo
from prismrec.train.hpo import parse_space, search_space, tune

FAST = {"epochs": 6, "patience": 2, "eval_ks": (20,)}
LR = {"learning_rate": {"low": 1e-3, "high": 5e-2, "log": True, "choices": None}}


def test_space_comes_from_config_metadata():
    space = {p.name: p for p in search_space("lightgcn")}
    assert set(space) == {"num_layers", "reg_weight", "learning_rate"}
    assert (space["num_layers"].kind, space["num_layers"].low, space["num_layers"].high) == (int, 1, 4)
    assert space["reg_weight"].log and space["reg_weight"].kind is float and space["reg_weight"].default == 1e-4


def test_space_errors():
    with pytest.raises(ConfigError, match="no tunable"):
        search_space("pop")
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        search_space("bpr", extra_space={"lr": {"low": 1, "high": 2}})
    with pytest.raises(ConfigError, match="low > 0"):
        search_space("bpr", extra_space={"learning_rate": {"low": 0, "high": 1, "log": True}})


def test_parse_space():
    s = parse_space(["learning_rate=1e-4:1e-2:log", "num_layers=1,2,3", "reg_weight=0:0.1"])
    assert s["learning_rate"] == {"low": 1e-4, "high": 1e-2, "log": True, "choices": None}
    assert s["num_layers"]["choices"] == (1, 2, 3)
    assert s["reg_weight"]["log"] is False
    with pytest.raises(ConfigError):
        parse_space(["learning_rate=1e-4:x"])


def test_ten_trials_beat_the_defaults_or_say_so(tiny, tmp_path):
    res = tune(tiny, "bpr", 10, tmp_path, base_config=FAST, extra_space=LR, warmup_epochs=1, startup_trials=2)
    trials = res.study.trials
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 10
    assert trials[0].user_attrs.get("defaults") and trials[0].params == {"reg_weight": 1e-4, "learning_rate": 1e-3}
    assert res.best_value >= res.default_value
    if res.defaults_best:
        assert "defaults were best" in res.summary()
    else:
        assert res.best_value > res.default_value and "improved" in res.summary()
    # best.yaml is a config `prismrec train --config` accepts, and it holds the best trial's values
    values = load_yaml(tmp_path / "best.yaml")
    train_cfg, model_cfg = resolve(get_model_class("bpr"), values)
    assert model_cfg.reg_weight == pytest.approx(res.best_params["reg_weight"])
    assert train_cfg.learning_rate == pytest.approx(res.best_params["learning_rate"])
    assert train_cfg.epochs == 6


def test_bad_trials_are_pruned(tiny, tmp_path, monkeypatch):
    """Plumbing: per-epoch reports reach the pruner, a pruned trial stops training at once."""
    epochs_run = {}

    def fake_fit(self, dataset, *, callback=None, **kw):  # valid recall 0.3 for good settings, 0.1 for bad
        good = self.model_config.reg_weight < 1e-3
        for epoch in range(10):
            rec = {"valid": {"recall@20": 0.3 + 0.001 * epoch if good else 0.1}}  # bad ones plateau
            if callback(epoch, rec) is False:
                break
        epochs_run[self.model_config.reg_weight] = epoch + 1
        self.metrics = {"valid": rec["valid"], "test": {}, "best_epoch": epoch, "epochs": epoch + 1}
        return self
    monkeypatch.setattr(hpo.Recommender, "fit", fake_fit)
    space = {"reg_weight": {"choices": (1e-4, 1e-2)}}
    res = tune(tiny, "bpr", 8, tmp_path, base_config=FAST, extra_space=space, warmup_epochs=2, startup_trials=1)
    pruned = [t for t in res.study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.params["reg_weight"] == 1e-2 for t in pruned)
    assert epochs_run[1e-2] == 3  # stopped once past the warm-up and two epochs without progress
    assert res.best_params["reg_weight"] == 1e-4 and res.n_pruned == len(pruned)


def test_pruner_spares_trials_still_improving():
    study = optuna.create_study(direction="maximize", pruner=hpo._plateau_median_pruner(1, 0, patience=2))
    first = study.ask()
    for e in range(6):
        first.report(0.5, e)
    study.tell(first, 0.5)
    flat, climbing = study.ask(), study.ask()
    for e in range(6):
        flat.report(0.1, e)
        climbing.report(0.1 + 0.05 * e, e)  # below the median throughout, but climbing
    assert flat.should_prune() and not climbing.should_prune()


def test_study_resumes_after_interruption(tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_fit = hpo.Recommender.fit

    def flaky_fit(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C in the third trial
        return real_fit(self, *a, **kw)
    monkeypatch.setattr(hpo.Recommender, "fit", flaky_fit)
    with pytest.raises(KeyboardInterrupt):
        tune(tiny, "bpr", 5, tmp_path, base_config=FAST)
    monkeypatch.setattr(hpo.Recommender, "fit", real_fit)
    before = optuna.load_study(study_name="bpr", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state for t in before.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    cut = before.trials[2].params
    # a process killed outright leaves a RUNNING trial behind
    killed = before.ask()
    killed.suggest_float("reg_weight", 1e-6, 1e-1, log=True)

    res = tune(tiny, "bpr", 5, tmp_path, base_config=FAST)
    after = res.study.trials
    assert [(t.number, t.value) for t in after[:2]] == [(t.number, t.value) for t in before.trials[:2]]
    assert after[killed.number].state == TrialState.FAIL
    finished = [t for t in after if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5
    retried = [t for t in finished if "retry_of" in t.user_attrs]
    assert {t.user_attrs["retry_of"] for t in retried} == {2, killed.number}
    assert any(t.params == cut for t in retried)
    # a finished study runs nothing more
    assert len(tune(tiny, "bpr", 5, tmp_path, base_config=FAST).study.trials) == len(after)


def test_tune_cli_prints_yaml_for_train(mmrec_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "tune"
    r = runner.invoke(app, ["tune", "--data", str(mmrec_dir), "--model", "bpr", "--trials", "2", "--out", str(out),
                            "--set", "epochs=2", "--set", "patience=1"])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(r.stdout)
    assert cfg["epochs"] == 2 and "reg_weight" in cfg
    assert (out / "study.db").is_file() and (out / "best.yaml").is_file()
    t = runner.invoke(app, ["train", "--data", str(mmrec_dir), "--model", "bpr", "--config", str(out / "best.yaml"),
                            "--out", str(tmp_path / "run"), "--quiet"])
    assert t.exit_code == 0, t.output
    bad = runner.invoke(app, ["tune", "--data", str(mmrec_dir), "--model", "pop", "--trials", "1",
                              "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "no tunable" in bad.output


def test_every_trainable_model_tunes_its_learning_rate():
    """Issue 23 item 5: VBPR's space was reg_weight only."""
    from prismrec.models import registered_models
    for name, cls in registered_models().items():
        if not cls.trainable:
            continue
        lr = {p.name: p for p in search_space(name)}["learning_rate"]
        default = getattr(cls, "train_defaults", {}).get("learning_rate", 1e-3)
        assert lr.log and lr.low <= default <= lr.high and lr.default == default, name
    assert "learning_rate" not in {p.name for p in search_space("vbpr", fixed=("learning_rate",))}
    custom = {p.name: p for p in search_space("vbpr", extra_space=LR)}["learning_rate"]
    assert (custom.low, custom.high) == (1e-3, 5e-2)


def test_tune_prints_the_space_and_each_trials_parameters(mmrec_dir, tmp_path, caplog):
    caplog.set_level("INFO", logger="prismrec.tune")
    r = CliRunner().invoke(app, ["tune", "--data", str(mmrec_dir), "--model", "vbpr", "--trials", "2",
                                 "--out", str(tmp_path / "t"), "--set", "epochs=1", "--set", "patience=1"])
    assert r.exit_code == 0, r.output
    err = caplog.text  # the CLI's stderr (the log goes to the terminal)
    assert "search space of vbpr" in err and "learning_rate" in err and "log-uniform" in err
    assert err.index("search space") < err.index("trial 0:")
    assert "trial 0: " in err and "trial 1: " in err and "reg_weight=" in err


def test_a_repeated_draw_is_not_trained_again(tiny, tmp_path, monkeypatch):
    """A 2-point space and 5 trials: TPE must draw repeats; each is answered from the earlier
    trial (the run is seeded), so only the distinct points train."""
    fits = []
    original = hpo.Recommender.fit

    def counting_fit(self, *a, **k):
        fits.append(self)
        return original(self, *a, **k)
    monkeypatch.setattr(hpo.Recommender, "fit", counting_fit)
    space = {"reg_weight": {"low": None, "high": None, "log": False, "choices": (1e-4, 1e-2)}}
    res = tune(tiny, "bpr", 5, tmp_path, base_config={**FAST, "learning_rate": 0.01}, extra_space=space,
               startup_trials=10)
    finished = [t for t in res.study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5 and len(fits) == len({t.params["reg_weight"] for t in finished}) <= 2
    repeats = [t for t in finished if "repeat_of" in t.user_attrs]
    assert res.n_repeats == len(repeats) >= 3
    for t in repeats:
        first = res.study.trials[t.user_attrs["repeat_of"]]
        assert first.params == t.params and first.value == t.value and "repeat_of" not in first.user_attrs
        assert t.user_attrs["best_epoch"] == first.user_attrs["best_epoch"]
