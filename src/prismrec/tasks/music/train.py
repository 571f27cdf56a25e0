"""Training and evaluation of music-matching models: a small loop with early stopping and seeds.

The recommendation :class:`~prismrec.train.trainer.Trainer` is built around user x item CSR splits
and BPR samplers; matching trains on (video, track) pairs and evaluates by the rank of one true
track, so it has this loop of its own (about the size of one of the trainer's methods).
"""
from __future__ import annotations

import copy
import json
import logging
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from prismrec.config import Checked, PosFloat, PosInt, build_config
from prismrec.errors import ConfigError, PrismrecError
from prismrec.tasks.music.data import MusicDataset
from prismrec.tasks.music.metrics import KS, block_ranks, metrics_from_ranks, similarity
from prismrec.tasks.music.model import MatchBatch, MatchModel, build, model_class

log = logging.getLogger("prismrec")


@dataclass(frozen=True)
class MusicTrainConfig(Checked):
    """Settings of the matching loop (AdamW, lr 1e-3, batch 256: the reference code's, spec §4.1)."""

    epochs: PosInt = 100
    batch_size: PosInt = 256
    learning_rate: PosFloat = 1e-3
    weight_decay: float = 0.01          # AdamW's default
    patience: PosInt = 10                  # evaluations without a strictly better valid metric before stopping
    valid_metric: str = "recall@10"
    eval_ks: tuple[int, ...] = KS
    eval_block: PosInt = 1024              # videos scored at a time
    clip_grad_norm: float = 0.0         # 0 = off
    seed: int = 999
    num_threads: int = 0                # 0 = torch's default

    def validate(self):
        name, _, k = self.valid_metric.partition("@")
        if self.valid_metric not in ("mrr",) and not (name in ("recall", "ndcg") and k.isdigit()):
            raise ValueError(f"valid_metric must be recall@K, ndcg@K or mrr, got {self.valid_metric!r}")
        if k.isdigit() and int(k) not in self.eval_ks:
            object.__setattr__(self, "eval_ks", tuple(sorted({*self.eval_ks, int(k)})))


def split_values(model_name: str, values: dict) -> tuple[MusicTrainConfig, dict]:
    """Split merged ``key -> value`` settings into the training config and the model's keys."""
    cls = model_class(model_name)
    train_keys, model_keys = {f.name for f in fields(MusicTrainConfig)}, {f.name for f in fields(cls.Config)}
    unknown = set(values) - train_keys - model_keys
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} for music model '{model_name}'; "
                          f"training keys: {', '.join(sorted(train_keys))}; "
                          f"model keys: {', '.join(sorted(model_keys)) or '(none)'}")
    tc = build_config(MusicTrainConfig, {k: v for k, v in values.items() if k in train_keys}, "music training")
    return tc, {k: v for k, v in values.items() if k in model_keys}


def tensors(feats: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {m: torch.from_numpy(np.array(f, dtype=np.float32)) for m, f in feats.items()}


@torch.no_grad()
def evaluate_model(model: MatchModel, ds: MusicDataset, splits=("valid", "test"), ks=KS,
                   block: int = 1024, feats: tuple | None = None) -> dict[str, dict[str, float]]:
    """Full-ranking metrics per split: every video's true track ranked among all tracks."""
    was_training = model.training
    model.eval()
    vf, tf = feats or (tensors(ds.video_features), tensors(ds.track_features))
    track_emb = model.embed_tracks(tf)                                            # [T, K]

    def score(idx):
        idx = torch.as_tensor(idx)
        return similarity(model.embed_videos({m: f[idx] for m, f in vf.items()}), track_emb, model.similarity)

    out = {}
    for s in splits:
        videos = ds.videos(s)
        out[s] = metrics_from_ranks(block_ranks(score, videos, ds.video_track[videos], block), ks)
    model.train(was_training)
    return out


@dataclass
class MusicFit:
    """What :func:`fit` returns: the model (best-epoch weights loaded), metrics and history."""

    model: MatchModel
    train_config: MusicTrainConfig
    best_epoch: int = -1
    valid: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    stopped_early: bool = False
    sec_per_epoch: float = 0.0

    def metrics(self) -> dict:
        return {"best_epoch": self.best_epoch, "epochs": len(self.history), "stopped_early": self.stopped_early,
                "sec_per_epoch": self.sec_per_epoch, "valid": self.valid, "test": self.test}


def fit(ds: MusicDataset, model_name: str, values: dict | None = None, *, show_progress: bool = False,
        callback: Callable[[int, dict], bool | None] | None = None, run_dir: str | Path | None = None) -> MusicFit:
    """Train ``model_name`` on the train videos; early stopping on the valid metric.

    Args:
        values: training and model settings (``key -> value``; strings allowed).
        callback: ``callback(epoch, record)`` after each epoch; return ``False`` to stop.
        run_dir: when given, the per-epoch log goes to ``run_dir/log.jsonl``.

    Returns:
        a :class:`MusicFit` whose model holds the weights of the best valid epoch.
    """
    tc, model_values = split_values(model_name, dict(values or {}))
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    random.seed(tc.seed)
    np.random.seed(tc.seed % 2**32)
    torch.manual_seed(tc.seed)
    model = build(model_name, model_values, {m: f.shape[1] for m, f in ds.video_features.items()},
                  {m: f.shape[1] for m, f in ds.track_features.items()}, ds.n_tracks)
    model.setup(ds)
    feats = (tensors(ds.video_features), tensors(ds.track_features))
    result = MusicFit(model=model, train_config=tc)
    logf = None
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        logf = open(Path(run_dir) / "log.jsonl", "w")
    try:
        if model.trainable:
            _loop(model, ds, tc, feats, result, show_progress, callback, logf)
        else:
            result.best_epoch = 0
        res = evaluate_model(model, ds, ("valid", "test"), tc.eval_ks, tc.eval_block, feats)
        result.valid, result.test = res["valid"], res["test"]
    finally:
        if logf is not None:
            logf.close()
    return result


def _loop(model, ds, tc, feats, result, show_progress, callback, logf):
    vf, tf = feats
    train = torch.from_numpy(ds.videos("train"))
    truth = torch.from_numpy(np.array(ds.video_track))
    opt = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    best, best_state, bad, times = -np.inf, None, 0, []
    for epoch in range(tc.epochs):
        model.train()
        model.on_epoch_start(epoch)
        t0 = time.perf_counter()
        perm = train[torch.randperm(len(train))]
        total, n = 0.0, 0
        for s in tqdm(range(0, len(perm), tc.batch_size), disable=not show_progress, leave=False,
                      desc=f"epoch {epoch}"):
            v = perm[s:s + tc.batch_size]
            if len(v) < 2:   # in-batch negatives need two pairs; a lone last pair waits for the next epoch
                continue
            t = truth[v]
            batch = MatchBatch(v, t, {m: f[v] for m, f in vf.items()}, {m: f[t] for m, f in tf.items()})
            loss = model.loss(batch)
            if not torch.isfinite(loss):
                raise PrismrecError(f"loss is {loss.item()} at epoch {epoch}; "
                                    "lower learning_rate or check the features")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad_norm)
            opt.step()
            total, n = total + loss.item() * len(v), n + len(v)
        times.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        valid = evaluate_model(model, ds, ("valid",), tc.eval_ks, tc.eval_block, feats)["valid"]
        record = {"epoch": epoch, "loss": total / max(n, 1), "train_seconds": times[-1],
                  "eval_seconds": time.perf_counter() - t1, "valid": valid}
        result.history.append(record)
        if logf is not None:
            logf.write(json.dumps(record) + "\n")
            logf.flush()
        v = valid[tc.valid_metric]
        log.info("epoch %d loss %.4f valid %s %.4f", epoch, record["loss"], tc.valid_metric, v)
        if v > best:
            best, bad, result.best_epoch = v, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        if callback is not None and callback(epoch, record) is False:
            break
        if bad >= tc.patience:
            result.stopped_early = True
            break
    result.sec_per_epoch = float(np.mean(times)) if times else 0.0
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
