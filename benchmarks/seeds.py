#!/usr/bin/env python3
"""Train one model for a fixed epoch count with several seeds; write the per-seed test metrics.

    python benchmarks/seeds.py --data /tmp/baby-like --model mgcn --epochs 5 --seeds 999,1,2,3,4
    # -> benchmarks/results/baby-like/mgcn-5ep-seeds.json

A fixed-epoch comparison with MMRec (peers.md) is one draw of the random streams (initial
weights, shuffles, negatives); where a model is still taking off at that epoch (MGCN at epoch 4)
the draw moves the metric by several percent. This gives the spread of prismrec's own draws, to
set beside MMRec's single published run.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
from pathlib import Path

import torch

from _results import write_json  # noqa: E402  (puts src/ on the path)
from prismrec import Recommender, load_dataset  # noqa: E402
from prismrec.config import parse_overrides  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def summary(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 5), "stdev": round(statistics.stdev(values), 5) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder (e.g. /tmp/baby-like)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--epochs", type=int, required=True, help="fixed epoch count")
    ap.add_argument("--seeds", default="999,1,2,3,4", help="comma-separated seeds")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
        values = {**parse_overrides(args.set), "epochs": args.epochs, "seed": seed}
        rec = Recommender(args.model, checkpoint=False, **values)
        rec.fit(ds, show_progress=False)
        m = rec.metrics
        runs.append({"seed": seed, "best_epoch": m["best_epoch"],
                     "valid_recall@20": round(m["valid"]["recall@20"], 5),
                     "test_recall@20": round(m["test"]["recall@20"], 5),
                     "test_ndcg@20": round(m["test"]["ndcg@20"], 5)})
        print(runs[-1], flush=True)
    out = {"model": args.model, "dataset": ds.name, "epochs": args.epochs,
           "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
           "config": parse_overrides(args.set), "threads": args.threads,
           "note": "fixed-epoch runs that differ only in the seed (initial weights, shuffles, negatives)",
           "runs": runs,
           "test_recall@20": summary([r["test_recall@20"] for r in runs]),
           "test_ndcg@20": summary([r["test_ndcg@20"] for r in runs]),
           "valid_recall@20": summary([r["valid_recall@20"] for r in runs])}
    dest = Path(args.out) / ds.name / f"{args.model}-{args.epochs}ep-seeds.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, out)
    print(json.dumps({k: out[k] for k in ("test_recall@20", "test_ndcg@20")}), f"\nwrote {dest}")
    return dest


if __name__ == "__main__":
    main()
