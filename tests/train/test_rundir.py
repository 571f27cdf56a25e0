"""Run directories (issue 22): a new run into a non-empty folder is an error unless --resume or
--overwrite; --resume refuses other settings unless --allow-config-change names them."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prismrec import Recommender
from prismrec.cli import app
from prismrec.errors import ConfigError, PrismrecError
from prismrec.train.rundir import prepare_run_dir

CFG = dict(epochs=2, batch_size=256)
runner = CliRunner()


def _log_epochs(run):
    return [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()]


def test_new_run_into_a_used_folder_is_refused(tmp_path, tiny):
    run = tmp_path / "run"
    Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False)
    before = (run / "log.jsonl").read_text()
    with pytest.raises(PrismrecError, match="is not empty.*--resume.*--overwrite"):
        Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False)
    assert (run / "log.jsonl").read_text() == before  # nothing appended (issue 22 item 2)


def test_overwrite_replaces_the_run_and_keeps_other_files(tmp_path, tiny):
    run = tmp_path / "run"
    Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False)
    (run / "notes.txt").write_text("mine")
    Recommender("bpr", **{**CFG, "epochs": 3}).fit(tiny, run_dir=run, show_progress=False, overwrite=True)
    assert _log_epochs(run) == [0, 1, 2]  # a fresh log, not the old one continued
    assert (run / "notes.txt").read_text() == "mine"
    assert Recommender.load(run).metrics["epochs"] == 3


def test_empty_or_new_folders_are_fine(tmp_path, tiny):
    (tmp_path / "empty").mkdir()
    Recommender("bpr", **CFG).fit(tiny, run_dir=tmp_path / "empty", show_progress=False)
    Recommender("bpr", **CFG).fit(tiny, run_dir=tmp_path / "new" / "deeper", show_progress=False)


def test_a_killed_writers_leftovers_do_not_count(tmp_path, tiny):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".bundle.4199999.x").mkdir()  # a dead pid's staging folder
    (run / "train.log").write_text("header of an invocation that failed early\n")
    Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False)
    assert not (run / ".bundle.4199999.x").exists()


@pytest.mark.parametrize("kwargs,match", [
    (dict(resume=True, overwrite=True), "choose one"),
    (dict(allow_config_change=["epochs"]), "applies to --resume only"),
])
def test_conflicting_options(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        prepare_run_dir(tmp_path, **kwargs)


def test_a_file_is_not_a_run_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(PrismrecError, match="not a folder"):
        prepare_run_dir(tmp_path / "f")


# -- the command line -----------------------------------------------------------------------------
def _train(*args):
    return runner.invoke(app, ["train", *map(str, args), "--quiet"])


def test_cli_resume_overwrite_and_allowed_changes(tmp_path, mmrec_dir):
    run = tmp_path / "run"
    base = ["--data", mmrec_dir, "--model", "bpr", "--set", "batch_size=256", "--out", run]
    r = _train(*base, "--set", "epochs=2")
    assert r.exit_code == 0, r.output
    r = _train(*base, "--set", "epochs=2")
    assert r.exit_code == 2 and "is not empty" in r.output and "Traceback" not in r.output
    r = _train(*base, "--set", "epochs=3", "--set", "learning_rate=0.5", "--resume")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "epochs 2 -> 3" in r.output and "learning_rate 0.001 -> 0.5" in r.output
    r = _train(*base, "--set", "epochs=3", "--set", "learning_rate=0.5", "--resume",
               "--allow-config-change", "epochs,learning_rate")
    assert r.exit_code == 0, r.output
    assert _log_epochs(run) == [0, 1, 2]
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert last["lr"] == pytest.approx(0.5)  # the run uses what config.json records
    assert json.loads((run / "config.json").read_text())["train_config"]["learning_rate"] == 0.5
    r = _train(*base, "--set", "epochs=1", "--overwrite")
    assert r.exit_code == 0, r.output
    assert _log_epochs(run) == [0]
    assert (run / "train.log").read_text().count("prismrec") >= 1
    r = _train(*base, "--resume", "--overwrite")
    assert r.exit_code == 2 and "choose one" in r.output


def test_cli_allow_config_change_unknown_key(tmp_path, mmrec_dir):
    run = tmp_path / "run"
    base = ["--data", mmrec_dir, "--model", "bpr", "--set", "epochs=1", "--out", run]
    assert _train(*base).exit_code == 0
    r = _train(*base, "--resume", "--allow-config-change", "epochz")
    assert r.exit_code == 2 and "unknown config key" in r.output and "epochz" in r.output


def test_compare_twice_needs_overwrite(tmp_path, mmrec_dir):
    args = ["compare", "--data", str(mmrec_dir), "--models", "pop,bpr", "--set", "epochs=1", "--out",
            str(tmp_path / "cmp"), "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "cmp/pop is not empty" in r.output
    r = runner.invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output


def test_demo_reruns_into_its_own_folders(tmp_path):
    for _ in range(2):  # the second run replaces the first one's runs
        r = runner.invoke(app, ["demo", "--epochs", "1", "--out", str(tmp_path / "demo")])
        assert r.exit_code == 0, r.output
    assert [json.loads(x)["epoch"] for x in (tmp_path / "demo" / "bpr" / "log.jsonl").read_text().splitlines()] == [0]
