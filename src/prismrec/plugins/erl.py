"""ERL: Euler-representation modality rebalancing for feature-fusing models (ERL-MR-inspired).

`ERL-MR: Harnessing the Power of Euler Feature Representations for Balanced Multi-modal Learning
<https://doi.org/10.1145/3664647.3681215>`_ (ACM MM 2024; classification, no public code). Only
the abstract is available; this plug-in is **our** recommendation design after it
(``specs/erlmr.md`` §3-§5), so results are labelled "ERL-MR-inspired".

Usage::

    Recommender("vbpr", plugins=["erl"], erl_lambda_uni=0.1)
    prismrec train --data DIR --model mmgcn --plugin erl --set erl_alpha=0.5
    rec.model.modality_signal()   # per-epoch, per-modality training signal

How it plugs in (through the contract only): :meth:`features` returns each modality's features
refined by the Euler module, :meth:`loss` adds the multimodal-consistency terms. Per item and
modality ``m`` (raw feature ``f_m``):

.. math::
    r_m = \\mathrm{softplus}(W^r_m f_m),\\ \\theta_m = W^\\theta_m f_m,\\ c_m = r_m e^{i\\theta_m}, \\quad
    c = \\Big(\\prod_m r_m\\Big)^{1/M} e^{i \\sum_m \\theta_m}, \\quad
    \\tilde f_m = f_m + W^o_m [\\mathrm{Re}(c_m + \\alpha c) ; \\mathrm{Im}(c_m + \\alpha c)]

(the cross-modal product adds phases and takes the geometric mean of amplitudes so it neither
explodes nor vanishes; ``W^o`` starts at zero, so the wrapped model starts as the host). Loss:

.. math::
    L = L_{host} + \\lambda_{phase} \\frac{1}{|B|} \\sum_i \\sum_{m<m'}
        \\overline{1 - \\cos(\\theta_{im} - \\theta_{im'})}
        + \\lambda_{uni} \\sum_m \\mathrm{BPR}(q_u^\\top P_m c_{i^+ m}, q_u^\\top P_m c_{i^- m})

with the plug-in's own user vectors ``q_u`` and unimodal heads ``P_m`` (each modality must rank
alone, so a dominant modality cannot starve the others). :meth:`modality_signal` reports, per
epoch and modality, the gradient norm of the host loss w.r.t. the modality's features, its share,
and each unimodal head's BPR loss and pairwise accuracy.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegFloat, NonNegInt, tunable
from prismrec.errors import PrismrecError
from prismrec.models.base import Model
from prismrec.models.layers import bpr_loss, xavier_param
from prismrec.plugins import feature_host, plugin_class, register_plugin

PhaseLoss = Literal["periodic", "cosine"]
PHASE_LOSSES = typing.get_args(PhaseLoss)


class EulerModule(nn.Module):
    """Amplitude/phase encoders, the cross-modal complex product and the residual maps back to
    each modality's raw space. ``{m: [B, d_m]} -> codes {m: (re, im, θ, r)}, refined {m: [B, d_m]}``."""

    def __init__(self, dims: dict[str, int], dim: int, alpha: float):
        super().__init__()
        self.enc = nn.ModuleDict({m: nn.Linear(k, 2 * dim) for m, k in dims.items()})
        # no bias: a [B, d_m] bias pass costs as much as the product on 4,096-wide features
        self.out = nn.ModuleDict({m: nn.Linear(2 * dim, k, bias=False) for m, k in dims.items()})
        for lin in self.out.values():
            nn.init.zeros_(lin.weight)
        self.dim, self.alpha = dim, alpha

    def codes(self, feats: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, ...]]:
        """Per modality ``(Re c_m, Im c_m, θ_m, r_m)``, each ``[B, d]``."""
        out = {}
        for m, f in feats.items():
            pre = self.enc[m](f)                                              # [B, 2d]
            r, theta = F.softplus(pre[:, : self.dim]), pre[:, self.dim:]      # amplitude, phase [B, d]
            out[m] = (r * torch.cos(theta), r * torch.sin(theta), theta, r)
        return out

    def refine(self, feats, codes) -> dict[str, torch.Tensor]:
        mods = list(codes)
        log_r = sum(torch.log(codes[m][3] + 1e-12) for m in mods) / len(mods)
        theta = sum(codes[m][2] for m in mods)
        r = log_r.exp()
        fre, fim = r * torch.cos(theta), r * torch.sin(theta)                 # cross-modal product c
        return {m: torch.addmm(feats[m], torch.cat([codes[m][0] + self.alpha * fre, codes[m][1] + self.alpha * fim],
                                                   dim=1), self.out[m].weight.T)
                for m in mods}


# ERL's config fields, added to the host's Config (ranges checked by prismrec.config.Checked)
FIELDS = [
    ("erl_dim", NonNegInt, dataclasses.field(default=0)),              # complex dimension; 0 = embedding_dim
    ("erl_alpha", float, tunable(0.5, 0.0, 1.0)),                      # weight of the cross-modal product
    ("erl_lambda_phase", NonNegFloat, tunable(0.1, 0.01, 1.0, log=True)),
    ("erl_lambda_uni", NonNegFloat, tunable(0.1, 0.01, 1.0, log=True)),
    ("erl_phase_loss", PhaseLoss, dataclasses.field(default="periodic")),  # 1 - cos(Δθ); "cosine": cos(θ, θ')
]


class ERLMixin:
    """What the plug-in adds to its host (mixed in before the host class by :func:`wrap`)."""

    runs_on_cuda = True  # on a GPU wherever its host is: benchmarks/results/gpu-smoke.json

    def setup(self, dataset):
        self._erl_ready = False
        super().setup(dataset)                      # host sees raw features and draws its usual init
        c = self.config
        if len(self.modalities) < 2:
            raise PrismrecError(f"plug-in 'erl' balances modalities against each other; dataset "
                                f"'{dataset.name}' has only {self.modalities}")
        d = c.erl_dim or getattr(c, "embedding_dim", 64)
        self.erl = EulerModule(Model.feature_dims(self), d, c.erl_alpha)
        self.erl_user = xavier_param(self.n_users, d)
        self.erl_heads = nn.ModuleDict({m: nn.Linear(2 * d, d, bias=False) for m in self.modalities})
        self._erl_cache: dict | None = None
        self._erl_history: list[dict] = []
        self._erl_epoch = self._new_epoch(0)
        self._erl_ready = True

    # -- features -----------------------------------------------------------------------
    def _erl_pass(self, items):
        """Codes and refined features of every modality for ``items`` (cached per loss call)."""
        key = None if items is None else id(items)
        if self._erl_cache is not None and key in self._erl_cache:
            return self._erl_cache[key]
        raw = {m: super(ERLMixin, self).features(m, items) for m in self.modalities}
        codes = self.erl.codes(raw)
        out = (codes, self.erl.refine(raw, codes))
        if self._erl_cache is not None:
            self._erl_cache[key] = out
            self._erl_keep.append(items)            # keep ids alive so id() keys stay unique
        return out

    def features(self, modality, items=None):
        if not getattr(self, "_erl_ready", False):
            return super().features(modality, items)
        f = self._erl_pass(items)[1][modality]
        if self.training and self._erl_cache is not None and f.requires_grad:
            f.register_hook(self._grad_hook(modality))
        return f

    def prepare_scoring(self):
        self._erl_cache, self._erl_keep = {}, []
        try:
            super().prepare_scoring()
        finally:
            self._erl_cache = None

    # -- loss ---------------------------------------------------------------------------
    def loss(self, batch):
        self._erl_cache, self._erl_keep = {}, []
        try:
            host = super().loss(batch)
            codes = self._batch_codes(torch.cat([batch.pos_items, batch.neg_items]))
        finally:
            self._erl_cache = None
        return host + self._erl_losses(batch, codes)

    def _batch_codes(self, items):
        """Codes of ``items``, taken from what the host already encoded when it covers them."""
        for key, (codes, _) in self._erl_cache.items():
            if key is None:
                idx = items
            else:
                src = next(t for t in self._erl_keep if id(t) == key)
                pos = torch.full((self.n_items,), -1, dtype=torch.long, device=src.device)
                pos[src] = torch.arange(len(src), device=src.device)
                idx = pos[items]
                if (idx < 0).any():
                    continue
            return {m: tuple(t[idx] for t in c) for m, c in codes.items()}
        raw = {m: super(ERLMixin, self).features(m, items) for m in self.modalities}
        return self.erl.codes(raw)

    def _erl_losses(self, batch, codes):
        c, b, e = self.config, len(batch.users), self._erl_epoch
        mods = list(codes)
        phase = 0.0
        for j, m in enumerate(mods):
            for m2 in mods[j + 1:]:
                t1, t2 = codes[m][2][:b], codes[m2][2][:b]
                if c.erl_phase_loss == "periodic":
                    phase = phase + (1 - torch.cos(t1 - t2)).mean()
                else:
                    phase = phase + (1 - F.cosine_similarity(t1, t2, dim=1)).mean()
        q = self.erl_user[batch.users]
        uni = 0.0
        for m in mods:
            v = self.erl_heads[m](torch.cat([codes[m][0], codes[m][1]], dim=1))   # [2B, d]
            pos, neg = (q * v[:b]).sum(1), (q * v[b:]).sum(1)
            lm = bpr_loss(pos, neg)
            uni = uni + lm
            e["uni_loss"][m] += lm.item()
            e["uni_acc"][m] += (pos > neg).float().mean().item()
        e["batches"] += 1
        return c.erl_lambda_phase * phase + c.erl_lambda_uni * uni

    # -- per-modality training signal -----------------------------------------------------
    def _new_epoch(self, epoch):
        z = {m: 0.0 for m in self.modalities}
        return {"epoch": epoch, "batches": 0, "grad_sq": dict(z), "uni_loss": dict(z), "uni_acc": dict(z)}

    def _grad_hook(self, modality):
        def hook(g):
            self._erl_epoch["grad_sq"][modality] += float(torch.linalg.vector_norm(g.detach())) ** 2
        return hook

    def _close_epoch(self):
        e = self._erl_epoch
        n = e["batches"]
        if n == 0:
            return None
        norms = {m: math.sqrt(v / n) for m, v in e["grad_sq"].items()}
        total = sum(norms.values()) or 1.0
        return {"epoch": e["epoch"], "grad_norm": norms, "grad_share": {m: v / total for m, v in norms.items()},
                "unimodal_loss": {m: v / n for m, v in e["uni_loss"].items()},
                "unimodal_accuracy": {m: v / n for m, v in e["uni_acc"].items()}}

    def on_epoch_start(self, epoch):
        rec = self._close_epoch()
        if rec is not None:
            self._erl_history.append(rec)
        self._erl_epoch = self._new_epoch(epoch)
        super().on_epoch_start(epoch)

    def modality_signal(self) -> dict:
        """Per-epoch, per-modality training signal (the current epoch included).

        Returns:
            ``{"epochs": [...], "grad_norm": {m: [...]}, "grad_share": {m: [...]},
            "unimodal_loss": {m: [...]}, "unimodal_accuracy": {m: [...]}}``: RMS over
            batches of ``‖∂L_host/∂f̃_m‖``, its share across modalities, and each unimodal
            head's mean BPR loss and fraction of correctly ordered (pos, neg) pairs.
        """
        rows = list(self._erl_history)
        last = self._close_epoch()
        if last is not None:
            rows.append(last)
        out = {"epochs": [r["epoch"] for r in rows]}
        for k in ("grad_norm", "grad_share", "unimodal_loss", "unimodal_accuracy"):
            out[k] = {m: [r[k][m] for r in rows] for m in self.modalities}
        return out

    def extra_state(self):
        parent = getattr(super(), "extra_state", None)
        return {"erl_history": self._erl_history, "erl_epoch": self._erl_epoch,
                "host": parent() if parent else None}

    def load_extra_state(self, state):
        self._erl_history, self._erl_epoch = state["erl_history"], state["erl_epoch"]
        parent = getattr(super(), "load_extra_state", None)
        if parent and state.get("host") is not None:
            parent(state["host"])


class ERLColdStart:
    """Cold start: unseen items' features are refined too (the host's ``embed_items`` reads them
    through ``new_item_features``)."""

    def new_item_features(self, features):
        """Unseen items: their features are refined by the Euler module."""
        raw = {m: torch.as_tensor(f, dtype=torch.float32) for m, f in super().new_item_features(features).items()}
        with torch.no_grad():
            return self.erl.refine(raw, self.erl.codes(raw))


@register_plugin("erl")
def wrap(model_cls: type[Model] | str) -> type[Model]:
    """Return a subclass of ``model_cls`` with Euler-refined features and the ERL losses.

    Args:
        model_cls: a feature-using model class (or its registered name) with 2+ modalities.

    Returns:
        The wrapped class; its ``Config`` adds ``erl_dim``, ``erl_alpha``, ``erl_lambda_phase``,
        ``erl_lambda_uni`` and ``erl_phase_loss``; instances have :meth:`modality_signal`.
    """
    model_cls = feature_host(model_cls, "erl", "rebalances", "erl_host")
    return plugin_class(model_cls, ERLMixin, ERLColdStart, suffix="ERL", marker="erl_host", fields=FIELDS,
                        doc=f"with ERL (Euler modality rebalancing).\n\n{__doc__}",
                        description="ERL rebalancing")
