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


def test_malformed_device_is_refused_not_ignored():
    for bad in ("gpu", "cuda:x", "mps"):
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            Recommender("bpr", device=bad)


def test_cuda_device_errors_are_clear(tiny, monkeypatch):
    """A GPU run is refused before any work, naming why: a model not checked on a GPU (listing the
    ones that are), a plug-in not checked there, no CUDA device, a device index that is not there."""
    from prismrec.models.base import get_model_class
    from prismrec.plugins.befa import BeFAMixin
    monkeypatch.setattr(get_model_class("bpr"), "runs_on_cuda", False)
    with pytest.raises(PrismrecError, match=r"model 'bpr' has not been checked on a GPU.*device=cpu.*mentor"):
        Recommender("bpr", device="cuda", epochs=1).fit(tiny, show_progress=False)
    monkeypatch.setattr(BeFAMixin, "runs_on_cuda", False)
    with pytest.raises(PrismrecError, match="not been checked on a GPU"):  # a plug-in: only where both were
        Recommender("vbpr", plugins=["befa"], device="cuda", epochs=1).fit(tiny, show_progress=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PrismrecError, match="sees no CUDA GPU"):
        Recommender("vbpr", plugins=["erl"], device="cuda", epochs=1).fit(tiny, show_progress=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(PrismrecError, match=r"device='cuda:3'.*1 CUDA device"):
        Recommender("lightgcn", device="cuda:3", epochs=1).fit(tiny, show_progress=False)
    with pytest.raises(PrismrecError, match="data-parallel"):
        from prismrec.train.trainer import training_device
        training_device("cuda", get_model_class("lightgcn")(tiny), dist=object())


def test_every_trainable_model_is_checked_on_a_gpu():
    """runs_on_cuda is earned by the GPU check (benchmarks/gpu_check.py smoke): the file it wrote lists
    every model that claims it as having trained, saved and reloaded there."""
    import json
    from pathlib import Path

    from prismrec.models.base import registered_models
    smoke = json.loads((Path(__file__).parents[2] / "benchmarks/results/gpu-smoke.json").read_text())
    claimed = {n for n, c in registered_models().items() if c.runs_on_cuda}
    assert claimed and claimed <= set(smoke["passed"])


def test_to_device_moves_every_held_tensor(tiny):
    """Model.to_device reaches the tensors models keep outside parameters and buffers (graphs, index
    tensors inside helper objects, caches), and keeps shared ones shared."""
    from prismrec.models.base import build_model, map_state
    model = build_model("mentor", tiny)
    seen = []

    def mark(t):
        seen.append(t)
        return t.clone()
    a, at = model.adj.a, model.adj.at
    assert a is at  # symmetric graph: one tensor
    map_state(model, mark)
    assert model.adj.a is model.adj.at and model.adj.a is not a
    assert any(t is a for t in seen) and model.item_graph.a is not None
    assert sum(t is a for t in seen) == 1
    model.to_device("cpu")
    assert model.device == torch.device("cpu")
    rec = Recommender("freedom", epochs=1, batch_size=256)
    rec.fit(tiny, show_progress=False)
    assert rec.metrics["device"] == "cpu"
