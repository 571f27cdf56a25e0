"""Trainer: exact resume, early stopping, checkpoints and logs (issue 3)."""
import json

import pytest
import torch

from prismrec import Recommender
from prismrec.errors import PrismrecError


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("model", ["bpr", "vbpr"])
def test_resume_matches_uninterrupted_run(tmp_path, tiny, model):
    cfg = dict(epochs=6, batch_size=256, patience=50, seed=7)
    full = Recommender(model, **cfg).fit(tiny, run_dir=tmp_path / "full", show_progress=False)

    def crash(epoch, rec):
        if epoch == 3:  # dies after epoch 3's evaluation, before its checkpoint is written
            raise Interrupt
    with pytest.raises(Interrupt):
        Recommender(model, **cfg).fit(tiny, run_dir=tmp_path / "cut", show_progress=False, callback=crash)
    resumed = Recommender(model, **cfg).fit(tiny, run_dir=tmp_path / "cut", show_progress=False, resume=True)

    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.metrics["best_epoch"] == full.metrics["best_epoch"]
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(6))
    full_log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in full_log]


def test_early_stopping_and_best_epoch(tiny):
    rec = Recommender("bpr", epochs=200, patience=2, learning_rate=0.05, batch_size=256).fit(tiny, show_progress=False)
    hist = rec.result.history
    assert rec.result.stopped_early and len(hist) < 200
    vals = [h["valid"]["recall@20"] for h in hist]
    best = max(range(len(vals)), key=lambda i: (vals[i], -i))
    assert rec.metrics["best_epoch"] == best
    assert len(hist) - 1 - best == 3  # stops after patience + 1 evaluations without improvement
    assert rec.metrics["test"] == hist[best]["test"]


def test_best_state_is_the_best_epochs_weights(tiny):
    """best_state is updated in place after the first improvement: it must hold the best epoch's
    weights (not the last epoch's, and not aliases of the live parameters)."""
    snaps = {}
    rec = Recommender("bpr", epochs=8, patience=50, learning_rate=0.05, batch_size=256)

    def snapshot(epoch, _):
        snaps[epoch] = {k: v.clone() for k, v in rec.model.state_dict().items()}
    rec.fit(tiny, show_progress=False, callback=snapshot)
    best = rec.metrics["best_epoch"]
    assert 0 < best < 7  # improved more than once, and trained on after the best epoch
    for k, v in rec.model.state_dict().items():  # the model was restored to the best weights
        assert torch.equal(v, snaps[best][k]), k
        assert not torch.equal(v, snaps[7][k]), k


def test_bundle_written_with_best_weights(tmp_path, tiny):
    rec = Recommender("bpr", epochs=5, batch_size=256).fit(tiny, run_dir=tmp_path / "run", show_progress=False)
    for f in ("config.json", "weights.safetensors", "users.json", "items.json", "metrics.json", "log.jsonl",
              "checkpoint.safetensors", "embeddings.safetensors"):
        assert (tmp_path / "run" / f).is_file(), f
    loaded = Recommender.load(tmp_path / "run")
    for u in tiny.user_ids[:5]:
        a, sa = rec.recommend(u, k=10)
        b, sb = loaded.recommend(u, k=10)
        assert a.tolist() == b.tolist()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == rec.metrics["test"]
    assert not list((tmp_path / "run").glob("*.tmp*"))


def test_divergence_is_a_clear_error(tiny):
    with pytest.raises(PrismrecError, match="diverged"):
        Recommender("bpr", epochs=3, learning_rate=float("inf"), batch_size=256).fit(tiny, show_progress=False)


def test_unknown_config_key(tiny):
    with pytest.raises(ValueError, match=r"unknown config key.*embeding_dim.*embedding_dim"):
        Recommender("bpr", embeding_dim=8)


def test_non_cpu_device_is_refused_not_ignored():
    with pytest.raises(ValueError, match="device must be 'cpu'.*'cuda'"):
        Recommender("bpr", device="cuda")
