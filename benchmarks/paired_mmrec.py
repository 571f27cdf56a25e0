#!/usr/bin/env python3
"""MGCN seconds per epoch, prismrec against MMRec, measured in alternating rounds on one machine.

    python benchmarks/paired_mmrec.py --data /tmp/baby-like --rounds 3
    # -> benchmarks/results/baby-like/mgcn-vs-mmrec-speed.json

This VM's speed drifts by up to ~1.3x over minutes (memory-bound work most), so an absolute
target taken on another day (peers.md) is met or missed with the drift. Running MMRec's own MGCN
pipeline (`mmrec_mgcn.py`, a transcription of its code) and prismrec's `run.py` one after the other,
round by round, gives a ratio in which the drift cancels: the issue's "one third of MMRec's
seconds per epoch" is a ratio. Each run is a fresh process with the same thread count.
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


def mmrec_seconds(data: str, epochs: int, threads: int, tmp: Path) -> list[float]:
    out = tmp / "mmrec.json"
    subprocess.run([sys.executable, str(HERE / "mmrec_mgcn.py"), "--data", data, "--seeds", "999",
                    "--epochs", str(epochs), "--threads", str(threads), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["runs"][0]["train_seconds"]


def prismrec_seconds(data: str, epochs: int, threads: int, tmp: Path) -> float:
    subprocess.run([sys.executable, str(HERE / "run.py"), "--data", data, "--model", "mgcn",
                    "--epochs", str(epochs), "--threads", str(threads), "--out", str(tmp)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(next(tmp.glob("*/mgcn-*ep.json")).read_text())["sec_per_epoch"]


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/baby-like", help="MMRec-format dataset folder")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mmrec-epochs", type=int, default=3, help="MMRec epochs per round (~20-26 s each)")
    ap.add_argument("--epochs", type=int, default=5, help="prismrec epochs per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    rounds = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as d:
            load = os.getloadavg()[0]
            mm = mmrec_seconds(args.data, args.mmrec_epochs, args.threads, Path(d))
            ours = prismrec_seconds(args.data, args.epochs, args.threads, Path(d))
        row = {"round": r, "load_avg": round(load, 2), "mmrec_epoch_seconds": mm,
               "mmrec_sec_per_epoch": round(statistics.mean(mm), 3), "prismrec_sec_per_epoch": round(ours, 3)}
        row["ratio"] = round(row["prismrec_sec_per_epoch"] / row["mmrec_sec_per_epoch"], 4)
        rounds.append(row)
        print(json.dumps(row), flush=True)
    ratios = [r["ratio"] for r in rounds]
    out = {"model": "mgcn", "dataset": Path(args.data).name, "threads": args.threads,
           "command": "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d"),
           "note": "alternating fresh processes: MMRec's MGCN pipeline (benchmarks/mmrec_mgcn.py, seed 999; "
                   "its epoch time includes its data loader, as MMRec's trainer times it) then prismrec's "
                   "run.py; ratio = prismrec s/epoch / MMRec s/epoch of the same round",
           "rounds": rounds, "ratio_median": statistics.median(ratios),
           "mmrec_sec_per_epoch_median": statistics.median(r["mmrec_sec_per_epoch"] for r in rounds),
           "prismrec_sec_per_epoch_median": statistics.median(r["prismrec_sec_per_epoch"] for r in rounds)}
    dest = Path(args.out) / out["dataset"] / "mgcn-vs-mmrec-speed.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, out)
    print(f"ratio median {out['ratio_median']}; wrote {dest}")
    return dest


if __name__ == "__main__":
    main()
