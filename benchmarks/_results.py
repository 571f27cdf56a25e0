"""Result-file helpers shared by the benchmark scripts (atomic JSON writes under ``results/``)."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prismrec.bundle import write_json  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """What a timing was taken on: architecture, core count, CPU model, the vector instructions
    torch uses and whether bf16 products are native (``feature_precision="auto"`` picks bf16 only
    then), torch version. The VM behind this project has changed between sessions (an AVX-512/AMX
    host and an AVX2-only AMD EPYC), which moves timings by several times and makes ``auto`` resolve
    differently, so every result file names it."""
    import torch

    from prismrec.models.layers import precision_summary
    return f"{platform.machine()} {os.cpu_count()} cpu ({cpu_model()}, {precision_summary()}), torch {torch.__version__}"


def overrides_for(model: str, sets: list[str]) -> dict:
    """``--set`` values for one model of a multi-model run: ``key=value`` applies to every model,
    ``model:key=value`` to that model only (parsed as ``prismrec.config.parse_overrides`` does)."""
    from prismrec.config import parse_overrides
    common = [v for v in sets if ":" not in v.split("=", 1)[0]]
    mine = [v.split(":", 1)[1] for v in sets if v.split("=", 1)[0].startswith(model + ":")]
    return parse_overrides(common + mine)


def merge_result(path: Path, result: dict, command: str | None = None) -> dict:
    """Update the JSON object at ``path`` with ``result`` (other keys kept) and write it atomically.

    ``command``, when given, becomes the file's top-level ``command`` joined with the ANN part's
    (``serving.json`` gathers the load test and the ANN measurement, each with its own command).
    """
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(result)
    if command is not None:
        ann_cmd = merged.get("ann", {}).get("command")
        merged["command"] = command + (f" && {ann_cmd}" if ann_cmd else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, merged)
    print(json.dumps(result, indent=2))
    return merged


def write_run(out_dir: str | Path, dataset: str, name: str, out: dict, summary: tuple[str, ...]) -> Path:
    """Write one training run's result to ``<out_dir>/<dataset>/<name>.json`` and print a summary."""
    dest = Path(out_dir) / dataset / f"{name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, out)
    print(json.dumps({k: out[k] for k in summary}), json.dumps(out["test"]))
    print(f"wrote {dest}")
    return dest
