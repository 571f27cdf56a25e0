"""The training loop: epochs, BPR sampling, early stopping, checkpoints, exact resume, logs."""
from __future__ import annotations

import json
import logging
import math
import random
import resource
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
from prismrec.errors import PrismrecError
from prismrec.evaluation import evaluate_splits
from prismrec.models.base import Model
from prismrec.train.checkpoint import (flatten_optimizer, load_checkpoint, prefixed, save_checkpoint,
                                       strip_prefix, unflatten_optimizer)

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
    """

    def __init__(self, model: Model, dataset: Dataset, config: TrainConfig, *, run_dir: Path | None = None,
                 show_progress: bool = True, callback: Callable | None = None,
                 rng: np.random.Generator | None = None, dist=None):
        self.model, self.dataset, self.config = model, dataset, config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.show_progress = show_progress
        self.callback = callback
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self.dist = dist  # prismrec.train.distributed.DistContext or None
        self.best_state: dict[str, torch.Tensor] | None = None

    # ---------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> FitResult:
        cfg, model = self.config, self.model
        res = FitResult()
        if not model.trainable:
            res.history.append(self._evaluate_record(0, float("nan"), 0.0))
            res.best_epoch, res.best_valid, res.best_test = 0, res.history[0]["valid"], res.history[0].get("test", {})
            self.best_state = {k: v.clone() for k, v in model.state_dict().items()}
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
            start, bad, best_value = self._restore(opt, sched, res)
            if bad > cfg.patience:  # the interrupted run had already stopped early
                res.stopped_early, res.epochs_run = True, len(res.history)
                return res
        is_main = self.dist is None or self.dist.rank == 0
        show = self.show_progress and is_main
        epoch_bar = tqdm(total=cfg.epochs, initial=start, desc=model.name, unit="epoch", disable=not show)
        # updates inside backward() need gradients that are final there: no all-reduce, no clipping
        model.step_in_backward(opt if self.dist is None and cfg.clip_grad_norm <= 0 else None)
        try:
            self._loop(epoch_bar, show, start, bad, best_value, opt, sched, sampler, res, is_main)
        finally:
            model.step_in_backward(None)
            epoch_bar.close()
        res.epochs_run = len(res.history)
        res.best_valid = res.best_valid or {}
        return res

    def _loop(self, epoch_bar, show, start, bad, best_value, opt, sched, sampler, res, is_main):
        cfg, model = self.config, self.model
        for epoch in range(start, cfg.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            model.train()
            model.on_epoch_start(epoch)
            total, n = 0.0, 0
            # a batch bar only where an epoch is long enough to wait for
            bar = tqdm(sampler, total=len(sampler), desc=f"epoch {epoch}", leave=False,
                       disable=not show or len(sampler) < 100)
            for batch in bar:
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
            epoch_bar.update(1)
            epoch_bar.set_postfix({"loss": f"{mean_loss:.4f}", cfg.valid_metric: f"{value:.4f}",
                                   "best": f"{best_value:.4f}@{res.best_epoch}"})
            if is_main:
                (log.debug if show else log.info)(
                    "epoch %d loss %.4f valid %s %.4f (best %.4f @ %d) %.2fs train %.2fs eval", epoch,
                         mean_loss, cfg.valid_metric, value, best_value, res.best_epoch, train_seconds,
                         rec["eval_seconds"])
                self._write_log(rec)
            stop = bad > cfg.patience
            if self.callback is not None and self.callback(epoch, rec) is False:
                stop = True
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
        if self.best_state is not None:
            tensors.update(prefixed("best", self.best_state))
        state = {"epoch": epoch, "bad": bad, "best_value": best_value, "optimizer": opt_rest,
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
        opt.load_state_dict(unflatten_optimizer(strip_prefix("optim", tensors), state["optimizer"]))
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(tensors["torch_rng"])
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


def _jsonable(state):
    version, internal, gauss = state
    return version, list(internal), gauss


def _python_state(s):
    version, internal, gauss = s
    return version, tuple(internal), gauss
