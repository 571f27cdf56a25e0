"""SLMRec (Tao et al., IEEE TMM 2022), as in MMRec's implementation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Rate, tunable
from prismrec.graphs import SparseMatrix, bipartite_adjacency, propagate
from prismrec.models.base import Model, ModelConfig, register
from prismrec.models.layers import (
    WIDE,
    BatchRows,
    Precision,
    batch_rows,
    info_nce,
    project_fixed,
    resolve_precision,
    user_item_contrast,
    xavier_param,
)

SSLTask = Literal["fac", "fd", "fm", "fd+fm"]


@dataclass(frozen=True)
class SLMRecConfig(ModelConfig):
    # defaults: MMRec's SLMRec.yaml, the first value of each grid (ssl_temp 0.1, ssl_alpha 0.01); its
    # learning_rate grid's first value (1e-4) and its weight_decay (1e-4) are SLMRec.train_defaults
    embedding_dim: PosInt = 64           # recdim
    num_layers: NonNegInt = 3            # layer_num: LightGCN layers of every view
    temperature: PosFloat = 0.2          # temp: of the main (user, positive item) InfoNCE
    ssl_task: SSLTask = "fac"            # "fac" fine and coarse spaces, "fd" feature dropout, "fm" masking
    cl_weight: NonNegFloat = tunable(0.01, 0.01, 1.0, log=True)     # ssl_alpha, grid {0.01, 0.05, 0.1, 0.5, 1}
    cl_temperature: PosFloat = tunable(0.1, 0.1, 1.0, log=True)     # ssl_temp, grid {0.1, 0.2, 0.5, 1}
    dropout: Rate = 0.3                  # dropout_rate: after every propagation of the "fd" / "fd+fm" views
    fusion: Literal["concat", "mean"] = "concat"  # mm_fusion_mode: how the views meet before W_U / W_I
    # "fac": modalities contrasted in the coarse space (embedding_dim // 2 wide, after the fine ones)
    coarse_modalities: tuple[str, ...] = ("text", "textual")
    feature_precision: Precision = "auto"  # of the wide feature projections (see MGCNConfig)

    def validate(self):
        if self.ssl_task == "fac" and self.embedding_dim < 2:
            raise ValueError(f"embedding_dim must be >= 2 with ssl_task 'fac' (its coarse space is "
                             f"embedding_dim // 2 wide), got {self.embedding_dim}")


def _linear(n_in: int, n_out: int) -> nn.Linear:
    """``nn.Linear`` with a Xavier-uniform weight (and torch's default bias), as MMRec initialises them."""
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    return layer


def _counted_cross_entropy(logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``cross_entropy(L, arange(B))`` of a batch whose row ``j`` and column ``j`` stand for ``counts[j]``
    identical rows and columns: the same value from the ``[R, R]`` logits of the distinct rows."""
    lse = torch.logsumexp(logits + counts.log(), dim=1)                             # [R]
    return (counts * (lse - logits.diagonal())).sum() / counts.sum()


@register("slmrec")
class SLMRec(Model):
    """One LightGCN view per item input (ID and each modality) on the user-item graph, fused by a
    linear layer, trained by InfoNCE plus a self-supervised contrast between views.

    `Self-supervised Learning for Multimedia Recommendation <https://doi.org/10.1109/TMM.2022.3187556>`_
    (code: github.com/zltao/SLMRec)

    .. math::
        x^{(0)} = E_I, \\quad x^{(m)} = W_m \\frac{f^{(m)}}{\\lVert f^{(m)} \\rVert} + b_m, \\quad
        [h^{(v)}_U; h^{(v)}_I] = \\mathrm{mean}_{l \\le L}\\, \\hat A^l [E_U; x^{(v)}]

        e_u = W_U \\big[h^{(0)}_u \\Vert h^{(1)}_u \\Vert \\cdots \\Vert h^{(M)}_u\\big] + b_U, \\quad
        e_i = W_I \\big[h^{(0)}_i \\Vert \\cdots \\Vert h^{(M)}_i\\big] + b_I, \\quad
        \\mathcal L = \\mathrm{InfoNCE}_\\tau(e_u, e_{i^+}) + \\alpha\\, \\mathcal L_{ssl}

        \\text{fac:}\\ z_0 = h^{(0)}_{i^+}, \\ z_k = g_k(z_{k-1}), \\
        \\mathcal L_{ssl} = \\sum_k \\mathrm{CE}\\big(z_k\\, p_k(h^{(m_k)}_{i^+})^\\top / \\tau'\\big)

        \\text{fd, fm:}\\ \\mathcal L_{ssl} = \\mathrm{InfoNCE}_{\\tau'}(e'_u, e''_u)
            + \\mathrm{InfoNCE}_{\\tau'}(e'_{i^+}, e''_{i^+})

    InfoNCE takes cosines and in-batch negatives (a repeated user or item of the batch stays a
    negative); the sampler's negatives are not used. ``fac`` climbs a hierarchy of spaces: level
    ``k`` maps the ID view on by ``g_k`` and meets modality ``m_k`` projected by ``p_k``, with raw dot
    products (no cosines) as logits; fine modalities come first (``d`` wide, dataset order), then
    ``coarse_modalities`` (``d/2``), the original's visual → acoustic → textual order. ``e', e''``
    are two perturbed propagations: ``fd`` drops out each layer's output (not layer 0) before it
    propagates on, ``fm`` zeroes the item inputs of one view in each (two distinct views drawn
    uniformly), ``fd+fm`` does both.

    This follows MMRec's code (the SLMRec figures other papers publish come from it), which, like
    the authors' code, trains with InfoNCE and no BPR term. MMRec's ``reg`` grid is read nowhere: the
    only L2 is Adam's weight decay (``train_defaults``). Scores are ``e_u · e_i`` (MMRec applies a
    sigmoid: same ranking). MMRec has image + text only; its audio level keeps the chain's extra
    ``d×d`` map without a loss, left out here (two linear maps compose into one). Its ``fd``/``fm``
    code reads an audio view that it never builds and fails, so those follow the authors' code over
    the dataset's modalities, with torch's RNG for the masked views (MMRec: numpy). ``fusion="mean"``
    takes a ``d×d`` layer (MMRec's keeps the concatenation's width, which does not fit the mean).

    Speed: all views are propagated side by side (one ``[N + I, (M+1)·d]`` product a layer), only
    the batch's rows of the layer mean are formed, ``fac`` takes each distinct positive once (weighted
    by its count: the same value), and the two ``fd``/``fm`` propagations share one product a layer.

    Shapes:
        E_U [n_users, d]; E_I, x^(m) [n_items, d]; f^(m) [n_items, d_m]; W_U, W_I [d, (M+1)·d]
        (``fusion="mean"``: [d, d] on the views' mean); g_k, p_k [d_k, d_{k-1}], [d_k, d].
    """

    description = "SLMRec: ID and modality LightGCN views, fused; InfoNCE + self-supervised FAC/FD/FM contrast"
    Config = SLMRecConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True
    # SLMRec.yaml: learning_rate grid {1e-4, 1e-3, 1e-2, 0.1} (first value), weight_decay 1e-4
    train_defaults: ClassVar[dict] = {"learning_rate": 1e-4, "weight_decay": 1e-4}

    def setup(self, dataset):
        cfg, d = self.config, self.config.embedding_dim
        self.user_emb = xavier_param(self.n_users, d)
        self.item_emb = xavier_param(self.n_items, d)
        self.proj = nn.ModuleDict({m: _linear(dim, d) for m, dim in self.feature_dims().items()})
        self.n_views = len(self.modalities) + 1
        width = d * self.n_views if cfg.fusion == "concat" else d
        self.user_out, self.item_out = _linear(width, d), _linear(width, d)
        self.adj = SparseMatrix(bipartite_adjacency(dataset.train), symmetric=True)
        if cfg.ssl_task == "fac":
            coarse = [m for m in self.modalities if m in cfg.coarse_modalities]
            self.levels = [m for m in self.modalities if m not in coarse] + coarse
            widths = [d // 2 if m in coarse else d for m in self.levels]
            self.chain = nn.ModuleList(_linear(a, b) for a, b in zip([d] + widths[:-1], widths))
            self.heads = nn.ModuleDict({m: _linear(d, w) for m, w in zip(self.levels, widths)})
        low = resolve_precision(cfg.feature_precision) == torch.bfloat16
        self.bf16 = {m: low and dim >= WIDE for m, dim in self.feature_dims().items()}
        self._bf16_cache: dict = {}

    def behaviour_embedding(self, items=None):
        return self.item_emb if items is None else self.item_emb[items]

    def content(self, m: str) -> torch.Tensor:
        """``x^(m) = W_m f/|f| + b_m`` ``[n_items, d]``: the product of the raw rows, then scaled (the
        same values as normalising first, without a normalised copy of the table every batch)."""
        f, lin = self.features(m), self.proj[m]
        inv = f.norm(dim=1, keepdim=True).clamp_min(1e-12).reciprocal()             # [I, 1]
        return torch.addcmul(lin.bias, project_fixed(f, lin.weight, None, self._bf16_cache, m, self.bf16[m]), inv)

    def inputs(self) -> torch.Tensor:
        """Layer 0 of every view side by side: ``[[E_U, ..., E_U]; [E_I, x^(1), ..., x^(M)]]`` ``[N + I, (M+1)·d]``."""
        items = torch.cat([self.item_emb] + [self.content(m) for m in self.modalities], dim=1)
        return torch.cat([self.user_emb.repeat(1, self.n_views), items])

    def fuse(self, h: torch.Tensor, n_users: int) -> torch.Tensor:
        """Views ``[R, (M+1)·d]`` of ``n_users`` user rows, then item rows -> ``e`` ``[R, d]``."""
        if self.config.fusion == "mean":
            h = h.view(len(h), self.n_views, -1).mean(dim=1)
        return torch.cat([self.user_out(h[:n_users]), self.item_out(h[n_users:])])

    def embeddings(self):
        h = propagate(self.adj, self.inputs(), self.config.num_layers)
        e = self.fuse(h, self.n_users)
        return e[: self.n_users], e[self.n_users:]

    def loss(self, batch):
        cfg = self.config
        r = batch_rows(batch._replace(neg_items=batch.pos_items[:0]), self.n_users)  # (user, positive) pairs
        x = self.inputs()
        h = propagate(self.adj, x, cfg.num_layers, rows=r.rows)                     # [U_b + I_b, (M+1)·d]
        e = self.fuse(h, len(r.users))                                              # [U_b + I_b, d]
        loss = info_nce(e[r.user_at], e[r.item_at], cfg.temperature)
        if cfg.cl_weight == 0.0:
            return loss
        ssl = self.fac(h, r) if cfg.ssl_task == "fac" else self.perturbed_contrast(x, r)
        return loss + cfg.cl_weight * ssl

    def fac(self, h: torch.Tensor, r: BatchRows) -> torch.Tensor:
        """Fine-and-coarse contrast over the positives, from the views of the batch's rows ``h``
        ``[U_b + I_b, (M+1)·d]``: each distinct positive once, weighted by its count in the batch."""
        d, tau, n = self.config.embedding_dim, self.config.cl_temperature, len(r.users)
        counts = torch.bincount(r.item_at - n, minlength=len(r.items)).to(h.dtype)   # [I_b]
        views = dict(zip(self.modalities, h[n:, d:].split(d, dim=1)))
        z, loss = h[n:, :d], 0.0
        for g, m in zip(self.chain, self.levels):
            z = g(z)                                                                # [I_b, d_k]
            loss = loss + _counted_cross_entropy((z / tau) @ self.heads[m](views[m]).T, counts)
        return loss

    def perturbed_contrast(self, x: torch.Tensor, r: BatchRows) -> torch.Tensor:
        """InfoNCE between two perturbed propagations ("fd", "fm", "fd+fm") of the batch's users and positives."""
        cfg, width = self.config, x.shape[1]
        first = second = x
        if "fm" in cfg.ssl_task:
            a = torch.randint(self.n_views, ())
            b = (a + 1 + torch.randint(self.n_views - 1, ())) % self.n_views       # another view
            first, second = (self.masked(x, v) for v in (a, b))
        both = torch.cat([first, second], dim=1)                                    # [N + I, 2·(M+1)·d]
        p = cfg.dropout if "fd" in cfg.ssl_task else 0.0
        h = self.dropout_propagate(both, r.rows, p)
        n = len(r.users)
        return user_item_contrast(self.fuse(h[:, :width], n), self.fuse(h[:, width:], n), r, cfg.cl_temperature)

    def masked(self, x: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """``x`` with the item inputs of ``view`` (0: ID, k: modality k) zeroed."""
        keep = (torch.arange(self.n_views) != view).to(x.dtype).repeat_interleave(self.config.embedding_dim)
        return torch.cat([x[: self.n_users], x[self.n_users:] * keep])

    def dropout_propagate(self, x: torch.Tensor, rows: torch.Tensor, p: float) -> torch.Tensor:
        """``mean(X, δ(ÂX), δ(Â δ(ÂX)), ...)[rows]`` with dropout ``δ`` of rate ``p`` on every layer's output."""
        if p == 0.0 or not self.training:
            return propagate(self.adj, x, self.config.num_layers, rows=rows)
        out, h = x[rows], x
        for _ in range(self.config.num_layers):
            h = F.dropout(self.adj @ h, p)
            out = out + h[rows]
        return out / (self.config.num_layers + 1)
