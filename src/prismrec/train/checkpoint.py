"""Per-epoch checkpoints: one safetensors file (tensors) with the JSON state in its metadata,
written to a temporary name and renamed, so a crash never leaves a half-written checkpoint.

The metadata also holds a sha256 over the state and every tensor (name, dtype, shape, bytes), so
that a checkpoint corrupted on disk is refused on resume instead of silently training on; and the
run's settings (``run_config``), so that a resume with other settings is refused unless the
changed keys are named (issue 22).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prismrec.errors import ConfigError, PrismrecError

log = logging.getLogger("prismrec")
STATE_KEY = "prismrec_state"
DIGEST_KEY = "prismrec_sha256"
# settings that change how fast a run goes, never what it computes: a resume may change them freely
RUNTIME_KEYS = frozenset({"num_threads", "eval_batch_size"})


class CheckpointError(PrismrecError, ValueError):
    """A checkpoint that is corrupt, or that does not fit the run resuming from it."""


def flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        rest["state"][str(idx)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                rest["state"][str(idx)][k] = v
    return tensors, rest


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in rest["state"].items()}
    for key, t in tensors.items():
        idx, k = key.removeprefix("optim.").split(".", 1)  # keys come with or without the prefix
        state.setdefault(int(idx), {})[k] = t
    return {"state": state, "param_groups": rest["param_groups"]}


def digest(tensors: dict[str, torch.Tensor], state_json: str) -> str:
    """sha256 over the JSON state and each tensor's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256(state_json.encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"\0{k}\0{t.dtype}\0{list(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """Atomically write ``tensors`` plus the JSON-serialisable ``state`` (and their digest)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    text = json.dumps(state)
    save_file(tensors, str(tmp), metadata={STATE_KEY: text, DIGEST_KEY: digest(tensors, text)})
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, state)`` of a checkpoint, verified against its digest.

    Raises:
        CheckpointError: naming the file, when it is not a readable safetensors file, has no or
            malformed state, fails its digest or holds non-finite model weights.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # safetensors' own (Rust) error type for every malformed file
        raise CheckpointError(f"{path}: not a readable checkpoint ({e}); {_START_OVER}") from None
    text = meta.get(STATE_KEY)
    if text is None:
        raise CheckpointError(f"{path}: no '{STATE_KEY}' metadata: not a prismrec checkpoint; {_START_OVER}")
    expected = meta.get(DIGEST_KEY)
    if expected is None:
        log.warning("%s was written by an earlier prismrec without a digest: it cannot be verified", path)
    elif digest(tensors, text) != expected:
        raise CheckpointError(f"{path}: does not match its digest: the file was changed or corrupted after it "
                              f"was written; {_START_OVER}")
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: state is not valid JSON ({e}); {_START_OVER}") from None
    _check_state(path, state)
    for k, t in tensors.items():
        if t.dtype.is_floating_point and not k.startswith("optim.") and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor '{k}' holds NaN or infinite values; {_START_OVER}")
    return tensors, state


_START_OVER = "train again without --resume (--overwrite replaces the run)"
_STATE_FIELDS = {"epoch": int, "bad": int, "best_value": (int, float), "optimizer": dict, "scheduler": dict,
                 "numpy_rng": dict, "python_rng": list, "history": list, "best_epoch": int,
                 "best_valid": dict, "best_test": dict}


def _check_state(path: Path, state) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: state: expected a JSON object, got {type(state).__name__}")
    for key, types in _STATE_FIELDS.items():
        v = state.get(key)
        if not isinstance(v, types) or isinstance(v, bool):
            raise CheckpointError(f"{path}: state field '{key}': expected {_names(types)}, got "
                                  f"{json.dumps(v)[:60] if v is not None else 'nothing'}; {_START_OVER}")
    if state["epoch"] < 0 or state["bad"] < 0 or not (isinstance(state["best_value"], (int, float))
                                                      and not math.isnan(state["best_value"])):
        raise CheckpointError(f"{path}: state fields 'epoch'/'bad'/'best_value' out of range; {_START_OVER}")


def _names(types) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


@contextlib.contextmanager
def checkpoint_errors(path: Path | None):
    """Turn a failure to restore ``path`` into the model, optimiser or samplers (shapes, keys or
    values of another run) into a :class:`CheckpointError` naming the file."""
    try:
        yield
    except PrismrecError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise CheckpointError(f"{path}: does not fit this run ({type(e).__name__}: {msg.splitlines()[0][:300]}); "
                              f"{_START_OVER}") from None


def read_state(path: Path) -> dict | None:
    """The JSON state of a checkpoint without loading its tensors (None when there is no file)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(STATE_KEY)
        return json.loads(text) if text is not None else {}
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e}); {_START_OVER}") from None


# -- the run's settings on resume ----------------------------------------------------------------
def config_differences(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for every setting that differs (JSON-comparable dicts
    with ``model``, ``plugins``, ``dataset``, ``train_config`` and ``model_config``). A config key
    absent from ``saved`` is not compared: the prismrec that wrote it had no such setting, so a
    checkpoint outlives the addition of new settings."""
    saved = {k: v if isinstance(v, dict) or k in ("model", "plugins") else {} for k, v in saved.items()}
    diffs = []
    for key in ("model", "plugins"):
        if saved.get(key) != current.get(key):
            diffs.append((key, saved.get(key), current.get(key)))
    for key in sorted(set(saved.get("dataset", {})) | set(current.get("dataset", {}))):
        a, b = saved.get("dataset", {}).get(key), current.get("dataset", {}).get(key)
        if a != b:
            diffs.append((f"dataset.{key}", a, b))
    seen = set()
    for section in ("model_config", "train_config"):
        s, c = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(s) | set(c)):
            if key in seen or key in RUNTIME_KEYS or key not in s:
                continue  # a key the saved run lacks is a setting its (older) prismrec did not have
            if _norm(s.get(key)) != _norm(c.get(key)):
                diffs.append((key, s.get(key), c.get(key)))
                seen.add(key)
    return diffs


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def check_resume_config(path: Path, current: dict, allow: Iterable[str] = ()) -> list[str]:
    """Refuse to resume ``path`` with settings other than the checkpoint's, unless each changed
    key is in ``allow``. Returns the keys that change (allowed ones).

    Raises:
        ConfigError: an unknown key in ``allow``.
        CheckpointError: listing every difference that is not allowed; a different model,
            plug-ins or dataset shape can never be allowed.
    """
    allow = set(allow)
    known = set(current.get("train_config", {})) | set(current.get("model_config", {}))
    unknown = sorted(allow - known)
    if unknown:
        raise ConfigError(f"--allow-config-change: unknown config key(s) {unknown}; known: {', '.join(sorted(known))}")
    state = read_state(path)
    if state is None:
        return []
    if not isinstance(state, dict):  # load_checkpoint says what is wrong with it
        return []
    saved = state.get("run_config")
    if not isinstance(saved, dict):
        log.warning("%s was written by an earlier prismrec that did not record its settings: they cannot be "
                    "compared with this run's", path)
        return []
    diffs = config_differences(saved, current)
    fixed = [d for d in diffs if d[0] in ("model", "plugins") or d[0].startswith("dataset.")]
    refused = [d for d in diffs if d not in fixed and d[0] not in allow]
    if fixed:
        raise CheckpointError(f"{path} belongs to another run: " + _describe(fixed)
                              + "; a checkpoint resumes only the model and data it was trained on "
                                "(choose another --out, or --overwrite to replace this run)")
    if refused:
        keys = ",".join(d[0] for d in refused)
        raise CheckpointError(f"{path} was written with other settings: " + _describe(refused)
                              + ". Resume with the checkpoint's settings, or say which are meant to change: "
                                f"--allow-config-change {keys} (Python: allow_config_change=[...])")
    changed = [d[0] for d in diffs]
    if changed:
        log.warning("resuming %s with changed settings: %s", path, _describe(diffs))
    return changed


def _describe(diffs) -> str:
    return ", ".join(f"{k} {json.dumps(a)} -> {json.dumps(b)}" for k, a, b in diffs)


def configured_hparams(opt: torch.optim.Optimizer, sched) -> list[dict]:
    """Per parameter group, the learning rate and weight decay this run configured (call before
    loading a checkpoint's optimiser state over them)."""
    return [{"base_lr": base, "weight_decay": g.get("weight_decay")} for g, base in zip(opt.param_groups,
                                                                                         sched.base_lrs)]


def apply_hparams(opt: torch.optim.Optimizer, sched, hparams: list[dict]) -> None:
    """After restoring a checkpoint's optimiser and LambdaLR state, make the run use the learning
    rate and weight decay it was configured with (they equal the checkpoint's unless a change was
    allowed): ``lr = base_lr * factor(last_epoch)``, the value LambdaLR itself computes."""
    if len(hparams) != len(opt.param_groups):
        raise CheckpointError(f"the checkpoint has {len(opt.param_groups)} optimiser parameter groups, this "
                              f"model {len(hparams)}")
    sched.base_lrs = [h["base_lr"] for h in hparams]
    for j, (g, h) in enumerate(zip(opt.param_groups, hparams)):
        g["initial_lr"] = h["base_lr"]
        g["lr"] = h["base_lr"] * sched.lr_lambdas[j](sched.last_epoch)
        if h["weight_decay"] is not None:
            g["weight_decay"] = h["weight_decay"]
    sched._last_lr = [g["lr"] for g in opt.param_groups]


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
