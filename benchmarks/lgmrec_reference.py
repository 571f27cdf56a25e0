#!/usr/bin/env python3
"""Train prismrec's LGMRec and a plain full-table autograd LGMRec side by side on the same batches.

    python benchmarks/lgmrec_reference.py --data /tmp/data/baby-like            # one epoch
    python benchmarks/lgmrec_reference.py --data /tmp/data/baby-like --batches 5

The reference is LGMRec's forward pass written the way MMRec's code runs it: ``torch.sparse.mm``
on COO graphs, the users' modality features as the mean of their items', the hypergraph
memberships of users from the summed logits of their items, the two contrast terms as sums over
the batch rows against every user / item, the unsquared norms of the batch rows as the
regulariser, and a plain ``torch.optim.Adam``. prismrec's model runs its fast path (one product
for both projections, the CSR products, counted InfoNCE with an analytic backward, fused Adam).

LGMRec draws random numbers in training (Gumbel noise on the memberships, dropout on them), in a
different order in the two implementations. So this run makes both deterministic: dropout is off
(``keep_rate=1``) and ``gumbel_softmax`` is replaced by its noise-free ``softmax(logits / τ)``
for both. Everything else is LGMRec's default configuration. After each batch the two parameter
sets should agree to float rounding, and so should the test metrics of the two epoch-0 models.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import _reference  # (puts src/ on the path)
from prismrec.graphs import binary_csr  # noqa: E402
from prismrec.models.lgmrec import LGMRecConfig  # noqa: E402


def noise_free_gumbel(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
    return torch.softmax(logits / tau, dim=dim)


class FullTableLGMRec:
    """LGMRec's equations over full tables, reading ``model``'s parameters."""

    def __init__(self, model, train: sp.csr_matrix):
        self.m, self.n_users = model, model.n_users
        self.adj = _reference.coo(model.adj.scipy)
        r = binary_csr(train)
        self.r = _reference.coo(r)
        self.inv_degree = torch.from_numpy(1.0 / (np.asarray(r.sum(1)).ravel() + 1e-7)).float()[:, None]

    def forward(self):
        m, cfg, n = self.m, self.m.config, self.n_users
        layer, layers = m.embedding, [m.embedding]
        for _ in range(cfg.num_ui_layers):
            layer = torch.sparse.mm(self.adj, layer)
            layers.append(layer)
        cge = torch.stack(layers, 1).mean(1)
        local, hyper = cge, []
        for k in m.modalities:
            x = m.features(k)
            item_feats, item_logits = x @ m.trans[k], x @ m.hyper[k]
            h_items = m.drop(F.gumbel_softmax(item_logits, tau=cfg.temperature, dim=1))
            h_users = m.drop(F.gumbel_softmax(torch.sparse.mm(self.r, item_logits), tau=cfg.temperature, dim=1))
            view = torch.cat([torch.sparse.mm(self.r, item_feats) * self.inv_degree, item_feats])
            for _ in range(cfg.num_mm_layers):
                view = torch.sparse.mm(self.adj, view)
            local = local + F.normalize(view, dim=1)
            g_items = cge[n:]
            for _ in range(cfg.num_hyper_layers):
                edges = h_items.T @ g_items
                g_items, g_users = h_items @ edges, h_users @ edges
            hyper.append(torch.cat([g_users, g_items]))
        return local + cfg.alpha * F.normalize(sum(hyper), dim=1), hyper

    def loss(self, batch):
        cfg, n = self.m.config, self.n_users
        e, hyper = self.forward()
        u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
        bpr = -F.logsigmoid((u * p).sum(1) - (u * q).sum(1)).mean()
        cl = 0.0
        for k, a in enumerate(hyper):
            for b in hyper[k + 1:]:
                cl = cl + contrast_all(a[:n][batch.users], b[:n][batch.users], b[:n], cfg.temperature)
                cl = cl + contrast_all(a[n:][batch.pos_items], b[n:][batch.pos_items], b[n:], cfg.temperature)
        reg = (u.norm() + p.norm() + q.norm()) / len(q)
        return bpr + cfg.cl_weight * cl + cfg.reg_weight * reg

    def embeddings(self):
        e, _ = self.forward()
        return e[: self.n_users], e[self.n_users:]


def contrast_all(anchor, positive, every, temperature):
    a, p, every = F.normalize(anchor, dim=1), F.normalize(positive, dim=1), F.normalize(every, dim=1)
    return (torch.logsumexp(a @ every.T / temperature, dim=1) - (a * p).sum(1) / temperature).sum()


def main() -> None:
    args = _reference.arguments(__doc__.split("\n\n")[0])
    F.gumbel_softmax = noise_free_gumbel  # both implementations call it through torch.nn.functional
    ds, fast, twin, batches = _reference.twins("lgmrec", args, LGMRecConfig(keep_rate=1.0))
    _reference.train_side_by_side(ds, fast, twin, FullTableLGMRec(twin, ds.train), batches, args.seed)


if __name__ == "__main__":
    main()
