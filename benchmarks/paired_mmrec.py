#!/usr/bin/env python3
"""Seconds per epoch and per evaluation, prismrec against MMRec, measured in alternating rounds on one machine.

    python benchmarks/paired_mmrec.py --data /tmp/baby-like --rounds 3
    # -> benchmarks/results/baby-like/mgcn-vs-mmrec-speed.json
    python benchmarks/paired_mmrec.py --data /tmp/baby-like --model lightgcn --rounds 3
    # -> benchmarks/results/baby-like/lightgcn-vs-mmrec-speed.json

This VM's speed drifts by up to ~1.3x over minutes (memory-bound work most), so an absolute
target taken on another day (peers.md) is met or missed with the drift. Running MMRec's own
pipeline for the model (`mmrec_mgcn.py --model <model>`, a transcription of its code: MGCN or
LightGCN) and prismrec's `run.py --model <model>` one after the other, round by round, gives a
ratio in which the drift cancels: the issue's "one third of MMRec's seconds per epoch" is a ratio.
Each run is a fresh process with the same thread count.

Each round also compares evaluation: MMRec's median seconds of one `_valid_epoch(valid_data)`
over its epochs (one full ranking of all valid users, as peers.md's "eval s (all valid users)"
column measures it) against prismrec's `eval_seconds` from run.py's JSON, which is one full-ranking
evaluation of the valid AND the test users in one pass (median of 3) -- so prismrec's side does
more work than MMRec's in that ratio. MMRec's side is the transcription of MMRec's evaluator,
hit test included (~1.8 s of its baby-like evaluation is that Python loop).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = ("mgcn", "lightgcn")


def mmrec_run(model: str, data: str, epochs: int, threads: int, tmp: Path) -> dict:
    """MMRec's pipeline for ``model`` (seed 999): its JSON ``runs[0]`` (train_seconds,
    valid_eval_seconds, test_eval_seconds per epoch)."""
    out = tmp / "mmrec.json"
    subprocess.run([sys.executable, str(HERE / "mmrec_mgcn.py"), "--data", data, "--model", model,
                    "--seeds", "999", "--epochs", str(epochs), "--threads", str(threads), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["runs"][0]


def prismrec_run(model: str, data: str, epochs: int, threads: int, tmp: Path) -> dict:
    """prismrec's run.py for ``model``: its result JSON (sec_per_epoch, eval_seconds, ...)."""
    subprocess.run([sys.executable, str(HERE / "run.py"), "--data", data, "--model", model,
                    "--epochs", str(epochs), "--threads", str(threads), "--out", str(tmp)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(next(tmp.glob(f"*/{model}-*ep.json")).read_text())


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/baby-like", help="MMRec-format dataset folder")
    ap.add_argument("--model", choices=MODELS, default="mgcn", help="model on both sides")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mmrec-epochs", type=int, default=3,
                    help="MMRec epochs per round (MGCN ~20-30 s each, LightGCN ~3 s + ~4 s of evaluation)")
    ap.add_argument("--epochs", type=int, default=5, help="prismrec epochs per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    rounds = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as d:
            load = os.getloadavg()[0]
            mm = mmrec_run(args.model, args.data, args.mmrec_epochs, args.threads, Path(d))
            ours = prismrec_run(args.model, args.data, args.epochs, args.threads, Path(d))
        row = {"round": r, "load_avg": round(load, 2), "mmrec_epoch_seconds": mm["train_seconds"],
               "mmrec_sec_per_epoch": round(statistics.mean(mm["train_seconds"]), 3),
               "prismrec_sec_per_epoch": round(ours["sec_per_epoch"], 3)}
        row["ratio"] = round(row["prismrec_sec_per_epoch"] / row["mmrec_sec_per_epoch"], 4)
        row["mmrec_valid_eval_seconds"] = mm["valid_eval_seconds"]
        row["mmrec_test_eval_seconds"] = mm["test_eval_seconds"]
        row["mmrec_valid_eval_seconds_median"] = round(statistics.median(mm["valid_eval_seconds"]), 4)
        row["prismrec_eval_seconds"] = round(ours["eval_seconds"], 4)
        row["eval_ratio"] = (round(row["prismrec_eval_seconds"] / row["mmrec_valid_eval_seconds_median"], 4)
                             if row["mmrec_valid_eval_seconds_median"] > 0 else None)
        rounds.append(row)
        print(json.dumps(row), flush=True)

    def med(key):
        values = [r[key] for r in rounds if r[key] is not None]
        return statistics.median(values) if values else None

    name = "MGCN" if args.model == "mgcn" else "LightGCN"
    out = {"model": args.model, "dataset": Path(args.data).name, "threads": args.threads,
           "command": "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d"),
           "note": f"alternating fresh processes: MMRec's {name} pipeline (benchmarks/mmrec_mgcn.py --model "
                   f"{args.model}, seed 999; its epoch time includes its data loader, as MMRec's trainer times it) "
                   "then prismrec's run.py; ratio = prismrec s/epoch / MMRec s/epoch of the same round. "
                   "eval_ratio = prismrec eval_seconds / MMRec's median valid-evaluation seconds of the same "
                   "round, where MMRec's number is one _valid_epoch(valid_data) (one full ranking of all valid "
                   "users, as peers.md's 'eval s (all valid users)') and prismrec's eval_seconds is one "
                   "full-ranking evaluation of the valid AND test users in one pass (run.py, median of 3)",
           "rounds": rounds, "ratio_median": med("ratio"),
           "mmrec_sec_per_epoch_median": med("mmrec_sec_per_epoch"),
           "prismrec_sec_per_epoch_median": med("prismrec_sec_per_epoch"),
           "eval_ratio_median": med("eval_ratio"),
           "mmrec_valid_eval_seconds_median": med("mmrec_valid_eval_seconds_median"),
           "prismrec_eval_seconds_median": med("prismrec_eval_seconds")}
    dest = Path(args.out) / out["dataset"] / f"{args.model}-vs-mmrec-speed.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, out)
    print(f"ratio median {out['ratio_median']}; eval ratio median {out['eval_ratio_median']}; wrote {dest}")
    return dest


if __name__ == "__main__":
    main()
