"""Bundles: a trained model as a directory of safetensors + JSON (never pickle).

Layout::

    config.json              model name, model + training config, plug-ins, shapes, prismrec version
    weights.safetensors      the model's state dict (best epoch)
    features.safetensors     item modality features (the model's content path, cold start)
    interactions.safetensors training interactions (CSR): graphs, seen-item filtering
    embeddings.safetensors   final user/item embeddings (dot-product models), for fast serving
    users.json, items.json   external ids in internal order
    metrics.json             valid/test metrics at the best epoch, timings

Loading needs neither the dataset nor the training code paths.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file as load_np, save_file as save_np
from safetensors.torch import load_file as load_pt, save_file as save_pt

from prismrec import __version__
from prismrec.data.dataset import Dataset
from prismrec.errors import BundleError

log = logging.getLogger("prismrec")
FILES = ("config.json", "weights.safetensors", "features.safetensors", "interactions.safetensors",
         "users.json", "items.json")
ALLOWED_SUFFIXES = {".json", ".safetensors", ".jsonl", ".md", ".html", ".png", ".csv", ".yaml", ".db"}


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=_default))
    os.replace(tmp, path)


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_bundle(path: Path, *, model, dataset: Dataset, config: dict, metrics: dict | None = None,
                state_dict: dict | None = None) -> Path:
    """Write a bundle into ``path`` (files replaced atomically one by one; extra files kept)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bundle.", dir=path))
    try:
        sd = state_dict if state_dict is not None else model.state_dict()
        save_pt({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(stage / "weights.safetensors"))
        save_np({m: np.ascontiguousarray(f) for m, f in dataset.features.items()} or {"_none": np.zeros(0)},
                str(stage / "features.safetensors"))
        tr = dataset.train
        save_np({"indptr": tr.indptr.astype(np.int64), "indices": tr.indices.astype(np.int64),
                 "shape": np.array(tr.shape, np.int64)}, str(stage / "interactions.safetensors"))
        if model.is_dot_product:
            if state_dict is not None:
                current = {k: v.clone() for k, v in model.state_dict().items()}
                model.load_state_dict(state_dict)
            with model.scoring():
                u, i = model.embeddings()
                save_pt({"user": u.detach().cpu().contiguous(), "item": i.detach().cpu().contiguous()},
                        str(stage / "embeddings.safetensors"))
            if state_dict is not None:
                model.load_state_dict(current)
        meta = dict(config)
        meta.update({"prismrec_version": __version__, "n_users": dataset.n_users, "n_items": dataset.n_items,
                     "modalities": {m: int(f.shape[1]) for m, f in dataset.features.items()},
                     "dataset": dataset.name, "dot_product": model.is_dot_product})
        write_json(stage / "config.json", meta)
        write_json(stage / "users.json", dataset.user_ids.tolist())
        write_json(stage / "items.json", dataset.item_ids.tolist())
        if metrics is not None:
            write_json(stage / "metrics.json", metrics)
        for f in stage.iterdir():
            os.replace(f, path / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path


def read_bundle(path: str | Path) -> tuple[dict, Dataset, dict[str, torch.Tensor]]:
    """(config, train-only Dataset, state dict) of a bundle; refuses anything but safetensors + JSON."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory")
    for name in FILES:
        if not (path / name).is_file():
            raise BundleError(f"{path}: missing {name}; a bundle is written by `prismrec train`")
    for f in path.iterdir():
        if f.is_file() and f.suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"):
            raise BundleError(f"{f}: refusing to load pickle-based files; bundles are safetensors + JSON only")
    try:
        cfg = json.loads((path / "config.json").read_text())
        users = json.loads((path / "users.json").read_text())
        items = json.loads((path / "items.json").read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON ({e})") from None
    if cfg.get("prismrec_version") != __version__:
        log.warning("bundle %s was written by prismrec %s; this is %s", path, cfg.get("prismrec_version"),
                    __version__)
    t = load_np(str(path / "interactions.safetensors"))
    shape = tuple(int(x) for x in t["shape"])
    train = sp.csr_matrix((np.ones(len(t["indices"]), np.float32), t["indices"], t["indptr"]), shape=shape)
    feats = {k: v for k, v in load_np(str(path / "features.safetensors")).items() if k != "_none"}
    feats = {m: feats[m] for m in cfg.get("modalities", feats)}  # keep the training order
    empty = sp.csr_matrix(shape, dtype=np.float32)
    ds = Dataset(name=cfg.get("dataset", path.name), train=train, valid=empty, test=empty, features=feats,
                 user_ids=np.asarray(users), item_ids=np.asarray(items))
    weights = load_pt(str(path / "weights.safetensors"))
    return cfg, ds, weights


def read_embeddings(path: str | Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    f = Path(path) / "embeddings.safetensors"
    if not f.is_file():
        return None
    t = load_pt(str(f))
    return t["user"], t["item"]
