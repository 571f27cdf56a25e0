#!/usr/bin/env python3
"""Background-music matching benchmark: train matchers and write ``benchmarks/results/<dataset>/<name>.json``.

    python benchmarks/music.py                                   # pop, dual-encoder, cmvae on music-synth
    python benchmarks/music.py --models cmvae --set epochs=5 --name cmvae-5ep
    python benchmarks/music.py --data /path/to/music-folder      # a folder in the prismrec.tasks.music layout

The synthetic set is ``make_music_synthetic()`` with its defaults (20,000 videos, 1,000 tracks, seed
0). Every model is trained to early stopping on valid Recall@10 (patience 10); the ``test`` dict
holds the test metrics of the best-valid epoch. Accuracy does not depend on machine load; speed
does, so the file records the load average before and after (``load_avg``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _results import machine  # noqa: E402
from prismrec.bundle import write_json  # noqa: E402
from prismrec.config import parse_overrides  # noqa: E402
from prismrec.tasks.music import evaluate_model, fit, load_music, make_music_synthetic  # noqa: E402
from prismrec.tasks.music.bundle import plain_config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def run(ds, model: str, values: dict, name: str, out: Path, argv: list[str]) -> dict:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = fit(ds, model, values)
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    evaluate_model(res.model, ds, ("test",))
    eval_s = time.perf_counter() - t1
    m = res.model
    record = {
        "model": model, "dataset": ds.name, "task": "music",
        "command": "python benchmarks/music.py " + " ".join(shlex.quote(a) for a in argv),
        "config": {**plain_config(res.train_config), **plain_config(m.config)},
        "epochs": len(res.history), "best_epoch": res.best_epoch, "stopped_early": res.stopped_early,
        "sec_per_epoch": round(res.sec_per_epoch, 3), "total_seconds": round(total, 1),
        "eval_seconds_test": round(eval_s, 4), "threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "parameters": sum(p.numel() for p in m.parameters()),
        "valid": {k: round(v, 5) for k, v in res.valid.items()},
        "test": {k: round(v, 5) for k, v in res.test.items()},
        "valid_curve": [round(h["valid"][res.train_config.valid_metric], 4) for h in res.history],
        "data": ds.info(),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    dest = out / ds.name / f"{name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, record)
    t = record["test"]
    print(f"{name:<16} best epoch {res.best_epoch:>3}/{len(res.history):<3} {res.sec_per_epoch:6.2f} s/epoch  "
          f"R@1 {t['recall@1']:.4f}  R@10 {t['recall@10']:.4f}  R@50 {t['recall@50']:.4f}  "
          f"NDCG@10 {t['ndcg@10']:.4f}  MedR {t['medr']:.0f}  -> {dest}", flush=True)
    return record


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic", help="music dataset folder, or 'synthetic' (default)")
    ap.add_argument("--models", default="pop,dual-encoder,cmvae", help="comma-separated music models")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (all models)")
    ap.add_argument("--name", default="", help="result file name (one model only; default: the model name)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.name and len(models) != 1:
        ap.error("--name needs exactly one model")
    ds = make_music_synthetic() if args.data == "synthetic" else load_music(args.data)
    print(json.dumps(ds.info()))
    values = parse_overrides(args.set)
    for model in models:
        run(ds, model, {k: v for k, v in values.items()}, args.name or model, Path(args.out), argv)


if __name__ == "__main__":
    main()
