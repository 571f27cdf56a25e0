#!/usr/bin/env python3
"""Inference cost per user batch: LD4MRec's one-step C-Net call vs graph models (MGCN, ...).

    python benchmarks/ld4mrec_inference.py --data /tmp/baby-like --models ld4mrec,mgcn,freedom,lightgcn

For every model (untrained weights: the cost does not depend on them) it times, median of
``--repeats``: ``prepare`` — what a scoring session computes once (graph propagation of all
users and items for MGCN/FREEDOM/LightGCN; nothing for LD4MRec), and ``score`` — one call of
``score(users)`` for a batch of B users, for each B in ``--batches``. The amortised cost of one
batch is ``prepare / (n_users / B) + score``; a single request pays ``prepare + score`` unless
the embeddings are cached. Prints a markdown table and writes JSON next to the results.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prismrec import load_dataset
from prismrec.models import build_model
from prismrec.bundle import write_json


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", default="ld4mrec,mgcn,freedom,lightgcn")
    ap.add_argument("--batches", default="512,2048")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    ds = load_dataset(args.data)
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name, ds)
        with model.scoring():
            prep = median_time(model.prepare_scoring, args.repeats)
            row = {"model": name, "prepare_s": round(prep, 4)}
            for b in batches:
                users = torch.from_numpy(np.sort(rng.choice(ds.n_users, size=min(b, ds.n_users), replace=False)))
                sc = median_time(lambda m=model, u=users: m.score(u), args.repeats)
                row[f"score_{b}_s"] = round(sc, 4)
                row[f"amortised_{b}_s"] = round(prep * b / ds.n_users + sc, 4)
                row[f"single_request_{b}_s"] = round(prep + sc, 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = ["model", "prepare_s"] + [f"{k}_{b}_s" for b in batches for k in ("score", "amortised", "single_request")]
    table = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    table += "".join("| " + " | ".join(str(r[c]) for c in cols) + " |\n" for r in rows)
    print(table)
    dest = Path(args.out) / ds.name / "ld4mrec-inference.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, {"rows": rows, "threads": torch.get_num_threads(), "load_avg": os.getloadavg()[0],
                      "command": shlex.join(["python", "benchmarks/ld4mrec_inference.py",
                                             *(argv if argv is not None else sys.argv[1:])]),
                      "date": time.strftime("%Y-%m-%d")})
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
