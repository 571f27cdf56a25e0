#!/usr/bin/env python3
"""Random SIGKILLs during training and bundle writes: does every kill leave a bundle that is either
complete and verified, or cleanly refused? (issue 22)

    python benchmarks/fault.py --kills 60      # -> benchmarks/results/fault.json

Two kinds of trial, alternating, each one process killed with SIGKILL at a random moment:

* ``write``: a process saves a VBPR bundle into the same folder over and over, each time with a
  new marker (its first weight and ``metrics.json["tag"]``), and is killed after a random delay:
  the kill lands inside ``save_bundle`` almost always. The folder must then load and verify with
  matching markers (one whole bundle, old or new), or be refused with a ``BundleError``.
* ``train``: ``prismrec train`` on a small synthetic set, killed at a random moment of a random
  epoch: once its log shows that many finished epochs (or its ``train.log`` appeared, for epoch
  0), after a random part of an epoch's time (from a first, unkilled run); after the last epoch's
  line the kill lands in the final bundle write. The bundle must be complete or
  refused (or absent), the checkpoint load and verify or be refused; then ``--resume`` must finish
  with exit 0, a verified bundle and a log of every epoch exactly once.

Anything else (a traceback while checking, a bundle that loads but fails verification, mixed
markers, a failed resume) counts as a failure; the acceptance is 0 failures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_json  # noqa: E402  (puts src/ on the path)

RESULTS = Path(__file__).resolve().parent / "results"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PRISMREC_CACHE": "off", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
TRAIN_SET = ["--set", "batch_size=256", "--set", "patience=100", "--set", "num_threads=1"]


def writer(path: str, data: str) -> None:
    """The ``write`` trial's child: save bundles into ``path`` forever, a new marker each time."""
    import torch
    torch.set_num_threads(1)
    from prismrec import Recommender, load_dataset
    rec = Recommender("vbpr", epochs=1, batch_size=256, checkpoint=False).fit(load_dataset(data), show_progress=False)
    param = next(iter(rec.model.parameters()))
    tag = 0
    rec.metrics = {"tag": tag}
    param.data.view(-1)[0] = tag
    rec.save(path)
    print("ready", flush=True)
    while True:
        tag += 1
        with torch.no_grad():
            param.view(-1)[0] = tag
        rec.metrics = {"tag": tag}
        rec.save(path)


def bundle_state(path: Path, markers: bool = False) -> str:
    """'complete' (loads, verifies, markers agree), 'refused' (BundleError) or 'absent'."""
    from prismrec import Recommender
    from prismrec.bundle import verify_bundle
    from prismrec.errors import BundleError
    if not path.is_dir() or not any(p for p in path.iterdir() if not p.name.startswith(".")):
        return "absent"
    try:
        rec = Recommender.load(path)
    except BundleError:
        return "refused"
    verify_bundle(path)  # raises if a bundle that loaded does not verify: a failure
    if markers:
        first = float(next(iter(rec.model.parameters())).detach().view(-1)[0])
        if first != rec.metrics["tag"]:
            raise AssertionError(f"mixed bundle: weights of save {first}, metrics of save {rec.metrics['tag']}")
    return "complete"


def checkpoint_state(path: Path) -> str:
    from prismrec.train.checkpoint import CheckpointError, load_checkpoint
    f = path / "checkpoint.safetensors"
    if not f.is_file():
        return "absent"
    try:
        load_checkpoint(f)
    except CheckpointError:
        return "refused"
    return "verified"


def _kill_after(p: subprocess.Popen, seconds: float, t0: float) -> float:
    """SIGKILL ``p`` unless it ends within ``seconds``; seconds from ``t0`` to the kill, or -1 if it ended first."""
    try:
        p.wait(timeout=seconds)
        return -1.0
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return time.perf_counter() - t0


def kill_after(cmd: list[str], delay: float, wait_for_ready: bool = False) -> float:
    """Start ``cmd``, SIGKILL it ``delay`` s later (after it printed 'ready' when asked); returns the
    delay actually used (a process that ended first was not killed: returns -1)."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if wait_for_ready:
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            raise RuntimeError(f"writer did not start: {line!r}")
    return _kill_after(p, delay, time.perf_counter())


def kill_at_epoch(cmd: list[str], run: Path, epoch: int, extra: float, timeout: float = 900) -> float:
    """Start ``cmd``; once ``run/log.jsonl`` has ``epoch`` lines (``run/train.log`` exists, for 0),
    wait ``extra`` s and SIGKILL it. Returns seconds from start to kill (-1: it ended first)."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    log, journal = run / "log.jsonl", run / "train.log"
    while p.poll() is None and time.perf_counter() - t0 < timeout:
        done = len(log.read_text().splitlines()) if log.is_file() else 0
        if (epoch == 0 and journal.is_file()) or (epoch > 0 and done >= epoch):
            break
        time.sleep(0.02)
    return _kill_after(p, extra, t0)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=60, help="number of killed processes (half of each kind)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of each training run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="trials run at once")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default=str(RESULTS / "fault.json"))
    ap.add_argument("--writer", nargs=2, metavar=("PATH", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.writer:
        writer(*args.writer)
        return Path(args.writer[0])
    import torch
    torch.set_num_threads(1)  # the checks; each child process has one thread too
    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="prismrec-fault-"))
    work.mkdir(parents=True, exist_ok=True)
    from prismrec.data import make_synthetic, save_mmrec
    data = save_mmrec(make_synthetic(300, 120, 10, modalities={"image": 24, "text": 16}, seed=1, name="fault-tiny"),
                      work / "fault-tiny")
    train = [sys.executable, "-m", "prismrec", "train", "--data", str(data), "--model", "vbpr", "--quiet",
             "--set", f"epochs={args.epochs}", *TRAIN_SET]
    t0 = time.perf_counter()  # calibration: how long one unkilled run takes, and its imports
    subprocess.run([*train, "--out", str(work / "calibration")], env=ENV, check=True, capture_output=True)
    t_run = time.perf_counter() - t0
    cal = [json.loads(x) for x in (work / "calibration" / "log.jsonl").read_text().splitlines()]
    t_epoch = sum(r["train_seconds"] + r["eval_seconds"] for r in cal) / len(cal)
    load_start = os.getloadavg()
    plan = []  # (kind, delay or (epoch, extra)) drawn up front: the same seed, the same trials
    for n in range(args.kills):
        if n % 2 == 0:
            plan.append(("write", rng.uniform(0.0, 1.5)))
        else:
            epoch = rng.randint(0, args.epochs)
            extra = rng.uniform(0.0, 0.3) if epoch == args.epochs else rng.uniform(0.0, 1.2 * t_epoch)
            plan.append(("train", (epoch, extra)))

    def trial_of(n: int) -> dict:
        kind, when = plan[n]
        run = work / f"{kind}-{n}"
        trial = {"kind": kind}
        try:
            if kind == "write":
                trial["killed_after_s"] = round(kill_after([sys.executable, __file__, "--writer", str(run), str(data)],
                                                           when, wait_for_ready=True), 3)
                trial["bundle"] = bundle_state(run, markers=True)
                trial["staging_left"] = len([p for p in run.iterdir() if p.name.startswith(".bundle.")])
            else:
                trial["kill_epoch"], trial["kill_extra_s"] = when[0], round(when[1], 3)
                trial["killed_after_s"] = round(kill_at_epoch([*train, "--out", str(run)], run, *when), 3)
                trial["bundle"] = bundle_state(run)
                trial["checkpoint"] = checkpoint_state(run)
                r = subprocess.run([*train, "--out", str(run), "--resume"], env=ENV, capture_output=True, text=True)
                if r.returncode != 0:
                    raise AssertionError(f"--resume failed ({r.returncode}): {r.stderr[-500:]}")
                epochs = [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()]
                if epochs != list(range(args.epochs)):
                    raise AssertionError(f"log after resume has epochs {epochs}")
                trial["after_resume"] = bundle_state(run)
                if trial["after_resume"] != "complete":
                    raise AssertionError(f"bundle after resume is {trial['after_resume']}")
            trial["ok"] = True
        except Exception as e:  # anything but a clean state or a clean refusal is a failure
            trial["ok"], trial["error"] = False, "".join(traceback.format_exception_only(e)).strip()[-800:]
        print(n, json.dumps(trial), flush=True)
        if trial["ok"]:
            shutil.rmtree(run, ignore_errors=True)
        return trial

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(args.jobs) as pool:  # trials are independent folders and processes
        trials = list(pool.map(trial_of, range(args.kills)))
    failures = sum(1 for t in trials if not t["ok"])

    def count(kind, key):
        out: dict = {}
        for t in trials:
            if t["kind"] == kind and key in t:
                out[t[key]] = out.get(t[key], 0) + 1
        return out

    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "kills": sum(1 for t in trials if t.get("killed_after_s", -1) >= 0),
        "trials": len(trials), "failures": failures,
        "complete_or_refused": sum(1 for t in trials if t["ok"]),
        "write": {"trials": sum(1 for t in trials if t["kind"] == "write"), "bundle": count("write", "bundle"),
                  "staging_folders_left_by_the_kill": sum(t.get("staging_left", 0) for t in trials)},
        "train": {"trials": sum(1 for t in trials if t["kind"] == "train"), "bundle": count("train", "bundle"),
                  "checkpoint": count("train", "checkpoint"), "after_resume": count("train", "after_resume"),
                  "kill_epochs": count("train", "kill_epoch"),
                  "unkilled_run_seconds": round(t_run, 2), "epoch_seconds": round(t_epoch, 3)},
        "load_avg": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "cpus": os.cpu_count(),
        "note": "each trial's process is SIGKILLed at a random moment; 'complete' = loads, verifies against its "
                "manifest (and, for write trials, the weights' marker equals metrics.json's: one whole bundle); "
                "'refused' = a BundleError (for a train trial killed before its final write: the folder holds "
                "no bundle yet, only log and checkpoint); a staging folder left by a kill is removed by the next write",
        "failed_trials": [t for t in trials if not t["ok"]],
    }
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, result)
    print(json.dumps({k: result[k] for k in ("kills", "failures", "write", "train")}, indent=1), f"\nwrote {dest}")
    if args.workdir is None and not failures:
        shutil.rmtree(work, ignore_errors=True)
    return dest


if __name__ == "__main__":
    main()
