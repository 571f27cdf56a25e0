"""MMGCN (Wei et al., ACM MM 2019), with MMRec's semantics."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, PosInt, tunable
from prismrec.graphs import SparseMatrix, mean_aggregators
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import Precision, bpr_loss, dot, resolve_precision, xavier_normal_param


@dataclass(frozen=True)
class MMGCNConfig(ModelConfig):
    embedding_dim: PosInt = 64
    num_layers: PosInt = 3       # MMRec's GCN hard-codes three layers (its yaml's n_layers: 2 is never read)
    latent_dim: PosInt = 256     # MLP width for wide modalities (MMRec: image 4096 -> 256)
    raw_max_dim: PosInt = 512    # modalities up to this width enter raw (MMRec: text 384 has no MLP)
    reg_weight: NonNegFloat = tunable(1e-4, 1e-5, 1e-1, log=True)  # MMRec grid {0, 1e-5 .. 1e-1}
    learn_embeddings: bool = False  # MMRec keeps ID/user-preference tensors outside the optimiser
    feature_precision: Precision = "auto"  # wide first-layer products in bfloat16 ("auto": where native)


def _mm(x: torch.Tensor, w: torch.Tensor, bf16: bool) -> torch.Tensor:
    """``x @ w``, computed in bfloat16 (fp32 accumulation) when ``bf16``; fp32 result."""
    if not bf16:
        return x @ w
    return (x.to(torch.bfloat16) @ w.to(torch.bfloat16)).float()


class ModalityGCN(nn.Module):
    """One modality's graph network: the features of items and a free preference of users,
    ``L`` layers of mean aggregation over the user-item graph with the ID embedding injected.

    .. math::
        h = \\sigma(\\bar A x W_c), \\quad \\hat x = \\sigma(x W_l + b_l) + e^{id}, \\quad
        x \\leftarrow \\sigma(W_g [h ; \\hat x] + b_g)

    (σ = LeakyReLU; ``Ā = D^{-1}A``; MMRec's ``concate='False'`` string is truthy, so the
    combination concatenates ``h`` and ``x̂``.) ``ĀxW`` is evaluated per bipartite block on the
    smaller side: users get ``Ā_ui (x_I W)``, items ``(Ā_iu x_U) W``, so the product runs over
    ``2·n_items`` rows instead of ``n_users + n_items``.

    Shapes:
        features [n_items, d_m] -> users [n_users, d], items [n_items, d].
    """

    def __init__(self, n_users: int, dim_feat: int, cfg: MMGCNConfig):
        super().__init__()
        d = cfg.embedding_dim
        dim_in = cfg.latent_dim if dim_feat > cfg.raw_max_dim else dim_feat
        self.mlp = nn.Linear(dim_feat, dim_in) if dim_in != dim_feat else None
        pref = nn.init.xavier_normal_(torch.empty(n_users, dim_in))
        if cfg.learn_embeddings:
            self.preference = nn.Parameter(pref)
        else:
            self.register_buffer("preference", pref)
        dims = [dim_in] + [d] * (cfg.num_layers - 1)
        self.conv = nn.ParameterList([xavier_normal_param(k, k) for k in dims])
        self.lin = nn.ModuleList([nn.Linear(k, d) for k in dims])
        self.comb = nn.ModuleList([nn.Linear(k + d, d) for k in dims])
        for lin in self.lin:
            nn.init.xavier_normal_(lin.weight)
        nn.init.xavier_normal_(self.comb[0].weight)  # MMRec re-initialises only the first g_layer
        # narrow products gain nothing from bf16
        self.bf16 = resolve_precision(cfg.feature_precision) == torch.bfloat16 and dim_in > 64
        self._const: dict | None = None

    def inputs(self, ui: SparseMatrix, iu: SparseMatrix, features: torch.Tensor):
        """Layer-0 ``(x_u, x_i, agg_u, agg_i)`` with ``agg_u = Ā_ui x_I`` (raw modalities only,
        else None) and ``agg_i = Ā_iu x_U``. Parts that cannot change between batches (fixed
        features, fixed preferences) are computed, and cast to bf16, once."""
        if self._const is None or self._const["src"] is not features:
            self._const = {"src": features}
        c = self._const
        if "x_u" in c and not self.preference.requires_grad:
            x_u, agg_i = c["x_u"], c["agg_i"]
        else:
            x_u = F.normalize(self.preference, dim=1)
            agg_i = self._cast(iu @ x_u)
            if not self.preference.requires_grad:
                c.update(x_u=x_u, agg_i=agg_i)
        fixed = not features.requires_grad
        if self.mlp is not None:
            if fixed and "f" not in c:
                c["f"] = self._cast(features)
            f = c["f"] if fixed else features
            x_i = F.normalize(_mm(f, self.mlp.weight.T, self.bf16) + self.mlp.bias, dim=1)
            return x_u, x_i, None, agg_i
        if "x_i" in c and fixed:
            return x_u, c["x_i"], c["agg_u"], agg_i
        x_i = F.normalize(features, dim=1)
        agg_u = self._cast(ui @ x_i)
        if fixed:
            c.update(x_i=x_i, agg_u=agg_u)
        return x_u, x_i, agg_u, agg_i

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.bfloat16) if self.bf16 else x

    def forward(self, ui: SparseMatrix, iu: SparseMatrix, features: torch.Tensor, id_u: torch.Tensor,
                id_i: torch.Tensor, rows_u: torch.Tensor | None = None, rows_i: torch.Tensor | None = None):
        """Final ``(users, items)``; with ``rows_u``/``rows_i`` only those rows of the last layer."""
        x_u, x_i, agg_u, agg_i = self.inputs(ui, iu, features)
        last = len(self.conv) - 1
        for layer, (w, lin, comb) in enumerate(zip(self.conv, self.lin, self.comb)):
            bf = self.bf16 and layer == 0
            if layer > 0:
                agg_u, agg_i = None, iu @ x_u
            if agg_u is not None:                               # raw input: (Ā_ui x_I) W
                h_u = F.leaky_relu(_mm(agg_u, w, bf))
            else:                                               # users: Ā_ui (x_I W), I rows
                h_u = F.leaky_relu(ui @ _mm(x_i, w, bf))
            h_i = F.leaky_relu(_mm(agg_i, w, bf))               # items: (Ā_iu x_U) W, I rows
            if layer == last and rows_u is not None:
                h_u, h_i, x_u, x_i = h_u[rows_u], h_i[rows_i], x_u[rows_u], x_i[rows_i]
                id_u, id_i = id_u[rows_u], id_i[rows_i]
            x_u = self._combine(h_u, x_u, id_u, lin, comb)
            x_i = self._combine(h_i, x_i, id_i, lin, comb)
        return x_u, x_i

    @staticmethod
    def _combine(h, x, id_emb, lin, comb):
        x_hat = F.leaky_relu(lin(x)) + id_emb
        k = h.shape[1]
        return F.leaky_relu(F.linear(h, comb.weight[:, :k], comb.bias) + x_hat @ comb.weight[:, k:].T)


@register("mmgcn")
class MMGCN(Model):
    """A graph convolution network per modality over the user-item graph, averaged over modalities.

    `MMGCN: Multi-modal Graph Convolution Network for Personalized Recommendation of Micro-video
    <https://arxiv.org/abs/1908.10195>`_, as re-implemented in MMRec (``models/mmgcn.py``):

    .. math::
        e = \\frac{1}{M} \\sum_{m=1}^{M} \\mathrm{GCN}_m(f^{(m)}), \\quad \\hat y_{ui} = e_u^\\top e_i

    MMRec details kept: three layers; modalities wider than ``raw_max_dim`` pass an MLP to
    ``latent_dim`` first (image), narrower ones enter raw (text); rows of ``[preference; items]``
    are L2-normalised; the ID embedding and the user preferences are fixed random tensors
    (MMRec creates them outside the module's parameters, so they never train; set
    ``learn_embeddings=True`` for the paper's free embeddings); loss BPR + ``reg_weight`` ·
    mean squares of the batch's ID embeddings and the first modality's preferences (a constant,
    hence skipped, while those are fixed).

    Speed (same function as MMRec's): each bipartite block multiplies by ``W`` on its item side,
    so products run over ``2·n_items`` rows instead of ``n_users + n_items``; inputs that cannot
    change (fixed preferences, raw features and their aggregates) are computed once; the last
    layer runs only on the batch's rows; the wide first-layer products run in bfloat16 (fp32
    accumulation) where the CPU multiplies it natively (``feature_precision='float32'`` for fp32;
    the 3-epoch baby-like accuracy was measured with bf16).

    Shapes:
        features [n_items, d_m]; ID embedding [n_users + n_items, d]; output e [n_users + n_items, d].
    """

    description = "MMGCN: one GCN per modality on the user-item graph, ID embedding at every layer"
    Config = MMGCNConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True

    def setup(self, dataset):
        cfg = self.config
        self.ui, self.iu = mean_aggregators(dataset.train)  # users <- items, items <- users (mean)
        self.gcn = nn.ModuleDict({m: ModalityGCN(self.n_users, d, cfg) for m, d in self.feature_dims().items()})
        emb = nn.init.xavier_normal_(torch.empty(self.n_users + self.n_items, cfg.embedding_dim))
        if cfg.learn_embeddings:
            self.id_emb = nn.Parameter(emb)
        else:
            self.register_buffer("id_emb", emb)

    def forward(self, rows_u: torch.Tensor | None = None, rows_i: torch.Tensor | None = None):
        """``(users, items)`` representations, mean over modalities (only ``rows_*`` when given)."""
        id_u, id_i = self.id_emb[: self.n_users], self.id_emb[self.n_users:]
        outs = [self.gcn[m](self.ui, self.iu, self.features(m), id_u, id_i, rows_u, rows_i)
                for m in self.modalities]
        return (sum(o[0] for o in outs) / len(outs), sum(o[1] for o in outs) / len(outs))

    def embeddings(self):
        return self.forward()

    def loss(self, batch):
        b = len(batch.users)
        users, items = self.forward(batch.users, torch.cat([batch.pos_items, batch.neg_items]))
        loss = bpr_loss(dot(users, items[:b]), dot(users, items[b:]))
        if not self.config.learn_embeddings:  # MMRec's regulariser reads only fixed tensors: no gradient
            return loss
        ids_u = self.id_emb[batch.users.repeat_interleave(2)]
        ids_i = self.id_emb[torch.stack([batch.pos_items, batch.neg_items], 1).reshape(-1) + self.n_users]
        reg = (ids_u ** 2 + ids_i ** 2).mean() + (self.gcn[self.modalities[0]].preference ** 2).mean()
        return loss + self.config.reg_weight * reg
