#!/usr/bin/env python3
"""Data-parallel training against a single process, same model, data and settings.

    python benchmarks/ddp.py --data /tmp/baby-like --model lightgcn --nproc 2     # -> lightgcn-ddp2.json
    python benchmarks/ddp.py --data /tmp/baby-like --model lightgcn --epochs 30   # -> lightgcn-ddp2-30ep.json

Runs the model in one process, then in ``--nproc`` gloo processes under torchrun (one thread
each), both to early stopping unless ``--epochs`` fixes the count, and writes
``benchmarks/results/<dataset>/<name>.json`` with the fields ``benchmarks/run.py`` writes (for
the data-parallel run) plus ``world_size``, ``single_process`` (the reference run) and
``recall@20_rel_gap`` (relative test Recall@20 difference to the reference).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _results import machine, write_run  # noqa: E402  (puts src/ on the path)
from prismrec import Recommender, load_dataset  # noqa: E402
from prismrec.config import parse_overrides  # noqa: E402
from prismrec.evaluation import evaluate_splits  # noqa: E402
from prismrec.train.trainer import peak_rss_mb  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("prismrec")


def _values(args) -> dict:
    values = parse_overrides(args.set)
    if args.epochs:
        values["epochs"] = args.epochs
    return {"checkpoint": False, **values}


def _summary(rec, eval_s: float) -> dict:
    m = rec.metrics
    return {"epochs": m["epochs"], "best_epoch": m["best_epoch"], "stopped_early": m["stopped_early"],
            "sec_per_epoch": round(m["sec_per_epoch"], 4), "eval_seconds": round(eval_s, 4),
            "setup_seconds": round(m["setup_seconds"], 3), "peak_rss_mb": round(m["peak_rss_mb"], 1),
            "valid": {k: round(v, 5) for k, v in m["valid"].items()},
            "test": {k: round(v, 5) for k, v in m["test"].items()}}


def _time_eval(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def worker(args) -> None:
    """One rank of the torchrun job; rank 0 writes the run's summary to ``args.worker_out``."""
    from prismrec.train.distributed import DistContext
    torch.set_num_threads(args.threads)
    dist = DistContext.from_env()
    ds = load_dataset(args.data)
    rec = Recommender(args.model, plugins=args.plugin, **_values(args))
    rec.fit(ds, show_progress=False, dist=dist)
    splits = {"valid": ds.valid, "test": ds.test}

    def ev():
        with rec.model.scoring():
            dist.evaluate(rec.model, ds, splits, rec.train_config)
    eval_s = _time_eval(ev)
    rss = dist.all_gather_object(peak_rss_mb())
    if dist.rank == 0:
        out = {**_summary(rec, eval_s), "peak_rss_mb_per_rank": [round(r, 1) for r in rss],
               "parameters": sum(p.numel() for p in rec.model.parameters()), "config": dict(rec.config)}
        Path(args.worker_out).write_text(json.dumps(out))
    dist.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--plugin", action="append", default=[])
    ap.add_argument("--nproc", type=int, default=2, help="data-parallel processes")
    ap.add_argument("--epochs", type=int, default=0, help="fixed epoch count (default: early stopping)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (both runs)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per data-parallel rank")
    ap.add_argument("--single-threads", type=int, default=0, help="threads of the reference run (0: default)")
    ap.add_argument("--skip-single", action="store_true", help="no reference run")
    ap.add_argument("--name", default="")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker-out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker_out:
        return worker(args)

    ds = load_dataset(args.data)
    single = None
    load0 = os.getloadavg()[0]
    if not args.skip_single:
        if args.single_threads:
            torch.set_num_threads(args.single_threads)
        rec = Recommender(args.model, plugins=args.plugin, **_values(args)).fit(ds, show_progress=False)

        def ev():
            with rec.model.scoring():
                evaluate_splits(rec.model.score, ds.train, {"valid": ds.valid, "test": ds.test},
                                block_size=rec.train_config.eval_batch_size)
        single = {**_summary(rec, _time_eval(ev)), "threads": torch.get_num_threads()}
        log.info("single process: test recall@20 %.4f at epoch %d", single["test"]["recall@20"],
                 single["best_epoch"])
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "rank0.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
               str(Path(__file__).resolve()), "--data", args.data, "--model", args.model,
               "--threads", str(args.threads), "--worker-out", str(summary)]
        cmd += [a for p in args.plugin for a in ("--plugin", p)] + [a for s in args.set for a in ("--set", s)]
        cmd += ["--epochs", str(args.epochs)] if args.epochs else []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        subprocess.run(cmd, check=True, env=env)
        ddp = json.loads(summary.read_text())
    name = args.name or (args.model + "".join("+" + p for p in args.plugin) + f"-ddp{args.nproc}"
                         + (f"-{args.epochs}ep" if args.epochs else ""))
    out = {
        "model": args.model, "plugins": args.plugin, "dataset": ds.name,
        "command": "python benchmarks/ddp.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "config": ddp.pop("config"), "world_size": args.nproc, "backend": "gloo",
        **{k: ddp[k] for k in ("epochs", "best_epoch", "stopped_early", "sec_per_epoch")},
        "threads": args.threads, "sec_per_epoch_by_threads": {str(args.threads): ddp["sec_per_epoch"]},
        **{k: ddp[k] for k in ("eval_seconds", "setup_seconds", "peak_rss_mb", "peak_rss_mb_per_rank",
                                "parameters", "valid", "test")},
        "single_process": single,
        "recall@20_rel_gap": (round(ddp["test"]["recall@20"] / single["test"]["recall@20"] - 1.0, 5)
                              if single else None),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_run(args.out, ds.name, name, out,
              ("model", "world_size", "epochs", "best_epoch", "sec_per_epoch", "recall@20_rel_gap"))


if __name__ == "__main__":
    main()
