#!/usr/bin/env python3
"""Train prismrec's SMORE and a plain full-table autograd SMORE side by side on the same batches.

    python benchmarks/smore_reference.py --data /tmp/data/baby-like            # one epoch, dropout 0
    python benchmarks/smore_reference.py --data /tmp/data/baby-like --batches 5

The reference is SMORE's forward pass written the way MMRec's code runs it: every item's spectral
views, every row's preference gates, ``torch.sparse.mm`` on COO graphs, the two InfoNCE terms on
the batch rows with their duplicates, and a plain ``torch.optim.Adam`` over every parameter
(including the raw feature tables). prismrec's model runs its fast path (batch rows only,
per-distinct-row InfoNCE, feature tables updated inside backward, fused Adam). Both start from the
same parameters and see the same batches; with dropout 0 nothing else is random, so after each
batch the two parameter sets should agree to float rounding, and so should their test metrics.

This is what the baby-like NOTES cite for "prismrec's SMORE trains like MMRec's arithmetic": the
dense-reference unit test checks one step's loss and gradients; this checks a whole epoch of
updates, optimiser included.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import _results  # noqa: F401  (puts src/ on the path)
from prismrec import load_dataset  # noqa: E402
from prismrec.data.sampler import PairwiseSampler  # noqa: E402
from prismrec.evaluation import evaluate_splits  # noqa: E402
from prismrec.models.base import build_model  # noqa: E402
from prismrec.models.smore import SMOREConfig  # noqa: E402


def coo(matrix) -> torch.Tensor:
    m = sp.coo_matrix(matrix.scipy)
    return torch.sparse_coo_tensor(np.vstack([m.row, m.col]).astype(np.int64), m.data, m.shape).coalesce()


class FullTableSMORE:
    """SMORE's equations over full tables (no batch-row shortcuts), reading ``model``'s parameters."""

    def __init__(self, model):
        self.m, self.n_users, self.d = model, model.n_users, model.config.embedding_dim
        self.adj, self.user_item = coo(model.adj), coo(model.user_item)
        self.graphs = {k: coo(g) for k, g in model.item_graphs.items()}
        self.graphs["fusion"] = coo(model.fusion_graph)

    def forward(self):
        m, mods = self.m, self.m.modalities
        spec = {k: torch.fft.rfft(F.linear(getattr(m, f"feat_{k}"), m.proj[k].weight, m.proj[k].bias),
                                  dim=1, norm="ortho") for k in mods}
        filt = {v: torch.view_as_complex(m.spectral[v].weight) for v in mods + ["fusion"]}
        conv = {k: torch.fft.irfft(spec[k] * filt[k], n=self.d, dim=1, norm="ortho") for k in mods}
        fused = spec[mods[0]]
        for k in mods[1:]:
            fused = fused * spec[k]
        conv["fusion"] = torch.fft.irfft(fused * filt["fusion"], n=self.d, dim=1, norm="ortho")
        item_id = m.embedding[self.n_users:]
        views = {}
        for v, c in conv.items():
            h = item_id * m.gate[v](c)
            for _ in range(m.config.num_ii_layers):
                h = torch.sparse.mm(self.graphs[v], h)
            views[v] = torch.cat([torch.sparse.mm(self.user_item, h), h])
        layer, layers = m.embedding, [m.embedding]
        for _ in range(m.config.num_ui_layers):
            layer = torch.sparse.mm(self.adj, layer)
            layers.append(layer)
        content = torch.stack(layers, 1).mean(1)
        parts = [m.drop(m.prefer[k](content)) * torch.softmax(m.query[k](views["fusion"]), -1) * views[k]
                 for k in mods]
        parts.append(m.drop(m.prefer["fusion"](content)) * views["fusion"])
        side = torch.stack(parts).mean(0)
        return content + side, side, content

    def loss(self, batch):
        cfg, nu = self.m.config, self.n_users
        e, side, content = self.forward()
        u, p, n = e[batch.users], e[nu + batch.pos_items], e[nu + batch.neg_items]
        bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
        reg = 0.5 * ((u ** 2).sum() + (p ** 2).sum() + (n ** 2).sum()) / cfg.reg_batch_size
        pos = nu + batch.pos_items
        cl = (nce(side[pos], content[pos], cfg.temperature)
              + nce(side[batch.users], content[batch.users], cfg.temperature))
        return bpr + cfg.reg_weight * reg + cfg.cl_weight * cl

    def embeddings(self):
        e, _, _ = self.forward()
        return e[: self.n_users], e[self.n_users:]


def nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return (torch.logsumexp(a @ b.T / temperature, dim=1) - (a * b).sum(1) / temperature).mean()


def metrics(model, embeddings, ds) -> dict:
    model.eval()
    with torch.no_grad():
        u, i = embeddings()
    res = evaluate_splits(lambda users, out=None: u[users] @ i.T, ds.train, {"valid": ds.valid, "test": ds.test})
    return {"valid_recall@20": res["valid"]["recall@20"], "test_recall@20": res["test"]["recall@20"],
            "test_ndcg@20": res["test"]["ndcg@20"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder (e.g. /tmp/data/baby-like)")
    ap.add_argument("--batches", type=int, default=0, help="stop after this many batches (default: one epoch)")
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="SMORE's dropout (default 0: with dropout the two runs draw different masks)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=999)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    config = SMOREConfig(dropout=args.dropout)
    torch.manual_seed(args.seed)
    fast = build_model("smore", ds, config)
    twin = build_model("smore", ds, config)
    twin.load_state_dict(fast.state_dict())
    ref = FullTableSMORE(twin)
    batches = list(PairwiseSampler(ds.train, 2048, np.random.default_rng(args.seed)))
    batches = batches[: args.batches] if args.batches else batches

    opt_fast = fast.configure_optimizer(1e-3, 0.0)
    fast.step_in_backward(opt_fast)
    opt_ref = torch.optim.Adam(twin.parameters(), lr=1e-3)
    fast.train(), twin.train()
    t0 = time.perf_counter()
    for step, batch in enumerate(batches):
        for model, opt, loss_fn in ((fast, opt_fast, fast.loss), (twin, opt_ref, ref.loss)):
            torch.manual_seed(args.seed + step)  # the same dropout draws where the shapes agree
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            loss.backward()
            opt.step()
            if model is fast:
                loss_fast = loss.item()
        if step < 3 or step % 10 == 0 or step == len(batches) - 1:
            diff = max((a - b).abs().max().item() for a, b in zip(fast.parameters(), twin.parameters()))
            print(f"batch {step:3d}: loss prismrec {loss_fast:.6f}  reference {loss.item():.6f}  "
                  f"max |parameter difference| {diff:.2e}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    fast.step_in_backward(None)
    print("prismrec  ", metrics(fast, fast.embeddings, ds))
    print("reference ", metrics(twin, ref.embeddings, ds))


if __name__ == "__main__":
    main()
