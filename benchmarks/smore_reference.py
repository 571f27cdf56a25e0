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

import torch
import torch.nn.functional as F

import _reference  # (puts src/ on the path)
from prismrec.models.smore import SMOREConfig  # noqa: E402


class FullTableSMORE:
    """SMORE's equations over full tables (no batch-row shortcuts), reading ``model``'s parameters."""

    def __init__(self, model):
        self.m, self.n_users, self.d = model, model.n_users, model.config.embedding_dim
        self.adj, self.user_item = _reference.coo(model.adj), _reference.coo(model.user_item)
        self.graphs = {k: _reference.coo(g) for k, g in model.item_graphs.items()}
        self.graphs["fusion"] = _reference.coo(model.fusion_graph)

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


def main() -> None:
    args = _reference.arguments(__doc__.split("\n\n")[0], lambda ap: ap.add_argument(
        "--dropout", type=float, default=0.0,
        help="SMORE's dropout (default 0: with dropout the two runs draw different masks)"))
    ds, fast, twin, batches = _reference.twins("smore", args, SMOREConfig(dropout=args.dropout))
    _reference.train_side_by_side(ds, fast, twin, FullTableSMORE(twin), batches, args.seed)


if __name__ == "__main__":
    main()
