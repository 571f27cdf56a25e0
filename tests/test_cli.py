"""The command line: train -> evaluate -> recommend on a tiny MMRec folder; errors without tracebacks."""
import json

import pytest
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
