"""MetaMMF light: the CP-decomposed variant of MetaMMF (Liu et al., TOIS 2023)."""
from __future__ import annotations

from dataclasses import dataclass

from prismrec.models.base import register
from prismrec.models.metammf import MetaMMF, MetaMMFConfig


@dataclass(frozen=True)
class MetaMMFCPConfig(MetaMMFConfig):
    cp_rank: int = 16                         # released code: R = 16 in all four layers


@register("metammf-cp")
class MetaMMFCP(MetaMMF):
    """MetaMMF with CP-decomposed meta tensors (rank ``cp_rank``): the light variant.

    .. math::
        T^{(l)}[k, p, q] = \\sum_{r=1}^{R} C_{kr} A_{pr} B_{rq}, \\quad
        x W_i = x M + ((x A) \\odot (s_i C)) B

    ``cp_mode="released"`` reproduces the released code, where the rank sum collapses
    (``T_k = (Σ_r C_{rk}) · AB``).
    """

    description = "MetaMMF light: CP-decomposed meta tensors (rank 16), GraphSAGE backbone"
    Config = MetaMMFCPConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json

