"""Shared harness of the side-by-side checks (``smore_reference.py``, ``lgmrec_reference.py``).

A prismrec model (its fast path) and a plain full-table autograd version of the same model, written
here from the model's equations, start from the same parameters and train on the same batches,
prismrec's with its own optimiser (fused Adam, updates inside backward), the plain version with a
plain ``torch.optim.Adam``. The
harness prints both losses and the largest parameter difference as it goes, then both models'
epoch metrics.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch

import _results  # noqa: F401  (puts src/ on the path)
from prismrec import load_dataset  # noqa: E402
from prismrec.data.sampler import PairwiseSampler  # noqa: E402
from prismrec.evaluation import evaluate_splits  # noqa: E402
from prismrec.models.base import build_model  # noqa: E402


def arguments(description: str, extra=None) -> argparse.Namespace:
    """The common command line (``--data --batches --threads --seed``), plus ``extra(parser)``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", required=True, help="dataset folder (e.g. /tmp/data/baby-like)")
    ap.add_argument("--batches", type=int, default=0, help="stop after this many batches (default: one epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=999)
    if extra is not None:
        extra(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args


def twins(name: str, args, config):
    """``(dataset, prismrec model, its twin with the same parameters, the batches)``."""
    ds = load_dataset(args.data)
    torch.manual_seed(args.seed)
    fast = build_model(name, ds, config)
    twin = build_model(name, ds, config)
    twin.load_state_dict(fast.state_dict())
    batches = list(PairwiseSampler(ds.train, 2048, np.random.default_rng(args.seed)))
    return ds, fast, twin, batches[: args.batches] if args.batches else batches


def coo(matrix) -> torch.Tensor:
    """A torch COO tensor of a scipy matrix or a :class:`prismrec.graphs.SparseMatrix` (``torch.sparse.mm``'s input)."""
    m = sp.coo_matrix(getattr(matrix, "scipy", matrix), dtype=np.float32)
    return torch.sparse_coo_tensor(np.vstack([m.row, m.col]).astype(np.int64), m.data, m.shape).coalesce()


def metrics(model, embeddings, ds) -> dict:
    """Valid R@20, test R@20 and N@20 of ``embeddings() -> (users, items)`` (no gradient, eval mode)."""
    model.eval()
    with torch.no_grad():
        u, i = embeddings()
    res = evaluate_splits(lambda users, out=None: u[users] @ i.T, ds.train, {"valid": ds.valid, "test": ds.test})
    return {"valid_recall@20": res["valid"]["recall@20"], "test_recall@20": res["test"]["recall@20"],
            "test_ndcg@20": res["test"]["ndcg@20"]}


def train_side_by_side(ds, fast, twin, ref, batches, seed: int, lr: float = 1e-3) -> None:
    """One pass over ``batches`` for ``fast`` (prismrec) and ``twin`` (through ``ref.loss``), then
    both models' metrics. Before each batch's loss the global RNG is reseeded to the same value
    for both, so draws of the same shape in the same order agree."""
    opt_fast = fast.configure_optimizer(lr, 0.0)
    fast.step_in_backward(opt_fast)
    opt_ref = torch.optim.Adam(twin.parameters(), lr=lr)
    fast.train(), twin.train()
    t0 = time.perf_counter()
    for step, batch in enumerate(batches):
        losses = []
        for opt, loss_fn in ((opt_fast, fast.loss), (opt_ref, ref.loss)):
            torch.manual_seed(seed + step)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if step < 3 or step % 10 == 0 or step == len(batches) - 1:
            diff = max((a - b).abs().max().item() for a, b in zip(fast.parameters(), twin.parameters()))
            print(f"batch {step:3d}: loss prismrec {losses[0]:.6f}  reference {losses[1]:.6f}  "
                  f"max |parameter difference| {diff:.2e}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    fast.step_in_backward(None)
    print("prismrec  ", metrics(fast, fast.embeddings, ds))
    print("reference ", metrics(twin, ref.embeddings, ds))
