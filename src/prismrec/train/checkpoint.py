"""Per-epoch checkpoints: one safetensors file (tensors) with the JSON state in its metadata,
written to a temporary name and renamed, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

STATE_KEY = "prismrec_state"


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


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """Atomically write ``tensors`` plus the JSON-serialisable ``state``."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={STATE_KEY: json.dumps(state)})
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()[STATE_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, state


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
