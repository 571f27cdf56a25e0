"""Checkpoints: a digest that catches corruption, clear errors for bad files, and a resume that
uses the settings it records (issue 22)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prismrec import Recommender
from prismrec.errors import ConfigError, PrismrecError
from prismrec.train.checkpoint import (DIGEST_KEY, STATE_KEY, CheckpointError, load_checkpoint, read_state,
                                       save_checkpoint)

CFG = dict(epochs=3, batch_size=256, patience=50, seed=3)


@pytest.fixture
def run(tmp_path, tiny):
    out = tmp_path / "run"
    Recommender("bpr", **CFG).fit(tiny, run_dir=out, show_progress=False)
    return out


def _rewrite(path, tensors=None, state=None, digest=True):
    """Write a checkpoint by hand: the given tensors/state, with a correct digest unless told not."""
    with safe_open(str(path), framework="pt") as f:
        old = {k: f.get_tensor(k) for k in f.keys()}
        old_state = json.loads(f.metadata()[STATE_KEY])
    tensors = old if tensors is None else tensors(old)
    state = old_state if state is None else state(old_state)
    if digest:
        save_checkpoint(path, tensors, state)
    else:
        save_file(tensors, str(path), metadata={STATE_KEY: json.dumps(state)})


def test_round_trip_and_digest(tmp_path):
    path = tmp_path / "c.safetensors"
    tensors = {"model.w": torch.randn(4, 3), "optim.0.step": torch.tensor(2.0), "torch_rng": torch.get_rng_state(),
               "flag": torch.tensor([True, False]), "empty": torch.zeros(0)}
    state = {"epoch": 1, "bad": 0, "best_value": 0.5, "optimizer": {}, "scheduler": {}, "numpy_rng": {},
             "python_rng": [], "history": [], "best_epoch": 1, "best_valid": {}, "best_test": {}}
    save_checkpoint(path, tensors, state)
    with safe_open(str(path), framework="pt") as f:
        assert len(f.metadata()[DIGEST_KEY]) == 64
    got, got_state = load_checkpoint(path)
    assert got_state == state and all(torch.equal(got[k], v) for k, v in tensors.items())
    assert read_state(path) == state
    assert not list(tmp_path.glob("*.tmp*"))
    save_checkpoint(path, {**tensors, "model.w": tensors["model.w"] + 1}, state)  # same state, other tensor
    with safe_open(str(path), framework="pt") as f:
        other = {k: f.get_tensor(k) for k in f.keys()}
    save_file(other, str(path), metadata={STATE_KEY: json.dumps(state), DIGEST_KEY: "0" * 64})
    with pytest.raises(CheckpointError, match="does not match its digest"):
        load_checkpoint(path)


def test_resume_with_a_valid_checkpoint(run, tiny):
    rec = Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False, resume=True)
    assert rec.metrics["epochs"] == 3


def test_flipped_bytes_are_caught_by_the_digest(run, tiny):
    ck = run / "checkpoint.safetensors"
    data = bytearray(ck.read_bytes())
    data[-40:-24] = bytes(b ^ 0x55 for b in data[-40:-24])  # inside the last tensor's bytes
    ck.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its digest"):
        Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False, resume=True)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\xff" * 64, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}"])
def test_unreadable_checkpoint(run, tiny, content):
    (run / "checkpoint.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="checkpoint.safetensors: not a readable checkpoint"):
        Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False, resume=True)


@pytest.mark.parametrize("edit,match", [
    (lambda s: [s], "expected a JSON object"),
    (lambda s: {**s, "epoch": "3"}, "state field 'epoch'"),
    (lambda s: {**s, "history": {}}, "state field 'history'"),
    (lambda s: {**s, "bad": -1}, "out of range"),
    (lambda s: {k: v for k, v in s.items() if k != "optimizer"}, "state field 'optimizer'"),
    (lambda s: {**s, "numpy_rng": {"state": 1}}, "does not fit this run"),
    (lambda s: {**s, "python_rng": [1, 2]}, "does not fit this run"),
    (lambda s: {**s, "optimizer": {"state": {}, "param_groups": []}}, "does not fit this run"),
])
def test_sealed_but_wrong_state(run, tiny, edit, match):
    _rewrite(run / "checkpoint.safetensors", state=edit)
    with pytest.raises(CheckpointError, match=match) as e:
        Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False, resume=True)
    assert "checkpoint.safetensors" in str(e.value)


def test_sealed_but_wrong_tensors(run, tiny):
    def grow(t):
        k = next(k for k in t if k.startswith("model."))
        return {**t, k: torch.zeros(t[k].shape[0] + 1, *t[k].shape[1:])}
    _rewrite(run / "checkpoint.safetensors", tensors=grow)
    with pytest.raises(CheckpointError, match="does not fit this run"):
        Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False, resume=True)


def test_nan_weights_in_checkpoint(run, tiny):
    def nan(t):
        k = next(k for k in t if k.startswith("model."))
        return {**t, k: torch.full_like(t[k], float("nan"))}
    _rewrite(run / "checkpoint.safetensors", tensors=nan)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        Recommender("bpr", **CFG).fit(tiny, run_dir=run, show_progress=False, resume=True)


def test_checkpoint_without_digest_or_settings_still_resumes(run, tiny, caplog):
    """Written by an earlier prismrec: accepted with warnings (it cannot be verified or compared)."""
    _rewrite(run / "checkpoint.safetensors", state=lambda s: {k: v for k, v in s.items() if k != "run_config"},
             digest=False)
    rec = Recommender("bpr", **{**CFG, "epochs": 4}).fit(tiny, run_dir=run, show_progress=False, resume=True)
    assert rec.metrics["epochs"] == 4
    assert "without a digest" in caplog.text and "did not record its settings" in caplog.text


# -- settings on resume -------------------------------------------------------------------------------
class Stop(Exception):
    pass


def test_checkpoint_from_before_a_setting_existed_resumes(tmp_path, tiny):
    """A checkpoint written before a setting was added (here ``min_epochs``) resumes without
    permission: its prismrec had no such setting. A setting it did record still counts."""
    _cut(tiny, tmp_path / "r")
    path = tmp_path / "r" / "checkpoint.safetensors"

    def older(state):
        del state["run_config"]["train_config"]["min_epochs"]
        return state
    _rewrite(path, state=older)
    rec = Recommender("bpr", **CFG).fit(tiny, run_dir=tmp_path / "r", show_progress=False, resume=True)
    assert rec.metrics["epochs"] == CFG["epochs"]
    _cut(tiny, tmp_path / "r2")
    _rewrite(tmp_path / "r2" / "checkpoint.safetensors", state=older)
    with pytest.raises(CheckpointError, match="learning_rate"):
        Recommender("bpr", **{**CFG, "learning_rate": 0.5}).fit(
            tiny, run_dir=tmp_path / "r2", show_progress=False, resume=True)


def _cut(tiny, run_dir, at=1, **cfg):
    def crash(epoch, rec):
        if epoch == at:
            raise Stop
    with pytest.raises(Stop):
        Recommender("bpr", **{**CFG, **cfg}).fit(tiny, run_dir=run_dir, show_progress=False, callback=crash)


def test_resume_with_other_settings_lists_the_differences(tmp_path, tiny):
    _cut(tiny, tmp_path / "r")
    with pytest.raises(CheckpointError) as e:
        Recommender("bpr", **{**CFG, "learning_rate": 0.5, "reg_weight": 0.1}).fit(
            tiny, run_dir=tmp_path / "r", show_progress=False, resume=True)
    msg = str(e.value)
    assert "learning_rate 0.001 -> 0.5" in msg and "reg_weight" in msg
    assert "--allow-config-change learning_rate,reg_weight" in msg or "--allow-config-change reg_weight,learning_rate" in msg


def test_allowed_learning_rate_change_is_the_one_used(tmp_path, tiny):
    """Issue 22 item 4: `--resume --set learning_rate=0.5` trained at 0.001 while config.json said 0.5."""
    _cut(tiny, tmp_path / "r", at=1)
    rec = Recommender("bpr", **{**CFG, "learning_rate": 0.5}).fit(
        tiny, run_dir=tmp_path / "r", show_progress=False, resume=True, allow_config_change=["learning_rate"])
    lrs = [h["lr"] for h in rec.result.history]
    assert lrs[0] == pytest.approx(0.001) and lrs[-1] == pytest.approx(0.5)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["train_config"]["learning_rate"] == 0.5
    # the checkpoint now records the new setting: resuming again with it needs no permission
    assert read_state(tmp_path / "r" / "checkpoint.safetensors")["run_config"]["train_config"]["learning_rate"] == 0.5


def test_unchanged_settings_resume_exactly(tmp_path, tiny):
    """Re-applying the configured learning rate keeps an exact resume bit-identical."""
    full = Recommender("bpr", **CFG).fit(tiny, run_dir=tmp_path / "full", show_progress=False)
    _cut(tiny, tmp_path / "r", at=1)
    resumed = Recommender("bpr", **CFG).fit(tiny, run_dir=tmp_path / "r", show_progress=False, resume=True)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_runtime_settings_may_change_freely(tmp_path, tiny):
    _cut(tiny, tmp_path / "r")
    Recommender("bpr", **{**CFG, "num_threads": 1, "eval_batch_size": 7}).fit(
        tiny, run_dir=tmp_path / "r", show_progress=False, resume=True)


def test_another_model_or_dataset_is_never_allowed(tmp_path, tiny, tiny_one_modality):
    _cut(tiny, tmp_path / "r")
    with pytest.raises(CheckpointError, match="belongs to another run: model \"bpr\" -> \"lightgcn\""):
        Recommender("lightgcn", **CFG).fit(tiny, run_dir=tmp_path / "r", show_progress=False, resume=True)
    from prismrec import make_synthetic
    other = make_synthetic(200, 120, 10, modalities={"image": 24, "text": 16}, seed=1, name="tiny")
    with pytest.raises(CheckpointError, match="dataset.n_users 300 -> 200"):
        Recommender("bpr", **CFG).fit(other, run_dir=tmp_path / "r", show_progress=False, resume=True,
                                      allow_config_change=["epochs"])


def test_unknown_allowed_key(tmp_path, tiny):
    _cut(tiny, tmp_path / "r")
    with pytest.raises(ConfigError, match="unknown config key.*epoch_s"):
        Recommender("bpr", **CFG).fit(tiny, run_dir=tmp_path / "r", show_progress=False, resume=True,
                                      allow_config_change=["epoch_s"])


def test_model_shape_change_allowed_but_impossible(tmp_path, tiny):
    _cut(tiny, tmp_path / "r")
    with pytest.raises(PrismrecError, match="does not fit this run"):
        Recommender("bpr", **{**CFG, "embedding_dim": 8}).fit(
            tiny, run_dir=tmp_path / "r", show_progress=False, resume=True, allow_config_change=["embedding_dim"])


def test_recorded_settings_of_the_wrong_type(tmp_path, tiny):
    _cut(tiny, tmp_path / "r")
    _rewrite(tmp_path / "r" / "checkpoint.safetensors",
             state=lambda s: {**s, "run_config": {**s["run_config"], "dataset": [1], "train_config": "x"}})
    with pytest.raises(CheckpointError, match="belongs to another run: dataset.n_items"):
        Recommender("bpr", **CFG).fit(tiny, run_dir=tmp_path / "r", show_progress=False, resume=True)
