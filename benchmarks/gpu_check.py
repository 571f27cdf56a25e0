#!/usr/bin/env python3
"""Check and time models on a CUDA GPU (``TrainConfig.device="cuda"``); not part of CI.

    python benchmarks/gpu_check.py train --data /tmp/baby-like --model mentor --out DIR --max-minutes 6
    python benchmarks/gpu_check.py speed --data /tmp/baby-like --models smore,pgl --epochs 2 --out DIR
    python benchmarks/gpu_check.py resume --data /tmp/baby-like --model freedom --epochs 6 --out DIR
    python benchmarks/gpu_check.py smoke --out DIR --max-seconds 90

``train`` trains one model on the GPU to early stopping (or the time budget), appending each
epoch's record to ``DIR/<name>.log.jsonl`` as it finishes (a run cut short leaves that behind) and
writing ``DIR/<name>.json`` in ``run.py``'s format at the end.

``speed`` trains each model a few epochs on the GPU and writes ``DIR/gpu-speed-<dataset>.json``
(seconds per epoch and per evaluation, setup seconds, peak GPU memory).

``resume`` stops a GPU run halfway, resumes it from its checkpoint and compares it with the same run
uninterrupted (``DIR/gpu-resume.json``).

``smoke`` trains every registered model for two epochs on a small synthetic set, once on the CPU
and once on the GPU from the same seed, saves the GPU-trained model as a bundle and loads it back
on the CPU; ``DIR/gpu-smoke.json`` lists per model both test R@20 and seconds, or the error (its
type, message and innermost prismrec frame) where the GPU run failed. The GPU run of a model not
marked ``runs_on_cuda`` is forced for the check; ``runs_on_cuda`` is what such a check earned.
The two runs draw different random numbers (the GPU has its own generator), so their metrics agree
only roughly.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, overrides_for  # noqa: E402  (puts src/ on the path)
from prismrec import Recommender, load_dataset  # noqa: E402
from prismrec.bundle import write_json  # noqa: E402
from prismrec.config import parse_overrides  # noqa: E402
from prismrec.data.synthetic import make_synthetic  # noqa: E402
from prismrec.models.base import registered_models  # noqa: E402
from run import best_test_epoch  # noqa: E402  (DiffMM's protocol, as run.py reports it)


def plugin_mixin(name: str) -> type:
    """The class a plug-in mixes into its host (what ``runs_on_cuda`` is read from)."""
    import importlib
    mod = importlib.import_module(f"prismrec.plugins.{name}")
    return next(v for k, v in vars(mod).items() if k.endswith("Mixin") and isinstance(v, type))


def gpu_name() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device"
    p = torch.cuda.get_device_properties(0)
    return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"


def innermost_prismrec_frame(e: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "prismrec" in f.filename]
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].line}" if frames else ""


def fit_on_gpu(ds, model: str, values: dict, max_minutes=None, callback=None) -> dict:
    """Train ``model`` with ``device="cuda"`` and return the run's result (``run.py``'s keys)."""
    rec = Recommender(model, checkpoint=False, **{"device": "cuda", **values})
    load0 = os.getloadavg()[0]
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rec.fit(ds, show_progress=False, callback=callback, max_minutes=max_minutes)
    wall = time.perf_counter() - t0
    m = rec.metrics
    return {
        "model": model, "dataset": ds.name, "device": m.get("device"), "config": dict(rec.config.items()),
        "epochs": m["epochs"], "best_epoch": m["best_epoch"], "stopped_early": m["stopped_early"],
        "stop_reason": m["stop_reason"], "sec_per_epoch": round(m["sec_per_epoch"], 4),
        "eval_seconds": round(m["eval_seconds"], 4), "setup_seconds": round(m["setup_seconds"], 3),
        "wall_seconds": round(wall, 1), "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "valid": {k: round(v, 5) for k, v in m["valid"].items()},
        "test": {k: round(v, 5) for k, v in m["test"].items()},
        "best_test_epoch": best_test_epoch(rec.result.history),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def header() -> dict:
    return {"command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]), "gpu": gpu_name(),
            "machine": machine(), "python": platform.python_version()}


def train(args) -> None:
    ds = load_dataset(args.data)
    name = args.name or f"{args.model}-cuda"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / f"{name}.log.jsonl"
    log_path.write_text("")

    def record(epoch, rec):
        with open(log_path, "a") as f:
            f.write(json.dumps({k: rec[k] for k in ("epoch", "loss", "train_seconds", "eval_seconds", "valid", "test")
                                if k in rec}) + "\n")
    result = {**header(), **fit_on_gpu(ds, args.model, parse_overrides(args.set), args.max_minutes, record)}
    write_json(out / f"{name}.json", result)
    print(json.dumps({k: result[k] for k in ("epochs", "best_epoch", "stop_reason", "sec_per_epoch",
                                             "eval_seconds", "test")}))


def speed(args) -> None:
    """A few epochs of each model on the GPU: seconds per epoch and per evaluation, into one file."""
    ds = load_dataset(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for model in args.models.split(","):
        try:
            runs[model] = fit_on_gpu(ds, model, {"epochs": args.epochs, **overrides_for(model, args.set)})
            print(model, json.dumps({k: runs[model][k] for k in ("sec_per_epoch", "eval_seconds", "setup_seconds")}),
                  json.dumps(runs[model]["test"].get("recall@20")), flush=True)
        except Exception as e:  # noqa: BLE001  (report and go on with the next model)
            runs[model] = {"error": f"{type(e).__name__}: {e}"[:600], "where": innermost_prismrec_frame(e)}
            print(model, json.dumps(runs[model]), flush=True)
        write_json(out / f"gpu-speed-{ds.name}.json", {**header(), "epochs": args.epochs, "runs": runs})


def resume(args) -> None:
    """A GPU run stopped halfway and resumed from its checkpoint against the same run uninterrupted:
    the checkpoint carries the GPU's random state, so the two should agree up to the GPU's
    non-deterministic sums (atomic adds); writes ``DIR/gpu-resume.json``."""
    ds = load_dataset(args.data)
    cfg = {"device": "cuda", "epochs": args.epochs, "patience": 50, "seed": 999, **parse_overrides(args.set)}
    with tempfile.TemporaryDirectory() as tmp:
        full = Recommender(args.model, **cfg).fit(ds, run_dir=Path(tmp) / "full", show_progress=False)
        half = {**cfg, "epochs": args.epochs // 2}
        Recommender(args.model, **half).fit(ds, run_dir=Path(tmp) / "cut", show_progress=False)
        resumed = Recommender(args.model, **cfg).fit(ds, run_dir=Path(tmp) / "cut", show_progress=False, resume=True,
                                                     allow_config_change=("epochs",))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    result = {**header(), "model": args.model, "epochs": args.epochs,
              "full": {"test": full.metrics["test"], "best_epoch": full.metrics["best_epoch"],
                       "losses": [h["loss"] for h in full.result.history]},
              "resumed": {"test": resumed.metrics["test"], "best_epoch": resumed.metrics["best_epoch"],
                          "losses": [h["loss"] for h in resumed.result.history]},
              "max_abs_weight_difference": diff, "same_metrics": full.metrics["test"] == resumed.metrics["test"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu-resume.json", result)
    print(json.dumps({k: result[k] for k in ("max_abs_weight_difference", "same_metrics")}),
          full.metrics["test"]["recall@20"], resumed.metrics["test"]["recall@20"])


def smoke(args) -> None:
    ds = make_synthetic(600, 200, 12, modalities={"image": 48, "text": 24}, seed=5, name="smoke")
    t_end = time.perf_counter() + args.max_seconds
    results = {}
    models = args.models.split(",") if args.models else list(registered_models())
    for name in models:
        if time.perf_counter() > t_end:
            results[name] = {"skipped": "time budget"}
            continue
        model, *plugins = name.split("+")   # "vbpr+befa": the model with that plug-in
        cls = registered_models()[model]
        row = {"runs_on_cuda": cls.runs_on_cuda}
        mixins = [plugin_mixin(p) for p in plugins]
        cfg = dict(epochs=2, batch_size=256, patience=50, seed=3, checkpoint=False)
        try:
            t0 = time.perf_counter()
            cpu = Recommender(model, plugins=plugins, **cfg).fit(ds, show_progress=False)
            row["cpu"] = {"recall@20": round(cpu.metrics["test"]["recall@20"], 4),
                          "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as e:  # noqa: BLE001  (the check reports every failure and goes on)
            row["cpu_error"] = f"{type(e).__name__}: {e}"[:400]
        forced = [c for c in (cls, *mixins) if not getattr(c, "runs_on_cuda", False)]
        for c in forced:
            c.runs_on_cuda = True
        try:
            t0 = time.perf_counter()
            gpu = Recommender(model, plugins=plugins, device="cuda", **cfg).fit(ds, show_progress=False)
            row["cuda"] = {"recall@20": round(gpu.metrics["test"]["recall@20"], 4),
                           "seconds": round(time.perf_counter() - t0, 2)}
            with tempfile.TemporaryDirectory() as tmp:
                gpu.save(tmp)
                back = Recommender.load(tmp)
                u = ds.user_ids[0]
                row["bundle_round_trip"] = back.recommend(u, k=5)[0].tolist() == gpu.recommend(u, k=5)[0].tolist()
        except Exception as e:  # noqa: BLE001
            row["cuda_error"] = f"{type(e).__name__}: {e}"[:600]
            row["where"] = innermost_prismrec_frame(e)
        finally:
            for c in forced:
                c.runs_on_cuda = False
        results[name] = row
        print(name, json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ok = sorted(n for n, r in results.items() if "cuda" in r and r.get("bundle_round_trip"))
    write_json(out / "gpu-smoke.json", {**header(), "passed": ok, "models": results})
    print(f"passed on cuda: {len(ok)} of {len(results)}: {', '.join(ok)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one model on the GPU to early stopping")
    t.add_argument("--data", required=True)
    t.add_argument("--model", required=True)
    t.add_argument("--set", action="append", default=[], help="config override key=value")
    t.add_argument("--max-minutes", type=float, default=None)
    t.add_argument("--name", default="")
    t.add_argument("--out", required=True)
    p = sub.add_parser("speed", help="a few epochs of each model on the GPU: seconds per epoch")
    p.add_argument("--data", required=True)
    p.add_argument("--models", required=True, help="comma-separated names")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--set", action="append", default=[],
                   help="config override key=value (every model) or model:key=value (that model only)")
    p.add_argument("--out", required=True)
    r = sub.add_parser("resume", help="a GPU run stopped halfway and resumed, against the same run uninterrupted")
    r.add_argument("--data", required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--epochs", type=int, default=4)
    r.add_argument("--set", action="append", default=[], help="config override key=value")
    r.add_argument("--out", required=True)
    s = sub.add_parser("smoke", help="every model: two epochs on the CPU and on the GPU")
    s.add_argument("--out", required=True)
    s.add_argument("--models", default="", help="comma-separated names (default: all)")
    s.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args(argv)
    print(gpu_name(), "|", machine(), flush=True)
    {"train": train, "speed": speed, "resume": resume, "smoke": smoke}[args.cmd](args)


if __name__ == "__main__":
    main()
