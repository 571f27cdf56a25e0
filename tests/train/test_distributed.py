"""Data-parallel training: sharding, gradient averaging, sharded evaluation, rank-0-only writes, resume.

The multi-process checks run in one 2-process gloo job (``torch.multiprocessing.spawn``) whose
workers write what they saw to JSON files that the test then compares.
"""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.data import make_synthetic
from prismrec.evaluation import evaluate_splits
from prismrec.train.distributed import DistContext


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- single process ----------------------------------------------------------------------------
@pytest.mark.parametrize("world", [2, 3])
def test_shards_partition_the_rows_in_equal_sizes(tiny, world):
    shards = [DistContext(r, world).shard_rows(tiny.train, "pairwise") for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert len(shards[0]) == -(-tiny.train.nnz // world)
    allrows = np.concatenate(shards)
    assert set(allrows.tolist()) == set(range(tiny.train.nnz))
    assert len(allrows) - tiny.train.nnz < world  # only the remainder is repeated
    users = [DistContext(r, world).shard_rows(tiny.train, "users") for r in range(world)]
    assert set(np.concatenate(users).tolist()) == set(np.flatnonzero(np.diff(tiny.train.indptr)).tolist())


def test_shard_rows_rejects_unknown_sampler(tiny):
    with pytest.raises(ValueError, match="pairwise"):
        DistContext(0, 2).shard_rows(tiny.train, "triplets")


def test_world_of_one_equals_plain_training(tiny):
    kw = dict(epochs=3, checkpoint=False, eval_ks=(10, 20))
    plain = Recommender("lightgcn", **kw).fit(tiny, show_progress=False)
    one = Recommender("lightgcn", **kw).fit(tiny, show_progress=False, dist=DistContext(0, 1))
    assert one.metrics["valid"] == plain.metrics["valid"]
    assert one.metrics["test"] == plain.metrics["test"]


def test_from_env_explains_torchrun(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(Exception, match="torchrun"):
        DistContext.from_env()


# -- two processes -----------------------------------------------------------------------------
def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), PRISMREC_CACHE="off")
    torch.set_num_threads(1)
    ds = make_synthetic(300, 120, 10, modalities={"image": 24, "text": 16}, seed=1, name="tiny")
    dist = DistContext.from_env()
    rep: dict = {"rank": dist.rank, "world": dist.world_size}
    rows = dist.shard_rows(ds.train, "pairwise")
    rep["rows"] = rows.tolist()

    # gradient averaging, including a parameter only one rank touched
    lin = torch.nn.Linear(3, 1, bias=False)
    other = torch.nn.Parameter(torch.zeros(2))
    holder = torch.nn.Module()
    holder.lin, holder.other, holder.unused = lin, other, torch.nn.Parameter(torch.zeros(1))
    lin.weight.grad = torch.full_like(lin.weight, float(rank + 1))
    if rank == 1:
        other.grad = torch.ones(2)
    dist.all_reduce_grads(holder)
    rep["avg_grad"] = lin.weight.grad.tolist()
    rep["other_grad"] = other.grad.tolist()
    rep["unused_grad_is_none"] = holder.unused.grad is None

    # training: only rank 0 writes (each rank gets its own run dir here to see who writes)
    kw = dict(epochs=3, eval_ks=(10, 20), patience=5)
    rec = Recommender("lightgcn", **kw).fit(ds, run_dir=os.path.join(out, f"run{rank}"), show_progress=False,
                                            dist=dist)
    rep["valid"], rep["test"] = rec.metrics["valid"], rec.metrics["test"]
    rep["weights"] = float(sum(p.detach().double().sum() for p in rec.model.parameters()))

    # sharded evaluation equals the single-process one, exactly
    splits = {"valid": ds.valid, "test": ds.test}
    with rec.model.scoring():
        rep["sharded"] = dist.evaluate(rec.model, ds, splits, rec.train_config, {"test": ds.valid})
        rep["single"] = evaluate_splits(rec.model.score, ds.train, splits, ks=rec.train_config.eval_ks,
                                        extra_masks={"test": ds.valid})

    # exact resume: 2 epochs, then resume to 3 == the 3 epochs in a row above
    shared = os.path.join(out, "shared")
    Recommender("lightgcn", **{**kw, "epochs": 2}).fit(ds, run_dir=shared, show_progress=False, dist=dist)
    resumed = Recommender("lightgcn", **kw).fit(ds, run_dir=shared, show_progress=False, dist=dist, resume=True,
                                                allow_config_change=("epochs",))  # 2 -> 3 (issue 22)
    rep["resume_equal"] = bool(rec.metrics["valid"] == resumed.metrics["valid"]
                               and all(torch.equal(a, b) for a, b in zip(rec.model.parameters(),
                                                                         resumed.model.parameters())))
    dist.close()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(rep, f)


def test_two_process_gloo_job(tmp_path, tiny):
    world = 2
    torch.multiprocessing.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert len(r0["rows"]) == len(r1["rows"])
    assert set(r0["rows"]) | set(r1["rows"]) == set(range(tiny.train.nnz))  # the workers' data is `tiny`
    assert r0["avg_grad"] == r1["avg_grad"] == [[1.5, 1.5, 1.5]]
    assert r0["other_grad"] == r1["other_grad"] == [0.5, 0.5]
    assert r0["unused_grad_is_none"] and r1["unused_grad_is_none"]
    # replicas stay identical and agree on the metrics
    assert r0["weights"] == r1["weights"]
    assert r0["valid"] == r1["valid"] and r0["test"] == r1["test"]
    assert r0["sharded"] == r1["sharded"] == r0["single"]
    # rank 0 wrote its bundle and log; rank 1 wrote nothing
    assert (tmp_path / "run0" / "log.jsonl").is_file()
    assert (tmp_path / "run0" / "checkpoint.safetensors").is_file()
    assert not (tmp_path / "run1").exists()
    assert r0["resume_equal"] and r1["resume_equal"]


def test_ranks_sample_different_streams():
    rng = np.random.default_rng(7)
    a = DistContext(0, 2).sampler_rng(7, rng)
    b = DistContext(1, 2).sampler_rng(7, np.random.default_rng(7))
    assert a is rng  # rank 0 samples exactly as a single process would
    assert not np.array_equal(a.integers(0, 1000, 20), b.integers(0, 1000, 20))


@pytest.mark.slow
def test_torchrun_cli(tmp_path, mmrec_dir):
    """The real launcher: ``torchrun -m prismrec train --distributed`` writes one bundle."""
    import subprocess
    import sys
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "prismrec", "train", "--data", str(mmrec_dir), "--model", "bpr",
           "--distributed", "--quiet", "--out", str(out), "--set", "epochs=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRISMREC_CACHE": "off"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("best epoch") == 1  # only rank 0 reports
    assert (out / "weights.safetensors").is_file() or any(out.iterdir())
