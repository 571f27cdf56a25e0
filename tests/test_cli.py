"""The command line: train -> evaluate -> recommend on a tiny MMRec folder; errors without tracebacks."""
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from prismrec.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_models_lists_registry():
    r = invoke("models")
    assert r.exit_code == 0
    for name in ("pop", "bpr", "lightgcn", "vbpr"):
        assert name in r.output


def test_train_evaluate_recommend(tmp_path, mmrec_dir, tiny):
    run = tmp_path / "run"
    r = invoke("train", "--data", mmrec_dir, "--model", "vbpr", "--set", "epochs=3", "--set", "batch_size=256",
               "--out", run, "--quiet")
    assert r.exit_code == 0, r.output
    assert "best epoch" in r.output and (run / "weights.safetensors").is_file()
    r = invoke("evaluate", run, "-k", 10, "-k", 20)
    assert r.exit_code == 0, r.output
    assert "recall@20" in r.output and "test" in r.output
    r = invoke("recommend", run, "--user", 3, "-k", 5, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["user"] == 3 and len(out["items"]) == 5
    seen = set(tiny.train[3].indices.tolist())
    assert not seen & set(out["items"])


def test_config_file_and_overrides(tmp_path, mmrec_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 2\n  batch_size: 512\nmodel:\n  embedding_dim: 8\n")
    run = tmp_path / "run"
    r = invoke("train", "--data", mmrec_dir, "--model", "bpr", "--config", cfg, "--set", "reg_weight=0.01",
               "--out", run, "--quiet")
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["model_config"]["embedding_dim"] == 8 and saved["model_config"]["reg_weight"] == 0.01
    assert saved["train_config"]["epochs"] == 2


@pytest.mark.parametrize("args,msg", [
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--model", "bpr", "--set", "epochz=3"], "unknown config key"),
    (["--model", "bpr", "--set", "epochs=three"], "epochs: expected int"),
    (["--model", "bpr", "--device", "gpu"], "device must be 'cpu', 'cuda' or 'cuda:N'"),
    pytest.param(["--model", "bpr", "--device", "cuda"], "sees no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")),
])
def test_train_errors_are_one_line(tmp_path, mmrec_dir, args, msg):
    r = runner.invoke(app, ["train", "--data", str(mmrec_dir), *args, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert msg in r.output and "Traceback" not in r.output


def test_torchrun_without_distributed_is_refused(tmp_path, mmrec_dir, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in each of its processes
    r = runner.invoke(app, ["train", "--data", str(mmrec_dir), "--model", "bpr", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--distributed is not set" in r.output
    assert not (tmp_path / "x").exists()


def test_train_of_a_model_without_training_says_so(tmp_path, mmrec_dir):
    r = runner.invoke(app, ["train", "--data", str(mmrec_dir), "--model", "itemknncbf", "--out", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    assert "no training (itemknncbf is built, not trained)" in r.output and "s/epoch" not in r.output
    assert (tmp_path / "x" / "weights.safetensors").is_file()


def test_bad_data_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["datasets", "info", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no such file or folder" in r.output


def test_datasets_synth_and_info(tmp_path):
    out = tmp_path / "syn"
    r = invoke("datasets", "synth", "--out", out, "--users", 120, "--items", 60)
    assert r.exit_code == 0, r.output
    r = invoke("datasets", "info", out)
    assert r.exit_code == 0
    assert "users        120" in r.output and "modality     image (128-d)" in r.output


def test_datasets_synth_microvideo(tmp_path):
    out = tmp_path / "mv"
    r = invoke("datasets", "synth", "--out", out, "--users", 150, "--items", 90, "--format", "microvideo")
    assert r.exit_code == 0, r.output
    assert (out / "noise_items.json").exists()
    r = invoke("datasets", "info", out)
    assert r.exit_code == 0 and "modality     acoustic" in r.output and "users        150" in r.output
    r = invoke("datasets", "synth", "--out", tmp_path / "x", "--format", "csv")
    assert r.exit_code == 2 and "microvideo" in r.output and not (tmp_path / "x").exists()


def test_compare_writes_tables(tmp_path, mmrec_dir):
    r = invoke("compare", "--data", mmrec_dir, "--models", "pop,bpr", "--set", "epochs=2", "--out", tmp_path / "cmp",
               "--quiet")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cmp" / "comparison.csv").read_text().startswith("model,")
    assert "| pop" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_demo_runs(tmp_path):
    r = invoke("demo", "--epochs", 3, "--out", tmp_path / "demo")
    assert r.exit_code == 0, r.output
    assert "vbpr" in r.output and "recall@20" in r.output


# ---- issue 23: the first hour of a new user ----------------------------------------------------
def test_version_and_short_help():
    from prismrec import __version__
    r = invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"prismrec {__version__}"
    for args in (["-h"], ["train", "-h"], ["music", "train", "-h"]):
        r = invoke(*args)
        assert r.exit_code == 0 and "Usage" in r.output, args


def test_models_and_help_do_not_import_torch():
    """`prismrec models` / `--help` must print fast: the model list is read from the source files."""
    import subprocess
    import sys
    code = ("import sys\nfrom prismrec.cli import app\n"
            "for args in (['models'], ['--help']):\n"
            "    try:\n        app(args, prog_name='prismrec')\n    except SystemExit:\n        pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH") and "vbpr" in out.stdout and "report" in out.stdout


def test_static_model_list_matches_the_registry():
    from prismrec.cli import _static_model_list
    from prismrec.models import registered_models
    assert _static_model_list() == [(n, c.uses_features, c.description) for n, c in registered_models().items()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    from prismrec.data import save_mmrec
    root = tmp_path_factory.mktemp("cli23")
    data = save_mmrec(tiny, root / "tiny")
    run = root / "run"
    r = invoke("train", "--data", data, "--model", "vbpr", "--set", "epochs=3", "--set", "batch_size=256",
               "--set", "learning_rate=0.01", "--out", run, "--quiet")
    assert r.exit_code == 0, r.output
    return data, run


def test_train_log_and_typed_config(trained):
    from prismrec import __version__
    _, run = trained
    log = (run / "train.log").read_text()
    assert f"prismrec {__version__}" in log and "# command: prismrec" in log and "epoch 2 " in log
    assert re.search(r"CPUs \(\w+, auto precision (bf16|fp32)\)", log)  # the machine a timing came from
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["epochs"] == 3 and saved["learning_rate"] == 0.01 and saved["batch_size"] == 256


def test_evaluate_rows_are_metrics_and_json(trained):
    _, run = trained
    r = invoke("evaluate", run, "-k", 10, "-k", 20)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:4]] == ["metric", "valid", "test"]
    assert any(line.startswith("| recall@20") for line in lines) and len(lines) == 2 + 10
    r = invoke("evaluate", run, "-k", 10, "--json")
    res = json.loads(r.output)
    assert set(res) == {"valid", "test"} and 0 <= res["test"]["recall@10"] <= 1


def test_recommend_all_to_a_file_and_exclude_all_seen(trained, tiny, tmp_path):
    import pandas as pd
    _, run = trained
    out = tmp_path / "lists.csv"
    r = invoke("recommend", run, "--all", "--out", out, "-k", 7, "--exclude", "all-seen")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert len(df) == tiny.n_users * 7 and list(df.columns) == ["user", "rank", "item", "score"]
    seen = (tiny.train + tiny.valid + tiny.test).tocsr()
    pairs = set(zip(df.user, df.item))
    assert not any((u, i) in pairs for u in range(tiny.n_users) for i in seen[u].indices)
    # scores descend within each user
    assert (df.groupby("user").score.diff().dropna() <= 1e-6).all()
    r = invoke("recommend", run, "--all", "--out", tmp_path / "l.jsonl", "-k", 3)
    rows = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert len(rows) == tiny.n_users and len(rows[0]["items"]) == 3
    r = runner.invoke(app, ["recommend", str(run), "--all"])
    assert r.exit_code == 2 and "--out" in r.output


def test_unknown_user_error_gives_examples(trained):
    _, run = trained
    r = runner.invoke(app, ["recommend", str(run), "--user", "99999"])
    assert r.exit_code == 2 and "unknown user '99999'" in r.output and "e.g. 0, 1, 2" in r.output
    r = runner.invoke(app, ["recommend", str(run), "--user", "nobody"])
    assert r.exit_code == 2 and "e.g. 0, 1, 2" in r.output


def test_compare_config_and_test_labels(trained, tmp_path):
    data, _ = trained
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 2\nbatch_size: 512\n")
    r = invoke("compare", "--data", data, "--models", "pop,bpr", "--config", cfg, "--out", tmp_path / "cmp",
               "--quiet")
    assert r.exit_code == 0, r.output
    header = r.output.splitlines()[0]
    assert "test recall@20" in header and "s/epoch" in header
    assert json.loads((tmp_path / "cmp" / "bpr" / "config.json").read_text())["train_config"]["epochs"] == 2
    assert (tmp_path / "cmp" / "bpr" / "train.log").is_file()
    row = [c.strip() for c in r.output.splitlines()[3].split("|")[1:-1]]
    assert len(row[2].split(".")[1]) == 2 and all(len(c.split(".")[1]) == 4 for c in row[3:])


def test_music_info_in_the_datasets_info_style(tmp_path):
    r = invoke("music", "synth", "--out", tmp_path / "m", "--videos", 200, "--tracks", 30)
    assert r.exit_code == 0, r.output
    r = invoke("music", "info", tmp_path / "m")
    assert r.exit_code == 0 and r.output.startswith("dataset      m\n") and "videos       200" in r.output
    assert "{" not in r.output


def test_music_train_defaults_to_the_fast_model():
    import inspect
    from prismrec.tasks.music import cli as music_cli
    assert inspect.signature(music_cli.train).parameters["model"].default.default == "dual-encoder"
    r = invoke("music", "train", "-h")
    assert "dual-encoder" in r.output and "s/epoch" in r.output


def test_help_paragraphs_are_reflowed_not_broken_at_the_docstrings_lines():
    """Typer's rich help keeps a docstring's line breaks; the CLI joins prose paragraphs so that
    `--help` wraps at the terminal's width only (lists and indented examples keep their lines)."""
    from prismrec.cli import reflow_help
    text = "Summary\nline two.\n\nProse that\ngoes on.\n\nA list:\n- one\n- two\n\n  indented\n  example"
    assert reflow_help(text) == "Summary line two.\n\nProse that goes on.\n\nA list:\n- one\n- two\n\n  indented\n  example"
    out = runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "200"}).output
    assert "plus the learning rate (unless fixed with --set/--config)" in out
    out = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "the bundle of the best epoch so far is written (marked interrupted in metrics.json)" in out
