"""BeFA: a behaviour-driven feature adapter that plugs into any feature-using model.

`BeFA: A General Behavior-driven Feature Adapter for Multimedia Recommendation
<https://arxiv.org/abs/2406.00323>`_ (AAAI 2025; official code ``fqldom/BeFA``).

Usage::

    Recommender("vbpr", plugins=["befa"], befa_expansion_ratio=4)       # Python facade
    prismrec train --data DIR --model vbpr --plugin befa --set befa_dropout=0.3
    cls = prismrec.plugins.befa.wrap(VBPR)  # or wrap("vbpr"): a subclass, built like any model

How it plugs in (through the model contract only, never the host's attribute names): the wrapped
class overrides :meth:`~prismrec.models.base.Model.features` so that every read of a modality's
features returns the adapted feature instead of the raw one. By default (``befa_output="raw"``)
the adapted ``d``-dimensional feature is mapped back to the raw dimension, so the host needs no
change at all; with ``befa_output="embedding"`` the host receives the ``d``-dimensional feature
and :meth:`~prismrec.models.base.Model.feature_dims` reports ``d``, so the host sizes its own
projections for it (cheaper). While the host's ``setup`` runs, ``features`` still returns the
raw features, so kNN item graphs (and PCA bases, ...) are built from raw content as the paper
prescribes, and the host draws the same initial weights as without the plug-in. The behaviour signal is the host's
:meth:`~prismrec.models.base.Model.behaviour_embedding`; a host without one (LD4MRec) gets an
item embedding owned by the adapter.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from prismrec.config import NonNegInt, PosInt, Rate, tunable
from prismrec.models.base import Model
from prismrec.plugins import feature_host, plugin_class, register_plugin
from prismrec.models.layers import xavier_param

Mode = Literal["mask", "project", "residual"]
Output = Literal["raw", "embedding"]
MODES, OUTPUTS = typing.get_args(Mode), typing.get_args(Output)


class BeFAAdapter(nn.Module):
    """Decouple -> filter -> behaviour-driven mask, for one modality.

    .. math::
        p = W_0 f + b_0, \\quad h_1 = \\tanh(\\mathrm{Drop}(\\mathrm{ReLU}(W_1 p + b_1))), \\quad
        h_2 = \\mathrm{Drop}(\\mathrm{ReLU}(W_2 h_1 + b_2)) \\\\
        a = \\sigma(W_3 h_2 + b_3), \\quad \\tilde e = e^{id} \\odot a

    (tanh after dropout is the official code's order.) ``mode="project"`` returns ``p`` instead:
    the adapter's projection without the behaviour mask, an ablation; ``mode="residual"``
    returns ``p + \\tilde e`` (the content projection kept beside the behaviour-masked part; not
    in the paper, in the spirit of a third-party re-implementation's ``adapter_weight``). With ``out_dim`` the
    result is mapped back to the raw feature space, ``W_4 \\tilde e + b_4``, so that the host
    receives features of the dimension it was built for.

    Shapes:
        f [B, d_m]; e^{id} [B, d]; W_1 [d, r·d]; W_2 [r·d, r·d]; W_3 [r·d, d]; W_4 [d, d_m];
        output [B, d] (or [B, out_dim]).
    """

    def __init__(self, in_dim: int, dim: int, ratio: int, dropout: float, mode: str = "mask",
                 out_dim: int | None = None):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.decouple = nn.Linear(dim, ratio * dim)
        self.filter = nn.Linear(ratio * dim, ratio * dim)
        self.mask = nn.Linear(ratio * dim, dim)
        self.back = nn.Linear(dim, out_dim) if out_dim else None
        self.dropout, self.mode = dropout, mode

    def forward(self, f: torch.Tensor, behaviour: torch.Tensor) -> torch.Tensor:
        p = self.proj(f)                                                                   # [B, d]
        if self.mode == "project":
            e = p
        else:
            h = torch.tanh(F.dropout(F.relu(self.decouple(p)), self.dropout, self.training))  # [B, r·d]
            h = F.dropout(F.relu(self.filter(h)), self.dropout, self.training)               # [B, r·d]
            e = behaviour * torch.sigmoid(self.mask(h))                                      # [B, d]
            if self.mode == "residual":
                e = p + e
        return e if self.back is None else self.back(e)                                     # [B, d_m]


# BeFA's config fields, added to the host's Config (ranges checked by prismrec.config.Checked)
FIELDS = [
    ("befa_expansion_ratio", PosInt, tunable(4, 1, 8, choices=(1, 2, 4, 8))),  # r, official `layer_times`
    ("befa_dropout", Rate, tunable(0.3, 0.1, 0.7, choices=(0.1, 0.3, 0.5, 0.7))),  # `dropout_rate`
    ("befa_dim", NonNegInt, dataclasses.field(default=0)),  # adapted feature size; 0 = host's embedding_dim
    ("befa_mode", Mode, dataclasses.field(default="mask")),  # "project": no mask; "residual": p + mask part
    # "raw": map back to the raw feature dimension (works with every host); "embedding": hand the
    # host the d-dim feature and report d from feature_dims() (cheaper; for hosts that size their
    # projections by feature_dims() and derive nothing else from features() in setup)
    ("befa_output", Output, dataclasses.field(default="raw")),
]


class BeFAMixin:
    """What the plug-in adds to its host (mixed in before the host class by :func:`wrap`)."""

    runs_on_cuda = True  # on a GPU wherever its host is: benchmarks/results/gpu-smoke.json

    def setup(self, dataset):
        self._befa_ready = False
        super().setup(dataset)                      # host reads raw features, draws its usual init
        c = self.config
        raw_out = c.befa_output == "raw"
        self.befa = nn.ModuleDict({m: BeFAAdapter(k, self.befa_dim, c.befa_expansion_ratio, c.befa_dropout,
                                                  c.befa_mode, out_dim=k if raw_out else None)
                                   for m, k in self.raw_feature_dims().items()})
        probe = super().behaviour_embedding(torch.zeros(1, dtype=torch.long))
        self.befa_owns_behaviour = probe is None or probe.shape[-1] != self.befa_dim
        if self.befa_owns_behaviour:
            self.befa_item_emb = xavier_param(self.n_items, self.befa_dim)
        self._befa_ready = True

    @property
    def befa_dim(self) -> int:
        return self.config.befa_dim or getattr(self.config, "embedding_dim", 64)

    def raw_feature_dims(self) -> dict[str, int]:
        """Modality -> dimension of the raw (unadapted) features."""
        return Model.feature_dims(self)

    def raw_features(self, modality, items=None):
        """The features as the host would read them without the plug-in."""
        return super().features(modality, items)

    def feature_dims(self):
        if self.config.befa_output == "raw":
            return super().feature_dims()
        return {m: self.befa_dim for m in self.modalities}

    def befa_behaviour(self, items=None):
        """The behaviour embedding gating the adapter ``[len(items), d]``."""
        if self.befa_owns_behaviour:
            return self.befa_item_emb if items is None else self.befa_item_emb[items]
        return super().behaviour_embedding(items)

    def features(self, modality, items=None):
        raw = super().features(modality, items)
        if not getattr(self, "_befa_ready", False):
            return raw
        return self.befa[modality](raw, self.befa_behaviour(items))


class BeFAColdStart:
    """Cold start: unseen items' features pass through the adapters too (the host's ``embed_items``
    reads them through ``new_item_features``)."""

    def new_item_features(self, features):
        """Unseen items: adapted with the mean behaviour embedding standing in for their own."""
        features = super().new_item_features(features)
        mean = self.befa_behaviour().mean(dim=0, keepdim=True)
        return {m: self.befa[m](torch.as_tensor(f, dtype=mean.dtype), mean.expand(len(f), -1))
                for m, f in features.items()}


@register_plugin("befa")
def wrap(model_cls: type[Model] | str) -> type[Model]:
    """Return a subclass of ``model_cls`` whose modality features pass through BeFA adapters.

    Args:
        model_cls: a model class with ``uses_features = True``, or its registered name.

    Returns:
        The wrapped class; its ``Config`` extends the host's with ``befa_expansion_ratio``,
        ``befa_dropout``, ``befa_dim``, ``befa_mode`` and ``befa_output``.
    """
    model_cls = feature_host(model_cls, "befa", "adapts", "befa_host")
    return plugin_class(model_cls, BeFAMixin, BeFAColdStart, suffix="BeFA", marker="befa_host", fields=FIELDS,
                        doc=f"with BeFA adapters on its modality features.\n\n{__doc__}",
                        description="BeFA adapter")
