"""The training loop: epochs, BPR sampling, early stopping, checkpoints, exact resume, logs."""
from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from prismrec.config import TrainConfig
from prismrec.data.dataset import Dataset
from prismrec.data.sampler import SAMPLERS
from prismrec.errors import PrismrecError, UnsupportedError
from prismrec.evaluation import evaluate_splits
from prismrec.models.base import Model
from prismrec.train.checkpoint import (apply_hparams, checkpoint_errors, configured_hparams, flatten_optimizer,
                                       load_checkpoint, prefixed, save_checkpoint, strip_prefix,
                                       unflatten_optimizer)

log = logging.getLogger("prismrec")
CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: best epoch, metrics there, per-epoch history, timings."""

    best_epoch: int = -1
    best_valid: dict = field(default_factory=dict)
    best_test: dict = field(default_factory=dict)
    epochs_run: int = 0
    history: list = field(default_factory=list)
    stopped_early: bool = False
    # why training ended: "early_stopping", "epochs" (the cap), "callback", "time_budget" or
    # "interrupted" (Ctrl-C / SIGINT or SIGTERM; the unfinished epoch is dropped)
    stop_reason: str = ""
    stop_signal: int | None = None   # the signal that interrupted the run (SIGINT, SIGTERM), if one did

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"

    @property
    def sec_per_epoch(self) -> float:
        t = [h["train_seconds"] for h in self.history]
        return float(np.mean(t)) if t else 0.0

    @property
    def cpu_sec_per_epoch(self) -> float:
        t = [h["train_cpu_seconds"] for h in self.history if "train_cpu_seconds" in h]
        return float(np.mean(t)) if t else 0.0

    @property
    def eval_seconds(self) -> float:
        t = [h["eval_seconds"] for h in self.history if "eval_seconds" in h]
        return float(np.median(t)) if t else 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _OutOfTime(Exception):
    """Raised between batches when the time budget ran out during an epoch."""


# An epoch this many times slower than the median of the run's first epochs draws a warning.
SLOW_EPOCH_FACTOR = 3.0
_FIRST_EPOCHS = 3


def seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


class Trainer:
    """Fits ``model`` on ``dataset`` by the MMRec protocol.

    Args:
        model: a built model (``build_model``), seeded by the caller for reproducible init.
        dataset: the data; graphs were built from its train split.
        config: training settings.
        run_dir: where checkpoints and the JSON-lines log go (``None``: nothing written).
        show_progress: tqdm bars per epoch.
        callback: ``callback(epoch, record)`` after each epoch; return ``False`` to stop.
        rng: numpy generator driving sampling (its state is checkpointed).
        max_seconds: time budget of this call of :meth:`fit` (``None``: none). When it runs out,
            training stops and keeps the best epoch so far; an epoch still running then is dropped
            (its checkpoint is the previous epoch's, so ``resume`` continues from there), except the
            first one, which always finishes.

    Ctrl-C (SIGINT) during :meth:`fit` asks for a stop: the running epoch is dropped at its next
    batch (an epoch already being evaluated or checkpointed finishes first) and :meth:`fit` returns
    the result so far with ``stop_reason == "interrupted"``. A second Ctrl-C stops at once. Where
    no handler can be installed (not the main thread), a ``KeyboardInterrupt`` is handled the same
    way; data-parallel runs re-raise it.
    """

    def __init__(self, model: Model, dataset: Dataset, config: TrainConfig, *, run_dir: Path | None = None,
                 show_progress: bool = True, callback: Callable | None = None,
                 rng: np.random.Generator | None = None, dist=None, max_seconds: float | None = None):
        self.model, self.dataset, self.config = model, dataset, config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.show_progress = show_progress
        self.callback = callback
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self.dist = dist  # prismrec.train.distributed.DistContext or None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.run_config: dict | None = None  # the run's settings, recorded in each checkpoint (api.py)
        if max_seconds is not None and not max_seconds > 0:
            raise PrismrecError(f"the time budget must be > 0 seconds, got {max_seconds}")
        self.max_seconds = max_seconds
        self._t_start = 0.0
        self._stop_signal: int | None = None  # the signal of a requested stop (checked between batches)
        self.device = torch.device("cpu")      # where fit() trains (TrainConfig.device, checked there)

    # ---------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> FitResult:
        cfg, model = self.config, self.model
        res = FitResult()
        # a model with nothing to train (most-popular, ItemKNN-CBF) is evaluated where it was built
        self.device = training_device(cfg.device, model, self.dist) if model.trainable else torch.device("cpu")
        if self.device.type != "cpu":
            model.to_device(self.device)
        self._t_start = time.perf_counter()
        warn_uninformative_cutoff(self.dataset, cfg.valid_metric)
        if not model.trainable:
            res.history.append(self._evaluate_record(0, float("nan"), 0.0))
            res.best_epoch, res.best_valid, res.best_test = 0, res.history[0]["valid"], res.history[0].get("test", {})
            self.best_state = {k: v.clone() for k, v in model.state_dict().items()}
            res.stop_reason = "epochs"
            return res
        opt = model.configure_optimizer(cfg.learning_rate, cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, model.lr_factor)
        rows, batch_size = None, cfg.batch_size
        if self.dist:  # each rank: its own shard, its share of the global batch, its own sampling stream
            rows = self.dist.shard_rows(self.dataset.train, model.sampler)
            batch_size = self.dist.local_batch_size(cfg.batch_size)
            self.rng = self.dist.sampler_rng(cfg.seed, self.rng)
        sampler = SAMPLERS[model.sampler](self.dataset.train, batch_size, self.rng, rows=rows)
        start, bad = 0, 0
        best_value = -math.inf
        if resume:
            with checkpoint_errors(self.run_dir / CHECKPOINT if self.run_dir is not None else None):
                start, bad, best_value = self._restore(opt, sched, res)
            if bad > cfg.patience and start >= cfg.min_epochs:  # the interrupted run had already stopped early
                res.stopped_early, res.epochs_run = True, len(res.history)
                res.stop_reason = "early_stopping"
                return res
        is_main = self.dist is None or self.dist.rank == 0
        show = self.show_progress and is_main
        # no total: with early stopping the epoch cap (1000 by default) says nothing about when the
        # run ends, so the bar shows the stopping progress instead (see _progress_postfix)
        epoch_bar = tqdm(total=None, initial=start, desc=model.name, unit="epoch", disable=not show,
                         bar_format="{desc}: {n_fmt} epochs{postfix} [{elapsed}, {rate_fmt}]")
        # updates inside backward() need gradients that are final there: no all-reduce, no clipping
        model.step_in_backward(opt if self.dist is None and cfg.clip_grad_norm <= 0 else None)
        previous_handlers = self._install_stop_handlers()
        try:
            self._loop(epoch_bar, show, start, bad, best_value, opt, sched, sampler, res, is_main)
        except KeyboardInterrupt:
            if self.dist:  # the other ranks are inside collectives: no orderly stop for one of them
                raise
            res.stop_reason = "interrupted"
            res.stop_signal = self._stop_signal or signal.SIGINT
            if is_main:
                log.warning("interrupted: the unfinished epoch is dropped; best epoch so far: %s",
                            res.best_epoch if res.best_epoch >= 0 else "none")
        except _OutOfTime:
            res.stop_reason = "time_budget"
            log.warning("time budget of %s used up during epoch %d: that epoch is dropped; best epoch %d",
                        _minutes(self.max_seconds), len(res.history), res.best_epoch)
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            model.step_in_backward(None)
            epoch_bar.close()
        res.stop_reason = res.stop_reason or "epochs"
        res.epochs_run = len(res.history)
        res.best_valid = res.best_valid or {}
        return res

    def _install_stop_handlers(self) -> dict:
        """Turn the first Ctrl-C (SIGINT) or SIGTERM (``kill``, a batch scheduler's time limit, ``docker
        stop``) into a stop request, checked between batches; a second one stops at once. Returns the
        handlers to restore: none where the caller handles a signal its own way, off the main thread,
        or data-parallel (the other ranks sit in collectives)."""
        self._stop_signal = None
        if self.dist is not None or threading.current_thread() is not threading.main_thread():
            return {}

        def request_stop(signum, frame):
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signum
            what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {what} again"
            sys.stderr.write(f"\n{what}: stopping; the running epoch is dropped and the best epoch kept "
                             f"({again} to stop at once)\n")
        previous = {}
        for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) is default:
                previous[signum] = signal.signal(signum, request_stop)
        return previous

    def _out_of_time(self) -> bool:
        return self.max_seconds is not None and time.perf_counter() - self._t_start >= self.max_seconds

    def _loop(self, epoch_bar, show, start, bad, best_value, opt, sched, sampler, res, is_main):
        cfg, model = self.config, self.model
        first_epochs: list[float] = []  # train seconds of this session's first epochs
        slow_warned = False
        for epoch in range(start, cfg.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            model.train()
            model.on_epoch_start(epoch)
            total, n = 0.0, 0
            # a batch bar only where an epoch is long enough to wait for
            bar = tqdm(sampler, total=len(sampler), desc=f"epoch {epoch}", leave=False,
                       disable=not show or len(sampler) < 100)
            # a running epoch may be dropped for the budget only once there is a best epoch to keep
            can_drop = self.max_seconds is not None and res.best_epoch >= 0 and self.dist is None
            on_gpu = self.device.type != "cpu"
            for batch in bar:
                if self._stop_signal is not None:
                    raise KeyboardInterrupt
                if can_drop and self._out_of_time():
                    raise _OutOfTime
                if on_gpu:
                    batch = type(batch)(*(None if t is None else t.to(self.device, non_blocking=True) for t in batch))
                opt.zero_grad(set_to_none=True)
                loss = model.loss(batch)
                loss.backward()
                if self.dist:
                    self.dist.all_reduce_grads(model)
                if cfg.clip_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                opt.step()
                total += loss.item()
                n += 1
            sched.step()
            train_seconds = time.perf_counter() - t0
            cpu_seconds = time.process_time() - c0  # all threads' CPU time: a load-robust cost measure
            mean_loss = total / max(n, 1)
            diverged = not math.isfinite(mean_loss)
            if self.dist:  # every rank must stop together
                diverged = self.dist.any(diverged)
            if diverged:
                raise PrismrecError(f"training diverged at epoch {epoch}: loss is {mean_loss}; "
                                    "lower learning_rate or raise reg_weight")
            rec = self._evaluate_record(epoch, mean_loss, train_seconds)
            rec["train_cpu_seconds"] = cpu_seconds
            rec["lr"] = opt.param_groups[0]["lr"]
            res.history.append(rec)
            value = rec["valid"][cfg.valid_metric]
            if value > best_value:
                best_value, bad = value, 0
                res.best_epoch, res.best_valid, res.best_test = epoch, rec["valid"], rec.get("test", {})
                self._keep_best(model)
            else:
                bad += 1
            rec["best_epoch"] = res.best_epoch
            epoch_bar.set_postfix_str(_progress_postfix(mean_loss, cfg.valid_metric, value, best_value,
                                                        res.best_epoch, bad, cfg.patience), refresh=False)
            epoch_bar.update(1)
            if len(first_epochs) < _FIRST_EPOCHS:
                first_epochs.append(train_seconds)
            elif is_main:
                slow_warned = _warn_slow_epoch(epoch, train_seconds, first_epochs, slow_warned)
            if is_main:
                (log.debug if show else log.info)(
                    "epoch %d loss %.4f valid %s %.4f (best %.4f @ %d) %.2fs train %.2fs eval", epoch,
                         mean_loss, cfg.valid_metric, value, best_value, res.best_epoch, train_seconds,
                         rec["eval_seconds"])
                self._write_log(rec)
            stop = bad > cfg.patience and epoch + 1 >= cfg.min_epochs
            if stop:
                res.stop_reason = "early_stopping"
            if self.callback is not None and self.callback(epoch, rec) is False:
                stop, res.stop_reason = True, res.stop_reason or "callback"
            if cfg.checkpoint and (self.run_dir is not None or self.dist):
                # every rank's sampling state goes into rank 0's checkpoint (a collective: all ranks call it)
                rank_rngs = self.dist.all_gather_object(self.rng.bit_generator.state) if self.dist else None
                if is_main and self.run_dir is not None:
                    self._save(epoch, opt, sched, bad, best_value, res, rank_rngs)
                if self.dist:  # no rank may run ahead and read a checkpoint rank 0 is still writing
                    self.dist.barrier()
            if stop:
                res.stopped_early = True
                break
            if self._stop_signal is not None and epoch + 1 < cfg.epochs:  # Ctrl-C during evaluation/checkpoint
                raise KeyboardInterrupt
            if self._out_of_time() and epoch + 1 < cfg.epochs:
                res.stop_reason = "time_budget"
                if is_main:
                    log.warning("time budget of %s used up after epoch %d; keeping best epoch %d",
                                _minutes(self.max_seconds), epoch, res.best_epoch)
                break

    def _keep_best(self, model) -> None:
        """Copy the model's state into ``best_state``, reusing its tensors after the first time
        (a fresh clone beside the old one doubled the state at every improvement: +134 MB at
        MGCN's peak on baby-like, whose trainable feature tables are most of its state)."""
        state = model.state_dict()
        best = self.best_state
        if best is None or best.keys() != state.keys() or any(
                best[k].shape != v.shape or best[k].dtype != v.dtype for k, v in state.items()):
            self.best_state = {k: v.detach().clone() for k, v in state.items()}
            return
        for k, v in state.items():
            best[k].copy_(v)

    # ---------------------------------------------------------------------------------------
    def _evaluate_record(self, epoch: int, loss: float, train_seconds: float) -> dict:
        cfg = self.config
        splits = {"valid": self.dataset.valid}
        if cfg.eval_test_every_epoch:
            splits["test"] = self.dataset.test
        extra = {"test": self.dataset.valid} if cfg.mask_valid_in_test and "test" in splits else None
        t0 = time.perf_counter()
        with self.model.scoring():
            if self.dist:
                metrics = self.dist.evaluate(self.model, self.dataset, splits, cfg, extra)
            else:
                metrics = evaluate_splits(self.model.score, self.dataset.train, splits, ks=cfg.eval_ks,
                                          block_size=cfg.eval_batch_size, extra_masks=extra)
        rec = {"epoch": epoch, "loss": loss, "train_seconds": train_seconds,
               "eval_seconds": time.perf_counter() - t0, **metrics}
        return rec

    def _write_log(self, rec: dict) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _save(self, epoch, opt, sched, bad, best_value, res: FitResult, rank_rngs=None) -> None:
        opt_tensors, opt_rest = flatten_optimizer(opt.state_dict())
        tensors = {**prefixed("model", self.model.state_dict()), **opt_tensors,
                   "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":  # dropout, perturbation noise on the GPU draw from its own generator
            tensors["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.best_state is not None:
            tensors.update(prefixed("best", self.best_state))
        state = {"epoch": epoch, "bad": bad, "best_value": best_value, "optimizer": opt_rest,
                 "run_config": self.run_config,
                 "scheduler": sched.state_dict(), "numpy_rng": self.rng.bit_generator.state,
                 "python_rng": list(_jsonable(random.getstate())), "history": res.history,
                 "best_epoch": res.best_epoch, "best_valid": res.best_valid, "best_test": res.best_test,
                 "model_extra": self.model.extra_state() if hasattr(self.model, "extra_state") else None}
        if rank_rngs is not None:
            state["numpy_rng_ranks"] = rank_rngs
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.run_dir / CHECKPOINT, tensors, state)

    def _restore(self, opt, sched, res: FitResult) -> tuple[int, int, float]:
        path = self.run_dir / CHECKPOINT if self.run_dir is not None else None
        if path is None or not path.is_file():
            log.warning("no checkpoint to resume from in %s; starting from epoch 0", self.run_dir)
            return 0, 0, -math.inf
        tensors, state = load_checkpoint(path)
        self.model.load_state_dict(strip_prefix("model", tensors))
        configured = configured_hparams(opt, sched)
        opt.load_state_dict(unflatten_optimizer(strip_prefix("optim", tensors), state["optimizer"]))
        sched.load_state_dict(state["scheduler"])
        apply_hparams(opt, sched, configured)  # the run uses the settings it records (issue 22)
        torch.set_rng_state(tensors["torch_rng"])
        if "cuda_rng" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["cuda_rng"], self.device)
        self.rng.bit_generator.state = state["numpy_rng"]
        ranks = state.get("numpy_rng_ranks")
        if self.dist and ranks:
            if len(ranks) != self.dist.world_size:
                raise PrismrecError(f"{path} was written by {len(ranks)} ranks; resume it with "
                                    f"--nproc_per_node {len(ranks)}, not {self.dist.world_size}")
            self.rng.bit_generator.state = ranks[self.dist.rank]
        random.setstate(_python_state(state["python_rng"]))
        best = strip_prefix("best", tensors)
        self.best_state = best or None
        if state.get("model_extra") is not None and hasattr(self.model, "load_extra_state"):
            self.model.load_extra_state(state["model_extra"])
        res.history = state["history"]
        res.best_epoch, res.best_valid, res.best_test = state["best_epoch"], state["best_valid"], state["best_test"]
        # the log file may hold epochs written after the checkpoint: rewrite it from the history
        if self.run_dir is not None and (self.dist is None or self.dist.rank == 0):
            with open(self.run_dir / LOG, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in res.history)
        log.info("resumed from %s after epoch %d", path, state["epoch"])
        return state["epoch"] + 1, state["bad"], state["best_value"]


def training_device(name: str, model: Model, dist=None) -> torch.device:
    """``TrainConfig.device`` as a torch device, checked before any work: a GPU needs a model that
    was checked there (``Model.runs_on_cuda``), one process (data-parallel runs use gloo on the CPU)
    and a torch that sees a CUDA device of that index.

    Raises:
        UnsupportedError: the model or a data-parallel run on a GPU.
        PrismrecError: no such CUDA device here.
    """
    device = torch.device(name)
    if device.type == "cpu":
        return device
    if dist is not None:
        raise UnsupportedError(f"device={name!r}: data-parallel training (torchrun) runs on the CPU (gloo "
                               "backend); train on one GPU without torchrun, or with device=cpu")
    if not type(model).runs_on_cuda:
        from prismrec.models.base import registered_models
        ready = ", ".join(n for n, c in registered_models().items() if c.runs_on_cuda) or "none"
        raise UnsupportedError(f"model '{model.name}' has not been checked on a GPU yet: train it with "
                               f"device=cpu (models that train with device=cuda: {ready})")
    if not torch.cuda.is_available():
        raise PrismrecError(f"device={name!r}, but this torch ({torch.__version__}) sees no CUDA GPU (a CPU "
                            "build of torch, or no driver): install a CUDA build of torch, or train with device=cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise PrismrecError(f"device={name!r}, but torch sees {torch.cuda.device_count()} CUDA device(s) "
                            f"(indices 0-{torch.cuda.device_count() - 1})")
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)


def _minutes(seconds: float | None) -> str:
    return f"{seconds / 60:g} min" if seconds is not None else "none"


def _progress_postfix(loss: float, metric: str, value: float, best: float, best_epoch: int, bad: int,
                      patience: int) -> str:
    """The epoch bar's status: loss, this epoch's metric, the best so far and how close early
    stopping is (it stops once ``bad`` exceeds ``patience``)."""
    return (f"loss {loss:.4f}, {metric} {value:.4f}, best {best:.4f} @ epoch {best_epoch}, "
            f"no gain {bad}/{patience}")


def _warn_slow_epoch(epoch: int, seconds: float, first: list[float], warned: bool) -> bool:
    """Warn (once per slow spell) when an epoch runs far slower than the session's first epochs.

    Returns whether a slow spell is going on (the ``warned`` state for the next epoch).
    """
    base = float(np.median(first)) if first else 0.0
    if base <= 0 or seconds < 1.0:  # sub-second epochs: timer noise, nothing to act on
        return warned
    ratio = seconds / base
    if ratio >= SLOW_EPOCH_FACTOR and not warned:
        try:
            load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        except OSError:  # no load average on this platform
            load = f"{os.cpu_count()} cores"
        log.warning("epoch %d took %.1f s, %.1fx the first epochs' %.1f s (%s): the machine may be busy "
                    "(other jobs, too many threads: try --set num_threads=N)", epoch, seconds, ratio, base, load)
        return True
    return warned and ratio >= 1.5


_CUTOFF_WARNED: set = set()


def warn_uninformative_cutoff(dataset: Dataset, valid_metric: str, share: float = 0.05) -> bool:
    """Warn when the K of ``valid_metric`` reaches the number of candidate items of many users.

    A user's candidates are the items not in their training row. Where K is at least that
    number, every relevant item is in the top K whatever the model does (Recall@K = 1.0): early
    stopping then selects on noise. Warns when that holds for at least ``share`` of the users
    with validation items, or when K >= the number of items.

    Returns:
        Whether it warned.
    """
    try:
        k = int(valid_metric.split("@", 1)[1])
    except (IndexError, ValueError):
        return False
    valid = dataset.valid
    if valid is None or valid.nnz == 0 or dataset.n_items == 0:
        return False
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    candidates = dataset.n_items - np.diff(dataset.train.indptr)[users]
    n_bad = int((candidates <= k).sum())
    if k < dataset.n_items and n_bad < share * len(users):
        return False
    key = (dataset.name, dataset.n_items, valid.nnz, valid_metric)
    if key in _CUTOFF_WARNED:  # once per dataset and metric (a tuning study fits many times)
        return True
    _CUTOFF_WARNED.add(key)
    log.warning("valid_metric %s: K=%d is at least the number of candidate items (items not in the training "
                "row; %d items in all) for %d of %d validation users (%.0f%%): for them every relevant item is "
                "ranked in the top %d whatever the model, so the metric carries no signal. Use a smaller K, "
                "e.g. --set valid_metric=%s@%d", valid_metric, k, dataset.n_items, n_bad, len(users),
                100 * n_bad / max(len(users), 1), k, valid_metric.split("@")[0],
                max(1, min(k // 4, int(np.median(candidates)) // 4)))
    return True


def _jsonable(state):
    version, internal, gauss = state
    return version, list(internal), gauss


def _python_state(s):
    version, internal, gauss = s
    return version, tuple(internal), gauss
