"""Stopping a run early and keeping it: Ctrl-C, the time budget, the slow-epoch and K warnings,
the progress bar (issue 23, items 1-3 and 6)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from prismrec import Recommender
from prismrec.api import TrainingInterrupted
from prismrec.data import make_synthetic, save_mmrec
from prismrec.train import trainer as trainer_mod

LONG = dict(epochs=10_000, patience=10_000, batch_size=256)


@pytest.fixture
def ctrl_c_reaches_python():
    """Python's own Ctrl-C handler for the test, whatever this process inherited: a shell starts a
    background job (``pytest ... &`` in a script) with SIGINT ignored, and prismrec, rightly, leaves
    an ignored or caller-installed SIGINT alone, so these tests would wait for a stop that never comes."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _default_sigint():  # in the child before exec: an ignored SIGINT would be inherited by it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_writes_the_best_epochs_bundle_and_resumes(tmp_path, tiny, ctrl_c_reaches_python):
    snaps = {}
    rec = Recommender("bpr", **LONG, learning_rate=0.05, seed=3)

    def ctrl_c(epoch, _):
        snaps[epoch] = {k: v.clone() for k, v in rec.model.state_dict().items()}
        if epoch == 4:
            os.kill(os.getpid(), signal.SIGINT)  # the handler asks for a stop; epoch 5 is dropped
    with pytest.raises(TrainingInterrupted) as e:
        rec.fit(tiny, run_dir=tmp_path / "run", show_progress=False, callback=ctrl_c)
    assert e.value.run_dir == tmp_path / "run" and e.value.recommender is rec
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["interrupted"] is True and m["stop_reason"] == "interrupted" and m["epochs"] == 5
    loaded = Recommender.load(tmp_path / "run")
    for k, v in loaded.model.state_dict().items():
        if k in snaps[m["best_epoch"]]:
            assert torch.equal(v, snaps[m["best_epoch"]][k]), k
    # --resume continues after the last finished epoch
    more = Recommender("bpr", **{**LONG, "epochs": 7}, learning_rate=0.05, seed=3)
    more.fit(tiny, run_dir=tmp_path / "run", show_progress=False, resume=True, allow_config_change=("epochs",))
    assert more.metrics["epochs"] == 7 and more.metrics["interrupted"] is False
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["interrupted"] is False


def test_keyboard_interrupt_mid_epoch_drops_it(tiny):
    """Where no handler is installed (another thread's fit, or the caller's own handler), the
    KeyboardInterrupt itself is caught: the running epoch is dropped, the best one kept."""
    rec = Recommender("bpr", **LONG)
    calls = {"n": 0}
    loss = rec.model_cls.loss

    def fit_with_interrupt():
        def interrupting_loss(self, batch):
            calls["n"] += 1
            if calls["n"] == 12:  # tiny: 2,369 train rows / 256 = 10 batches per epoch; stops in epoch 1
                raise KeyboardInterrupt
            return loss(self, batch)
        rec.model_cls.loss = interrupting_loss
        try:
            rec.fit(tiny, show_progress=False)
        finally:
            rec.model_cls.loss = loss
    with pytest.raises(TrainingInterrupted):
        fit_with_interrupt()
    assert rec.metrics["interrupted"] and rec.metrics["best_epoch"] >= 0
    assert rec.metrics["epochs"] == len(rec.result.history) and rec.metrics["epochs"] < 3


def test_interrupt_before_the_first_epoch_writes_nothing(tmp_path, tiny):
    rec = Recommender("bpr", **LONG)

    def interrupting_loss(self, batch):
        raise KeyboardInterrupt
    original = rec.model_cls.loss
    rec.model_cls.loss = interrupting_loss
    try:
        with pytest.raises(TrainingInterrupted) as e:
            rec.fit(tiny, run_dir=tmp_path / "run", show_progress=False)
    finally:
        rec.model_cls.loss = original
    assert e.value.run_dir is None and not (tmp_path / "run" / "weights.safetensors").exists()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signal_to_prismrec_train_writes_a_bundle(tmp_path, tiny, signum, code):
    """Issue 23 item 1: Ctrl-C (SIGINT) on `prismrec train` writes the best epoch's bundle, marked
    interrupted, exits 130 and prints the command that resumes the run; SIGTERM (a scheduler's
    time limit, `docker stop`) does the same and exits 143."""
    data = save_mmrec(tiny, tmp_path / "tiny")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "prismrec", "train", "--data", str(data), "--model", "bpr", "--out", str(run),
           "--set", "epochs=100000", "--set", "patience=100000", "--set", "batch_size=64", "--set", "num_threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        log = run / "log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["best_epoch"] >= 0
    assert "marked interrupted" in err and "--resume" in err and "Traceback" not in err
    assert Recommender.load(run).recommend(tiny.user_ids[0], k=5)[0].shape == (5,)
    text = (run / "train.log").read_text()
    assert "prismrec train" in text and "prismrec 0." in text and "epoch 0 " in text


def test_time_budget_stops_and_keeps_the_best(tmp_path, tiny, caplog):
    rec = Recommender("bpr", **LONG)
    budget_s = 1.5
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        t0 = time.perf_counter()
        rec.fit(tiny, run_dir=tmp_path / "run", show_progress=False, max_minutes=budget_s / 60,
                callback=lambda epoch, _: time.sleep(0.05))
        elapsed = time.perf_counter() - t0
    m = rec.metrics
    assert m["stop_reason"] == "time_budget" and 1 <= m["epochs"] < 10_000
    assert elapsed < budget_s + 10  # stops near the budget (one epoch of slack, plus start-up)
    assert "time budget" in caplog.text
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["stop_reason"] == "time_budget" and saved["best_epoch"] == m["best_epoch"]


def test_time_budget_must_be_positive(tiny):
    with pytest.raises(Exception, match="time budget"):
        Recommender("bpr", epochs=2).fit(tiny, show_progress=False, max_minutes=0)


def test_slow_epoch_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        assert not trainer_mod._warn_slow_epoch(5, 2.5, [1.0, 1.1, 0.9], False)
        assert trainer_mod._warn_slow_epoch(6, 4.0, [1.0, 1.1, 0.9], False)
        assert "4.0x the first epochs" in caplog.text and "busy" in caplog.text
        caplog.clear()
        assert trainer_mod._warn_slow_epoch(7, 5.0, [1.0, 1.1, 0.9], True)  # same slow spell: no repeat
        assert caplog.text == ""
        assert not trainer_mod._warn_slow_epoch(8, 1.0, [1.0, 1.1, 0.9], True)  # back to normal
        assert not trainer_mod._warn_slow_epoch(9, 0.5, [0.1, 0.1, 0.1], False)  # sub-second: noise


def test_cutoff_warning_when_k_reaches_the_candidates(caplog):
    few = make_synthetic(60, 25, 8, modalities={"image": 4}, seed=0, name="few-items")
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        Recommender("pop").fit(few, show_progress=False)
    assert "K=20 is at least the number of candidate items" in caplog.text
    assert "valid_metric=recall@" in caplog.text


def test_no_cutoff_warning_on_a_normal_catalogue(tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        Recommender("pop").fit(tiny, show_progress=False)
    assert "candidate items" not in caplog.text


def test_progress_bar_shows_early_stopping_not_the_epoch_cap(tiny, capsys):
    Recommender("bpr", epochs=1000, patience=2, learning_rate=0.05, batch_size=256).fit(tiny, show_progress=True)
    err = capsys.readouterr().err
    assert "no gain" in err and "/2" in err and "best" in err
    assert "/1000" not in err and "1000/" not in err  # no count (or ETA) towards the 1000-epoch cap


def test_time_budget_drops_a_running_epoch(tiny, monkeypatch):
    """Once a best epoch exists, the budget is checked between batches: the epoch running when it
    runs out is dropped (not finished), so the run stops within about one batch of the budget.
    The trainer's clock is driven by the batch count (0.1 s a batch), so the budget runs out in the
    middle of the third epoch whatever the machine's load (a wall clock made it land, on a slow
    CI machine, on an epoch's end)."""
    calls = {"n": 0}
    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(
        perf_counter=lambda: 0.1 * calls["n"], process_time=time.process_time))
    rec = Recommender("bpr", **LONG)
    loss = rec.model_cls.loss

    def counted_loss(self, batch):  # 10 batches per epoch
        calls["n"] += 1
        return loss(self, batch)
    monkeypatch.setattr(rec.model_cls, "loss", counted_loss)
    rec.fit(tiny, show_progress=False, max_minutes=2.45 / 60)  # out of time after 25 batches
    n_epochs = len(rec.result.history)
    per_epoch = -(-tiny.train.nnz // 256)
    assert per_epoch == 10 and n_epochs == 2
    assert rec.metrics["stop_reason"] == "time_budget"
    assert calls["n"] > per_epoch * n_epochs  # batches of a dropped epoch ran
    assert calls["n"] < per_epoch * (n_epochs + 1)  # ... and it was not finished


def test_min_epochs_holds_off_early_stopping(tiny):
    """``min_epochs`` is a warm-up: no early stop before it, the usual rule after it; best epoch
    selection is unchanged."""
    lr = dict(learning_rate=0.05, batch_size=256, patience=1, seed=3)
    free = Recommender("bpr", epochs=200, **lr).fit(tiny, show_progress=False)
    assert free.metrics["stop_reason"] == "early_stopping"
    n = free.metrics["epochs"]
    held = Recommender("bpr", epochs=200, min_epochs=n + 5, **lr).fit(tiny, show_progress=False)
    assert held.metrics["epochs"] >= n + 5
    assert held.result.history[n - 1]["valid"] == free.result.history[n - 1]["valid"]  # same run up to there
    assert held.metrics["stop_reason"] in ("early_stopping", "epochs")
    with pytest.raises(Exception, match="min_epochs"):
        Recommender("bpr", epochs=5, min_epochs=6)
