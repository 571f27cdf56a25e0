#!/usr/bin/env python3
"""Train one model on a dataset folder and write ``benchmarks/results/<dataset>/<name>.json``.

    python benchmarks/run.py --data /tmp/baby-like --model lightgcn                 # to early stopping
    python benchmarks/run.py --data /tmp/baby-like --model lightgcn --epochs 5      # -> lightgcn-5ep.json
    python benchmarks/run.py --data /tmp/baby-like --model vbpr --plugin befa       # -> vbpr+befa.json
    python benchmarks/run.py --data /tmp/baby-like --model mentor --max-minutes 120 --run-dir /work/runs/mentor
        # a run longer than one sitting: checkpointed each epoch; the same command again resumes it

Speed numbers are only comparable when nothing else runs on the machine; the file records the
load average before and after the run (``load_avg``) so that a crowded measurement is visible.
With ``--threads 1,2`` the 5-epoch run is repeated per thread count and the faster one kept;
with ``--repeats N`` each thread count runs N times and its median run counts (the speed of this
VM varies by up to 30% from one process to the next).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from _results import machine, write_run  # noqa: E402  (puts src/ on the path)
from prismrec import Recommender, load_dataset  # noqa: E402
from prismrec.config import parse_overrides  # noqa: E402
from prismrec.evaluation import evaluate_splits  # noqa: E402
from prismrec.train.trainer import CHECKPOINT  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("benchmarks.run")


def time_full_eval(rec, ds, repeats: int = 3) -> float:
    """Median seconds of one full-ranking evaluation of all valid+test users (K up to 50)."""
    model = rec.model
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with model.scoring():
            evaluate_splits(model.score, ds.train, {"valid": ds.valid, "test": ds.test},
                            block_size=rec.train_config.eval_batch_size)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def machine_speed(n: int = 1024, reps: int = 20) -> float:
    """Seconds of a fixed workload (``reps`` fp32 ``n x n`` products at the current thread count).

    This VM alternates between phases that differ ~1.8x in speed for minutes at a time (same
    process, same code); timing this before every repeat shows which phase each repeat ran in.
    """
    a = torch.randn(n, n)
    out = torch.empty(n, n)
    return _best_of(lambda: torch.mm(a, a, out=out), reps)


def _best_of(work, reps: int, tries: int = 3) -> float:
    """The fastest of ``tries`` timings of ``reps`` calls of ``work`` (after one warm-up call)."""
    work()
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        for _ in range(reps):
            work()
        best = min(best, time.perf_counter() - t0)
    return best


def memory_speed(mb: int = 32, reps: int = 40) -> float:
    """Seconds of a fixed memory-bound workload (``reps`` element-wise sums of two ``mb`` MB
    arrays into a third; 3 x 32 MB is still three times the L3 cache). The VM's slow phases show
    here more clearly than in the product probe: they slow memory-bound work (sparse products,
    top-k selection, Adam) the most. Kept small because it runs in the training's process before
    training, and ``peak_rss_mb`` is that process's peak: 3 x 128 MB arrays raised LightGCN's
    recorded peak from 673 to 863 MB."""
    n = mb * (1 << 20) // 4
    a, b, out = torch.ones(n), torch.ones(n), torch.empty(n)
    return _best_of(lambda: torch.add(a, b, out=out), reps)


def summarise(rec) -> dict:
    """What the result file needs from a fitted run, so that the model itself can be freed."""
    signal = getattr(rec.model, "modality_signal", None)
    return {"metrics": rec.metrics, "config": dict(rec.config.items()),
            "model_config": dataclasses.asdict(rec.model.config),
            "parameters": sum(p.numel() for p in rec.model.parameters()),
            "modality_signal": signal() if signal is not None else None,
            "best_test_epoch": best_test_epoch(rec.result.history)}


def best_test_epoch(history: list, metric: str = "recall@20") -> dict | None:
    """DiffMM's protocol ("optimistic"): the epoch whose *test* ``metric`` is highest, read from
    the per-epoch log of the same run (the run itself still stops on valid, patience 20).

    Reported only so numbers sit beside papers that select on test; never a model-selection rule.
    """
    rows = [h for h in history if h.get("test")]
    if not rows:
        return None
    best = max(rows, key=lambda h: h["test"][metric])
    return {"epoch": best["epoch"], **{k: round(v, 5) for k, v in best["test"].items()}}


def run_once(args, ds):
    values = parse_overrides(args.set)
    if args.epochs:
        values["epochs"] = args.epochs
    fit_kw = {}
    if args.run_dir:  # checkpointed: a run cut short (budget, session end) continues where it stopped
        resume = (Path(args.run_dir) / CHECKPOINT).exists()
        if resume:
            log.info("resuming from %s", Path(args.run_dir) / CHECKPOINT)
        fit_kw = {"run_dir": Path(args.run_dir), "resume": resume,
                  "allow_config_change": ("epochs",) if resume else ()}
    rec = Recommender(args.model, plugins=args.plugin, checkpoint=bool(args.run_dir), **values)
    load0 = os.getloadavg()[0]
    rec.fit(ds, show_progress=False, max_minutes=args.max_minutes, **fit_kw)
    return rec, load0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder (e.g. /tmp/baby-like)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--plugin", action="append", default=[])
    ap.add_argument("--epochs", type=int, default=0, help="fixed epoch count (writes <name>-<N>ep.json)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--threads", default="", help="comma-separated torch thread counts to try, e.g. 1,2")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per thread count; the median one is kept (timings vary between processes)")
    ap.add_argument("--name", default="", help="result file name (default from model, plug-ins, epochs)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="time budget of the training: it stops when used up and keeps the best epoch "
                         "(the file's stop_reason says time_budget)")
    ap.add_argument("--run-dir", default="",
                    help="checkpoint every epoch into this folder and, when it already holds a checkpoint, "
                         "resume from it (a long run split over several --max-minutes budgets); "
                         "the file then covers the whole run, its timings only this call's epochs")
    args = ap.parse_args(argv)
    if args.run_dir and (len([t for t in args.threads.split(",") if t]) > 1 or args.repeats > 1):
        ap.error("--run-dir trains one run: give at most one --threads value and no --repeats")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    ds = load_dataset(args.data)
    thread_opts = [int(t) for t in args.threads.split(",") if t] or [None]
    runs, all_secs, all_evals, all_speeds, all_memory, first_peak = [], {}, {}, {}, {}, None
    for th in thread_opts:
        reps = []
        if th:
            torch.set_num_threads(th)  # for the probe and the training alike
        for _ in range(max(args.repeats, 1)):  # this VM's speed varies by up to 30% between processes
            speed = (machine_speed(), memory_speed())
            rec, load0 = run_once(args, ds)
            # ru_maxrss only grows within a process: the first run's peak is one training's peak
            first_peak = rec.metrics["peak_rss_mb"] if first_peak is None else first_peak
            reps.append((rec.metrics["sec_per_epoch"], th, summarise(rec), load0, time_full_eval(rec, ds), speed))
            del rec  # a finished repeat's model must not inflate the next one's memory
            gc.collect()
        reps.sort(key=lambda r: r[0])
        key = str(th or torch.get_num_threads())
        all_secs[key] = [round(r[0], 4) for r in reps]
        all_evals[key] = [round(r[4], 4) for r in reps]
        all_speeds[key] = [round(r[5][0], 4) for r in reps]
        all_memory[key] = [round(r[5][1], 4) for r in reps]
        runs.append(reps[len(reps) // 2])  # the median repeat (the runs are deterministic, so only time differs)
    runs.sort(key=lambda r: r[0])
    sec, threads, run, load0, eval_s, _ = runs[0]
    m = run["metrics"]
    seed = run["config"].get("seed")
    name = args.name or (args.model + "".join("+" + p for p in args.plugin) + (f"-{args.epochs}ep" if args.epochs else "")
                         + (f"-seed{seed}" if seed is not None and int(seed) != 999 else ""))
    out = {
        "model": args.model, "plugins": args.plugin, "dataset": ds.name,
        "command": "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "config": run["config"],
        "model_config": run["model_config"],  # every resolved setting, defaults included
        "epochs": m["epochs"], "best_epoch": m["best_epoch"], "stopped_early": m["stopped_early"],
        "stop_reason": m.get("stop_reason"),
        "sec_per_epoch": round(sec, 4), "threads": threads or torch.get_num_threads(),
        "cpu_sec_per_epoch": round(m["cpu_sec_per_epoch"], 4),
        "sec_per_epoch_by_threads": {str(r[1] or torch.get_num_threads()): round(r[0], 4) for r in runs},
        "sec_per_epoch_repeats": all_secs,
        "eval_seconds": round(eval_s, 4), "setup_seconds": round(m["setup_seconds"], 3),
        # per repeat, in the order of sec_per_epoch_repeats: one evaluation's seconds and the
        # machine_speed() probe taken before the repeat (larger = a slow phase of the VM)
        "eval_seconds_repeats": all_evals, "machine_speed_repeats": all_speeds,
        # memory_speed() probe, the same way (element-wise sums over 32 MB arrays)
        "memory_speed_repeats": all_memory,
        "peak_rss_mb": round(first_peak, 1), "parameters": run["parameters"],
        "valid": {k: round(v, 5) for k, v in m["valid"].items()},
        "test": {k: round(v, 5) for k, v in m["test"].items()},
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if run["best_test_epoch"] is not None:  # DiffMM's protocol, read from the same run's history
        out["best_test_epoch"] = run["best_test_epoch"]
    if run["modality_signal"] is not None:  # per-modality training signal (ERL plug-in)
        out["modality_signal"] = run["modality_signal"]
    write_run(args.out, ds.name, name, out,
              ("model", "epochs", "best_epoch", "sec_per_epoch", "eval_seconds", "peak_rss_mb"))


if __name__ == "__main__":
    main()
