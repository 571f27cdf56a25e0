"""Losses and layers shared by models (written once, never copied into a model file)."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import typing
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def feature_tensor(features: np.ndarray) -> torch.Tensor:
    """A float32 tensor copy of a (read-only) dataset feature array."""
    return torch.from_numpy(np.array(features, dtype=np.float32))


def xavier_param(*shape: int) -> torch.nn.Parameter:
    """A trainable table of ``shape`` drawn Xavier-uniform (MMRec's init of embedding tables)."""
    return torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(*shape)))


def xavier_normal_param(*shape: int) -> torch.nn.Parameter:
    """A trainable table of ``shape`` drawn Xavier-normal."""
    return torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(*shape)))


def rows_of(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` for a 1-d index, via ``index_select``: on CPU 2.5x faster than advanced
    indexing for wide rows, and its backward is an ``index_add_`` rather than a sort-based
    ``index_put_``."""
    if index.dim() == 1 and index.dtype in (torch.int64, torch.int32):
        return torch.index_select(t, 0, index)
    return t[index]


# a config field's type for the precision of wide products (checked by prismrec.config.Checked)
Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS = typing.get_args(Precision)


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 natively (CUDA; a CPU with AVX-512 BF16 or AMX)."""
    return device.startswith("cuda") or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()


def precision_summary() -> str:
    """``"<vector ISA torch uses>, auto precision bf16|fp32"``: what decides how fast a CPU run is and
    what ``"auto"`` resolves to (recorded in ``train.log`` and the benchmarks' result files)."""
    return f"{torch.backends.cpu.get_cpu_capability()}, auto precision {'bf16' if native_bf16() else 'fp32'}"


# the device a model is being built for (TrainConfig.device): what "auto" precisions resolve against
_BUILD_DEVICE: contextvars.ContextVar[str] = contextvars.ContextVar("prismrec_build_device", default="cpu")


@contextlib.contextmanager
def building_for(device: str):
    """Within this block, ``resolve_precision`` (as models call it in ``setup``) decides for ``device``:
    a model built to train on a GPU gets bf16 for ``"auto"`` whatever the host CPU has."""
    token = _BUILD_DEVICE.set(str(device))
    try:
        yield
    finally:
        _BUILD_DEVICE.reset(token)


def resolve_precision(name: str, device: str | None = None) -> torch.dtype:
    """``"float32"``/``"bfloat16"``, or ``"auto"``: bfloat16 where the hardware multiplies it natively
    (``device``; default: the one the model is being built for, see :func:`building_for`).

    An explicit ``"bfloat16"`` on a CPU without native bf16 is honoured (same arithmetic on every
    machine) with a one-time warning: there the products are emulated, several times slower than
    float32 (9x for a [4096, 128] x [128, 19445] product on an AVX2-only CPU)."""
    device = _BUILD_DEVICE.get() if device is None else device
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if name == "bfloat16" and not native_bf16(device):
        _warn_emulated_bf16()
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


@functools.cache
def _warn_emulated_bf16() -> None:
    log.warning("precision 'bfloat16' was asked for, but this CPU (%s) has no native bf16 products: they "
                "run several times slower than float32 here; 'auto' picks float32 on such a machine",
                torch.backends.cpu.get_cpu_capability())


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``-mean log(σ(pos - neg))``, with MMRec's 1e-10 guard inside the log."""
    return -torch.log(1e-10 + torch.sigmoid(pos - neg)).mean()


def log2_bpr_loss(margin: torch.Tensor) -> torch.Tensor:
    """``-mean log₂ σ(margin)``: the base-2 BPR of the DualGNN family's code (DualGNN, DRAGON, MENTOR)."""
    return -F.logsigmoid(margin).mean() / math.log(2.0)


def emb_loss(*embeddings: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: sum of the (Frobenius) norms of the tensors divided by the batch size."""
    return sum(torch.linalg.vector_norm(e) for e in embeddings) / embeddings[-1].shape[0]


def l2_loss(*embeddings: torch.Tensor, denom: float) -> torch.Tensor:
    """``½ Σ ‖e‖²`` over the tensors divided by ``denom`` (MGCN divides by the configured batch size)."""
    return sum(e.pow(2).sum() for e in embeddings) / 2 / denom


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row ``j`` of ``a`` should match row ``j`` of ``b``.

    .. math::
        \\frac{1}{B} \\sum_j -\\log \\frac{\\exp(\\cos(a_j, b_j)/\\tau)}{\\sum_k \\exp(\\cos(a_j, b_k)/\\tau)}

    The same value as ``cross_entropy(norm(a) norm(b)ᵀ / τ, arange(B))``, computed with one
    ``[B, B]`` buffer, two passes over it and an analytic backward (about 2.5x faster on CPU for B = 2048).
    """
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    if temperature < 1 / 30:  # e^{±1/τ} could leave float32's range: the max-shifted form
        return F.cross_entropy(a @ b.T / temperature, torch.arange(len(a), device=a.device))
    return _InfoNCE.apply(a / temperature, b, torch.ones(len(a), dtype=a.dtype, device=a.device), a.dtype)


def info_nce_rows(a: torch.Tensor, b: torch.Tensor, index: torch.Tensor, temperature: float,
                  precision: torch.dtype | None = None) -> torch.Tensor:
    """``info_nce(a[index], b[index], temperature)``, computed once per distinct index.

    A batch repeats rows (a popular item is the positive of many pairs; MGCN's InfoNCE keeps the
    duplicates as negatives): duplicates are weighted by their count instead of multiplied again,
    which gives the same value and gradients with ``(distinct/B)²`` of the work.

    ``precision=torch.bfloat16`` (default: ``a``'s dtype) multiplies bf16 copies in the three ``[B, B]`` products (fp32
    accumulation; exponentials, sums and the loss stay fp32): ~2x faster products on CPUs with
    native bf16, gradients within ~1% of fp32's.
    """
    if temperature < 1 / 30:
        return info_nce(a[index], b[index], temperature)
    rows, counts = torch.unique(index, return_counts=True)
    a, b = F.normalize(a[rows], dim=1), F.normalize(b[rows], dim=1)
    return _InfoNCE.apply(a / temperature, b, counts.to(a.dtype), precision or a.dtype)


class _InfoNCE(torch.autograd.Function):
    """``(1/B) Σ_j c_j (log Σ_k c_k exp(a_j·b_k) - a_j·b_j)`` over distinct rows with counts ``c``
    (``B = Σ c``), for ``|a_j| ≤ 30``, ``|b_k| ≤ 1``.

    ``|a_j·b_k| ≤ 30``, so the exponentials need no max-shift (``e^{±30}`` is safe in float32), and
    the softmax normalisation is applied to the ``[B, d]`` products in the backward pass instead
    of to the ``[B, B]`` matrix: one product and two passes over ``[B, B]``.
    """

    @staticmethod
    def forward(ctx, a, b, c, precision):
        low = precision != a.dtype
        ctx.low = low
        p = (a.to(precision) @ b.to(precision).T).to(a.dtype).exp_() if low else (a @ b.T).exp_()  # [B, B]
        total = p @ c                                     # [B]
        ctx.save_for_backward(a, b, c, p.to(precision) if low else p, total)
        return (c * (total.log() - (a * b).sum(dim=1))).sum() / c.sum()

    @staticmethod
    def backward(ctx, g):
        a, b, c, p, total = ctx.saved_tensors
        w = (c * g / c.sum())[:, None]                    # [B, 1]
        inv = (1.0 / total)[:, None]                      # softmax rows: P = diag(1/total) p diag(c)
        pb, pa = b * c[:, None], a * (c[:, None] * inv)
        if ctx.low:
            pb, pa = (p @ pb.to(p.dtype)).to(a.dtype), (p.T @ pa.to(p.dtype)).to(a.dtype)
        else:
            pb, pa = p @ pb, p.T @ pa
        return w * (pb * inv - b), w * (pa - a), None, None


def dot(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product ``[B, d] x [B, d] -> [B]``."""
    return (u * i).sum(dim=1)


def chunked_rows(fn, n: int, row_floats: int, budget_floats: int = 1 << 21) -> torch.Tensor:
    """``cat([fn(slice) for row slices of range(n)])`` with temporaries of at most ``budget_floats``.

    For gathers of wide feature rows (a 2048-row batch of 4096-d image features is 32 MB):
    blocks of a few MB are recycled by the allocator, while one block above glibc's 32 MB mmap
    threshold is mapped and page-faulted afresh on every call, which costs more than the gather.
    """
    step = max(1, budget_floats // max(row_floats, 1))
    if step >= n:
        return fn(slice(0, n))
    return torch.cat([fn(slice(s, min(s + step, n))) for s in range(0, n, step)])


# ---------------------------------------------------------------------------------------------
# trainable feature tables: a projection whose gradient (or Adam update) stays out of autograd
# ---------------------------------------------------------------------------------------------
WIDE = 256  # feature tables at least this wide get bf16 products (narrower ones gain little)
_BLOCK_ROWS = 128  # 128 x 4096 fp32 rows (2 MB) stay in cache between the product and Adam


def adam_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor) -> tuple[dict, dict] | None:
    """``(param_group, state)`` for applying ``optimizer``'s update to ``param`` outside ``step()``,
    or None where that is not the plain Adam update :func:`adam_rows_` reproduces (another
    optimiser, AMSGrad, maximize, decoupled weight decay, or ``param`` not in it). The state is
    created as ``torch.optim.Adam(fused=True)`` creates it."""
    if type(optimizer) is not torch.optim.Adam:
        return None
    group = next((g for g in optimizer.param_groups if any(p is param for p in g["params"])), None)
    if group is None or group["amsgrad"] or group["maximize"] or group.get("decoupled_weight_decay"):
        return None
    state = optimizer.state[param]
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return group, state


def adam_rows_(group: dict, state: dict, param: torch.Tensor, grad_rows, after_rows=None,
               block_rows: int = 128) -> None:
    """One Adam step on ``param`` (``[n, ...]``), a block of rows at a time, with the gradient of
    each block computed just before its update: ``grad_rows(s, e)`` returns the gradient of rows
    ``s:e``; ``after_rows(s, e)``, when given, runs while the updated rows are still in cache.

    The same update as ``torch.optim.Adam(fused=True).step()`` (its fused kernel, on row slices).
    For a wide table whose gradient is a product (``G W``), this never writes the full gradient
    to memory and reads it back: on MGCN's 7,050 x 4,096 image table it saves the gradient's
    round trip and a separate pass for the table's bf16 copy. torch has no row-blocked optimiser
    step, so this loop is written here.
    """
    beta1, beta2 = group["betas"]
    step = state["step"]
    step.add_(1)
    table, m, v = param.detach(), state["exp_avg"], state["exp_avg_sq"]  # detach: shares the version counter
    for s in range(0, table.shape[0], block_rows):
        e = min(s + block_rows, table.shape[0])
        torch._fused_adam_([table[s:e]], [grad_rows(s, e)], [m[s:e]], [v[s:e]], [], [step],
                           lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                           eps=group["eps"], amsgrad=False, maximize=False)
        if after_rows is not None:
            after_rows(s, e)


def _buffer(buffers: dict, key: str, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    buf = buffers.get(key)
    if buf is None or buf.shape != like.shape or buf.dtype != dtype or buf.device != like.device:
        buf = buffers[key] = torch.empty(like.shape, dtype=dtype, device=like.device)
    return buf


def _version(x: torch.Tensor) -> tuple[int, int]:
    """Identifies ``x``'s current values: its storage and its in-place version counter."""
    return x.data_ptr(), x._version


class _TableProjection(torch.autograd.Function):
    """``X Wᵀ + b`` for a large trainable leaf table ``X`` whose gradient goes into a kept buffer.

    Autograd would allocate a fresh ``[n_items, d_m]`` gradient every batch (115 MB for 4096-d
    image features); page-faulting it in costs as much as the product itself. The gradient is
    written straight into ``X.grad`` (the buffer is reused after ``zero_grad(set_to_none=True)``),
    the same values as autograd's. With ``bf16`` the three products (forward, ``∂W``, ``∂X``) take
    bfloat16 inputs with fp32 accumulation; ``X`` itself and its Adam update stay fp32.

    With an Adam ``optimizer`` (the trainer's, see ``Model.step_in_backward``), ``X``'s update
    is applied in the backward pass instead, 128 rows at a time: each block's gradient ``G W`` is
    formed in cache, Adam updates the block, and the block's bf16 copy for the next forward is
    refreshed; ``X.grad`` stays None. Same update, without writing the 115 MB gradient, reading it
    back and re-reading ``X`` for its copy (about 5 ms of a ~120 ms batch on baby-like).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, buffers: dict, key: str, bf16: bool, optimizer):
        ctx.buffers, ctx.key, ctx.bf16, ctx.optimizer = buffers, key, bf16, optimizer
        if bf16:
            # the copy refreshed by the last in-backward update is used once, if X has not been
            # written since (load_state_dict bumps the version; the fused Adam kernel does not,
            # which is why an update by optimizer.step() never leaves a copy to reuse)
            x16 = buffers.get(key + ".x16")
            if x16 is None or buffers.pop(key + ".fresh", None) != _version(x):
                x16 = _buffer(buffers, key + ".x16", x, torch.bfloat16).copy_(x)
            w16 = weight.to(torch.bfloat16)
            ctx.save_for_backward(x, w16)
            return (x16 @ w16.t()).float().add_(bias)
        ctx.save_for_backward(x, weight)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        buffers, key = ctx.buffers, ctx.key
        gp = g.to(torch.bfloat16) if ctx.bf16 else g  # the products' precision
        grad_w = (gp.t() @ buffers[key + ".x16"]).float() if ctx.bf16 else g.t() @ x
        adam = adam_state(ctx.optimizer, x) if x.grad is None else None
        if adam is not None:
            adam_rows_(*adam, x, *_row_steps(buffers, key, x, gp, weight, ctx.bf16), block_rows=_BLOCK_ROWS)
            if ctx.bf16:
                buffers[key + ".fresh"] = _version(x)  # its bf16 copy was refreshed row by row
        elif ctx.bf16:
            gx = torch.mm(gp, weight, out=_buffer(buffers, key + ".g16", x, torch.bfloat16))
            if x.grad is None:
                x.grad = _buffer(buffers, key, x, x.dtype).copy_(gx)
            else:
                x.grad.add_(gx)
        elif x.grad is None:
            x.grad = torch.mm(g, weight, out=_buffer(buffers, key, x, x.dtype))
        else:
            x.grad.addmm_(g, weight)
        return None, grad_w, g.sum(dim=0), None, None, None, None


def _row_steps(buffers: dict, key: str, x: torch.Tensor, g: torch.Tensor, weight: torch.Tensor, bf16: bool):
    """``(grad_rows, after_rows)`` for :func:`adam_rows_` on the table ``x``: a block's
    gradient ``g[s:e] W`` in a kept block buffer, and (bf16) the refresh of its bf16 copy."""
    block = x[:_BLOCK_ROWS]
    out = _buffer(buffers, key + ".block", block, torch.float32)
    if not bf16:
        return (lambda s, e: torch.mm(g[s:e], weight, out=out[: e - s])), None
    out16 = _buffer(buffers, key + ".block16", block, torch.bfloat16)
    x16, table = buffers[key + ".x16"], x.detach()

    def grad_rows(s, e):
        return out[: e - s].copy_(torch.mm(g[s:e], weight, out=out16[: e - s]))

    def after_rows(s, e):
        x16[s:e].copy_(table[s:e])
    return grad_rows, after_rows


class TrainableTables:
    """Mixin for models whose raw modality feature tables are trained (MMRec's
    ``nn.Embedding.from_pretrained(features, freeze=False)``) and then projected, ``X_m W_mᵀ + b_m``.

    :meth:`init_trainable_tables` turns the feature buffers into parameters; :meth:`project_table`
    is the projection, with the speed machinery of :class:`_TableProjection` (kept gradient
    buffer, bf16 products for wide tables, the table's Adam update inside backward once the
    trainer offers it through ``Model.step_in_backward``). A plug-in that refines ``features()``
    gets a plain ``nn.Linear`` call on its output instead (its own autograd graph).
    """

    def init_trainable_tables(self, precision: str) -> None:
        """Make every ``feat_<m>`` a trainable parameter; ``precision`` is a :data:`PRECISIONS`
        name for the products of tables at least :data:`WIDE` wide."""
        low = resolve_precision(precision) == torch.bfloat16
        for m in self.modalities:
            setattr(self, f"feat_{m}", torch.nn.Parameter(getattr(self, f"feat_{m}")))
        self.bf16 = {m: low and self.feature_dims()[m] >= WIDE for m in self.modalities}
        self._grad_buffers: dict[str, torch.Tensor] = {}
        self._step_optimizer: torch.optim.Optimizer | None = None

    def step_in_backward(self, optimizer):
        # the raw feature tables' Adam update runs inside their projection's backward (row blocks)
        self._step_optimizer = optimizer

    def project_table(self, m: str, linear: torch.nn.Linear) -> torch.Tensor:
        """``linear(features(m))`` for all items ``[n_items, d]``."""
        x = self.features(m)
        if x is getattr(self, f"feat_{m}") and x.requires_grad:  # the raw table itself (no plug-in in between)
            return _TableProjection.apply(x, linear.weight, linear.bias, self._grad_buffers, m, self.bf16[m],
                                          self._step_optimizer)
        return linear(x)


# ---------------------------------------------------------------------------------------------
# diffusion over interaction vectors (DiffMM; LD4MRec's clamped schedule)
# ---------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t ω_j); sin(t ω_j)]``, ``ω_j = 10000^{-j/(dim/2)}``, of (possibly
    fractional) steps ``t [B] -> [B, dim]`` (zero-padded to an odd ``dim``)."""
    import math
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    a = t.float()[:, None] * freqs[None]
    return F.pad(torch.cat([torch.cos(a), torch.sin(a)], dim=1), (0, dim % 2))


def betas_from_alpha_bar(alpha_bar: torch.Tensor, beta_min: float = 0.0, beta_max: float = 0.999,
                         first_beta: float | None = None) -> torch.Tensor:
    """Per-step ``β_t = 1 - ᾱ_t / ᾱ_{t-1}`` (``ᾱ_{-1} = 1``) of a target ``ᾱ`` schedule, clamped to
    ``[beta_min, beta_max]``; ``first_beta`` replaces ``β_0`` (DiffRec/DiffMM fix it at 1e-4).
    The schedule actually used is ``cumprod(1 - β)``. float64 in, float64 out."""
    prev = torch.cat([torch.ones(1, dtype=alpha_bar.dtype), alpha_bar[:-1]])
    betas = (1 - alpha_bar / prev).clamp(beta_min, beta_max)
    if first_beta is not None:
        betas[0] = first_beta
    return betas


def linear_variance_schedule(scale: float, low: float, high: float, steps: int) -> dict[str, torch.Tensor]:
    """DiffRec's Gaussian schedule: noise variances ``1 - ᾱ_t`` linear from ``scale·low`` to
    ``scale·high`` over ``steps`` steps (β_0 fixed at 1e-4). Returns float32 tensors ``[steps]``:
    ``alpha_bar``; ``loss_weight`` ``SNR(t-1) - SNR(t)`` (1 at t = 0), the reconstruction loss's
    per-step weight; ``coef_x0``, ``coef_xt``, the posterior mean of ``q(x_{t-1} | x_t, x̂_0)``
    as ``coef_x0 · x̂_0 + coef_xt · x_t``."""
    variance = torch.linspace(scale * low, scale * high, steps, dtype=torch.float64)
    betas = betas_from_alpha_bar(1 - variance, 0.0, 0.999, first_beta=1e-4)
    ab = torch.cumprod(1 - betas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    snr = ab / (1 - ab)
    out = {"alpha_bar": ab, "loss_weight": torch.cat([torch.ones(1, dtype=torch.float64), snr[:-1] - snr[1:]]),
           "coef_x0": betas * ab_prev.sqrt() / (1 - ab), "coef_xt": (1 - ab_prev) * (1 - betas).sqrt() / (1 - ab)}
    return {k: v.float() for k, v in out.items()}


class InteractionDenoiser(torch.nn.Module):
    """``x̂_0 = W_o tanh(W_x δ(x_t) + W_τ φ(τ(t)) + b) + b_o`` over interaction vectors ``[B, I]``
    (DiffRec's / DiffMM's one-hidden-layer denoiser; ``τ`` the sinusoidal step embedding, ``φ`` a
    linear map, ``δ`` dropout). Weights start Xavier-normal, biases N(0, 1e-3²)."""

    def __init__(self, n_items: int, hidden: int, time_dim: int, dropout: float):
        super().__init__()
        self.time = torch.nn.Linear(time_dim, time_dim)
        self.inp = torch.nn.Linear(n_items + time_dim, hidden)
        self.out = torch.nn.Linear(hidden, n_items)
        self.drop = torch.nn.Dropout(dropout)
        for layer in (self.time, self.inp, self.out):
            torch.nn.init.normal_(layer.weight, 0.0, (2.0 / sum(layer.weight.shape)) ** 0.5)
            torch.nn.init.normal_(layer.bias, 0.0, 1e-3)

    def step_bias(self, t: torch.Tensor) -> torch.Tensor:
        """``W_τ φ(τ(t)) + b`` ``[len(t), H]``."""
        emb = self.time(timestep_embedding(t, self.time.in_features))
        return emb @ self.inp.weight[:, self.out.out_features:].T + self.inp.bias

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w_x = self.inp.weight[:, : self.out.out_features]
        return self.out(torch.tanh(self.drop(x) @ w_x.T + self.step_bias(t)))     # [B, I]

    @torch.no_grad()
    def chain_weights(self) -> tuple[torch.Tensor, ...]:
        """``(W_xᵀ [I, H], W_x W_o [H, H], W_x b_o [H])``: what :meth:`reverse_chain` multiplies."""
        w_x = self.inp.weight[:, : self.out.out_features]
        return w_x.T.contiguous(), w_x @ self.out.weight, w_x @ self.out.bias

    @torch.no_grad()
    def reverse_chain(self, rows, schedule: dict[str, torch.Tensor], low: bool = False,
                      chain: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """The deterministic reverse chain from ``x_T = x_u`` (a scipy CSR of the users' rows),
        ``x_{t-1} = coef_x0(t) x̂_0(x_t, t) + coef_xt(t) x_t`` down to ``x_0 [B, I]`` (dropout off).

        Run in the hidden space: the chain keeps ``x_t = α x_u + W_o s + β b_o`` and ``z = W_x x_t``,
        and ``W_x x̂_0 = (W_x W_o) h + W_x b_o``, so each step costs ``[B, H] x [H, H]`` and only the
        last ``x_0`` is ``[B, I]`` (bf16 inputs with ``low``). ``chain``: :meth:`chain_weights`, when
        the caller runs many batches."""
        from prismrec.graphs import SparseMatrix
        w_xt, m_hh, w_b = chain if chain is not None else self.chain_weights()
        z = SparseMatrix(rows, symmetric=False).to(w_xt.device) @ w_xt              # W_x x_u [B, H]
        s, alpha, beta = torch.zeros_like(z), 1.0, 0.0
        for i in reversed(range(len(schedule["coef_x0"]))):
            h = torch.tanh(z + self.step_bias(torch.tensor([i], device=z.device)))
            c0, ct = schedule["coef_x0"][i], schedule["coef_xt"][i]
            z = c0 * (h @ m_hh.T + w_b) + ct * z
            s, alpha, beta = c0 * h + ct * s, ct * alpha, c0 + ct * beta
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=low):
            x = torch.addmm(beta * self.out.bias, s, self.out.weight.T).float()     # [B, I]
        return x + alpha * torch.from_numpy(rows.toarray()).to(x.device) if float(alpha) != 0 else x


class _FrozenProjection(torch.autograd.Function):
    """``X Wᵀ (+ b)`` from a kept bf16 copy of a fixed table ``X`` (no gradient for ``X``): the
    forward and ``∂W`` products take bf16 inputs with fp32 accumulation."""

    @staticmethod
    def forward(ctx, x16, weight, bias):
        ctx.save_for_backward(x16)
        ctx.has_bias = bias is not None
        out = (x16 @ weight.to(torch.bfloat16).t()).float()
        return out.add_(bias) if bias is not None else out

    @staticmethod
    def backward(ctx, g):
        (x16,) = ctx.saved_tensors
        return None, (g.to(torch.bfloat16).t() @ x16).float(), g.sum(dim=0) if ctx.has_bias else None


def project_fixed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cache: dict, key: str,
                  bf16: bool) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a feature table that is not trained (DRAGON's, LGMRec's
    raw features).

    With ``bf16`` the products read a bfloat16 copy of ``x`` kept in ``cache[key]`` (made again
    when ``x`` is another tensor or was written since), so each batch multiplies half the bytes
    without converting the table again. An ``x`` that needs a gradient (a plug-in's refined
    features) takes the plain fp32 product.
    """
    if not bf16 or x.requires_grad:
        return F.linear(x, weight, bias)
    entry = cache.get(key)
    if entry is None or entry[0] != _version(x) or entry[1].shape != x.shape:
        entry = cache[key] = (_version(x), x.detach().to(torch.bfloat16))
    return _FrozenProjection.apply(entry[1], weight, bias)


def info_nce_all(a: torch.Tensor, b: torch.Tensor, index: torch.Tensor, temperature: float,
                 precision: torch.dtype | None = None, workspace: Workspace | None = None,
                 key=None) -> torch.Tensor:
    """InfoNCE of rows ``index`` of ``a`` against **every** row of ``b``, summed over ``index``:

    .. math::
        \\sum_j -\\log \\frac{\\exp(\\cos(a_{x_j}, b_{x_j})/\\tau)}{\\sum_{k} \\exp(\\cos(a_{x_j}, b_k)/\\tau)}

    (LGMRec's hypergraph contrast: a batch's users against all users). Each distinct index is
    computed once and weighted by its count; one ``[distinct, len(b)]`` exponential pass and an
    analytic backward. ``precision=torch.bfloat16`` multiplies bf16 copies in the two large
    products (fp32 accumulation and exponentials). With a ``workspace`` the ``[distinct, len(b)]``
    matrix is written into its buffer ``key`` (one per call of a step; kept between steps), so a
    model that runs this every step does not page in a fresh copy each time.
    """
    rows, counts = torch.unique(index, return_counts=True)
    an = F.normalize(a[rows], dim=1) / temperature
    bn = F.normalize(b, dim=1)
    precision = precision or a.dtype
    out = (workspace.get(key, (len(rows), len(b)), a.dtype, a.device)
           if workspace is not None and precision == a.dtype else None)
    return _InfoNCEAll.apply(an, bn, rows, counts.to(a.dtype), precision, out)


class Workspace:
    """Float buffers that outlive a training step, for the large intermediates a model writes every
    step (a fresh tensor of hundreds of MB is page-faulted in again on each allocation: ~0.15 s
    for 320 MB here). ``get`` hands out the leading rows of the key's buffer, grown when too small.

    Reuse is safe: a buffer overwritten while an earlier graph still holds it for its backward makes
    that backward fail (autograd's version check), never silently wrong.
    """

    def __init__(self):
        self._buffers: dict = {}

    def get(self, key, shape: tuple[int, int], dtype: torch.dtype,
            device: torch.device | str = "cpu") -> torch.Tensor:
        rows, cols = shape
        buf = self._buffers.get(key)
        if (buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != dtype
                or buf.device != torch.device(device)):
            buf = self._buffers[key] = torch.empty(rows, cols, dtype=dtype, device=device)
        return buf[:rows]


class _InfoNCEAll(torch.autograd.Function):
    """``Σ_j c_j (log Σ_k exp(a_j·b_k) - a_j·b_{r_j})`` for ``|a_j| ≤ 1/τ``, ``|b_k| ≤ 1``."""

    @staticmethod
    def forward(ctx, a, b, rows, c, precision, out=None):
        low = precision != a.dtype
        if low:
            p = (a.to(precision) @ b.to(precision).T).to(a.dtype)                  # [R, K]
        else:
            p = a @ b.T if out is None else torch.mm(a, b.T, out=out)
        p.exp_()
        total = p.sum(dim=1)                                                         # [R]
        ctx.low = low
        ctx.save_for_backward(a, b, rows, c, p.to(precision) if low else p, total)
        return (c * (total.log() - (a * b[rows]).sum(dim=1))).sum()

    @staticmethod
    def backward(ctx, g):
        a, b, rows, c, p, total = ctx.saved_tensors
        w = (c * g)[:, None]                                  # [R, 1]
        wa = a * (w / total[:, None])                         # softmax-weighted rows of a
        if ctx.low:
            pb, pa = (p @ b.to(p.dtype)).to(a.dtype), (p.T @ wa.to(p.dtype)).to(a.dtype)
        else:
            pb, pa = p @ b, p.T @ wa
        grad_a = w * (pb / total[:, None] - b[rows])
        grad_b = pa.index_add_(0, rows, a * w, alpha=-1.0)
        return grad_a, grad_b, None, None, None, None


# ---------------------------------------------------------------------------------------------
# spectral filters over the embedding axis (SMORE)
# ---------------------------------------------------------------------------------------------
def spectrum(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal real FFT of each row ``[n, d] -> [n, d//2 + 1]`` (complex)."""
    return torch.fft.rfft(x, dim=1, norm="ortho")


class SpectralFilter(torch.nn.Module):
    """A learnable complex filter ``K [d//2 + 1]`` applied in the frequency domain:
    ``F⁻¹(K ⊙ Π_k X̂_k)`` for one or more spectra ``X̂_k`` (one: denoising; several: fusion by
    the convolution theorem, a circular convolution of the inputs). Weights start ``N(0, 1)``
    (real and imaginary parts), as in SMORE's code.

    Shapes:
        each spectrum [n, d//2 + 1] complex -> [n, d] real.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.weight = torch.nn.Parameter(torch.randn(dim // 2 + 1, 2))   # (real, imaginary)

    def forward(self, *spectra: torch.Tensor) -> torch.Tensor:
        prod = spectra[0]
        for s in spectra[1:]:
            prod = prod * s
        return torch.fft.irfft(prod * torch.view_as_complex(self.weight), n=self.dim, dim=1, norm="ortho")


# ---------------------------------------------------------------------------------------------
# graded-neighbour alignment (DA-MRS's alignment guided by item relations)
# ---------------------------------------------------------------------------------------------
def topk_indices(x: torch.Tensor, k: int, width: int | None = None) -> torch.Tensor:
    """Column indices of each row's ``k`` largest entries of ``x`` ``[rows, n]`` (no gradient;
    in no particular order; ties may pick other columns than ``torch.topk``).

    The columns are split into ``width`` classes ``j, j + width, j + 2·width, ...``: the ``k``
    largest entries of a row lie in the ``k`` classes with the largest maxima (a class outside
    them would need ``k`` larger entries elsewhere), so only those classes' entries (and the
    ragged last columns) are ranked. The default ``width`` is about ``sqrt(n·k)``, which makes
    both rankings about as long. On CPU about 2.5x faster than ``topk`` for 10 of 7,050
    columns, which is where DA-MRS spends its time.
    """
    rows, n = x.shape
    if width is None:
        width = n // max(1, round((n / max(k, 1)) ** 0.5))
    per = n // width
    if width <= k or per < 1:
        return x.topk(k, dim=1).indices
    main = x[:, : per * width].view(rows, per, width)
    best = main.amax(1).topk(k, dim=1).indices                                       # [rows, k] classes
    cand = main.gather(2, best[:, None, :].expand(rows, per, k)).reshape(rows, per * k)
    pos = (torch.arange(per, device=x.device)[None, :, None] * width + best[:, None, :]).reshape(rows, per * k)
    if per * width < n:
        cand = torch.cat([cand, x[:, per * width:]], 1)
        pos = torch.cat([pos, torch.arange(per * width, n, device=x.device).expand(rows, -1)], 1)
    return pos.gather(1, cand.topk(k, dim=1, sorted=False).indices)


def graded_neighbours(sims: list[torch.Tensor], n: int = 10,
                      scratch: list[torch.Tensor] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pseudo-positives of each view from every view's similarities (no gradient).

    With ``P_v = softmax(S_v)`` row-wise for each view ``v``, view ``v``'s strong positives are
    the top ``n`` of ``P_v + Σ_w P_w`` (items every view, and ``v`` twice, finds close) and its
    weak positives the top ``n`` of ``P_v`` among the rest.

    Args:
        sims: one ``[B, I]`` similarity matrix per view (queries × all items).
        scratch: ``V + 2`` float tensors of at least ``[B, I]`` to work in (their leading rows are
            used); a caller that runs many row blocks passes the same ones every time, which spares
            a fresh ``[B, I]`` allocation (and its page faults) per intermediate and block.

    Returns:
        ``(strong [B, n], weak [B, n])`` item indices per view.
    """
    views, rows = len(sims), sims[0].shape[0]
    if scratch is None:
        scratch = [torch.empty_like(sims[0]) for _ in range(views + 2)]
    work = [t[:rows] for t in scratch]
    with torch.no_grad():
        probs = [_softmax_into(s, w) for s, w in zip(sims, work)]
        total, score = work[views].copy_(probs[0]), work[views + 1]
        for p in probs[1:]:
            total += p
        out = []
        for p in probs:
            strong = topk_indices(torch.add(total, p, out=score), n)
            weak = topk_indices(p.scatter_(1, strong, 0.0), n)  # p is not read again
            out.append((strong, weak))
    return out


def _softmax_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Row-wise ``softmax(x)`` written into ``out`` (same shape), ``x`` untouched: torch's own
    kernel (the same bits as ``torch.softmax``), through its ``out=`` form."""
    return torch.ops.aten._softmax.out(x, 1, False, out=out)


def graded_neighbour_contrast(qs: list[torch.Tensor], keys: list[torch.Tensor], n: int = 10,
                              temperature: float = 0.2, block_rows: int = 128, eps: float = 1e-9,
                              precision: torch.dtype | None = None) -> torch.Tensor:
    """DA-MRS's alignment guided by graded item relations, averaged over views and queries:

    .. math::
        \\frac{1}{VB} \\sum_{v, b} -\\log\\Big(\\frac{\\sum_{j \\in P_{vb}} e_{vbj}}{\\sum_j e_{vbj}} + \\epsilon\\Big)
        - \\log\\Big(\\frac{\\sum_{j \\in W_{vb}} e_{vbj}}{\\sum_{j \\notin P_{vb}} e_{vbj}} + \\epsilon\\Big),
        \\quad e_{vbj} = \\exp(q_{vb} \\cdot k_{vj} / \\tau)

    with the strong ``P`` and weak ``W`` positives of :func:`graded_neighbours` (computed from
    ``q_v k_vᵀ`` of all views, without gradient): strong positives against all keys, weak ones
    against all but the strong. ``qs`` and ``keys`` are used as given (unit rows give cosines).

    All of it runs ``block_rows`` queries at a time, every view together, so the ``[rows, I]``
    similarities, their softmax, exponentials and gradient stay in cache; the gradients of
    ``qs`` and ``keys`` are formed in the same pass (the backward only scales them). No double
    backward. ``precision=torch.bfloat16`` multiplies bf16 copies in the three products per block
    (similarities, ``∂q``, ``∂k``; accumulation, softmax, exponentials and sums stay fp32).

    Shapes:
        qs: V tensors [B, d]; keys: V tensors [I, d].
    """
    if len(qs) != len(keys) or not qs:
        raise ValueError(f"one key table per query table, got {len(qs)} and {len(keys)}")
    return _GradedContrast.apply(n, temperature, block_rows, eps, precision, *qs, *keys)


class _GradedContrast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, n, temperature, block_rows, eps, precision, *tensors):
        views = len(tensors) // 2
        qs, keys = tensors[:views], tensors[views:]
        size = qs[0].shape[0]
        low = precision is not None and precision != qs[0].dtype
        # the products' operands: bf16 copies made once per call, or the tensors themselves
        q_op = [q.to(precision) for q in qs] if low else qs
        k_op = [k.to(precision) for k in keys] if low else keys
        grad_q = [torch.empty_like(q) for q in qs]
        grad_k = [torch.zeros_like(k) for k in keys]
        total = qs[0].new_zeros(())
        # every block's [rows, I] intermediates live in buffers made once per call
        block = (min(block_rows, size), keys[0].shape[0])
        sim_buf = [qs[0].new_empty(block) for _ in range(views)]
        scratch = [qs[0].new_empty(block) for _ in range(views + 2)]
        k_t = [k.T.contiguous() for k in k_op]                        # [d, I]: the products' layout
        for s in range(0, size, block_rows):
            e = min(s + block_rows, size)
            if low:
                sims = [(q[s:e] @ k).float() for q, k in zip(q_op, k_t)]
            else:
                sims = [torch.mm(q[s:e], k, out=buf[: e - s]) for q, k, buf in zip(qs, k_t, sim_buf)]
            for v, (strong, weak) in enumerate(graded_neighbours(sims, n, scratch)):
                loss, g = _two_level_rows(sims[v], strong, weak, temperature, eps)
                total += loss
                if low:
                    g = g.to(precision)
                    grad_q[v][s:e] = g @ k_op[v]
                    grad_k[v] += g.T @ q_op[v][s:e]
                else:
                    torch.mm(g, keys[v], out=grad_q[v][s:e])
                    grad_k[v].addmm_(g.T, qs[v][s:e])
        scale = 1.0 / (views * size)
        ctx.scale = scale
        ctx.save_for_backward(*grad_q, *grad_k)
        return total * scale

    @staticmethod
    def backward(ctx, g):
        return (None, None, None, None, None, *(t * (g * ctx.scale) for t in ctx.saved_tensors))


def _two_level_rows(sims: torch.Tensor, strong: torch.Tensor, weak: torch.Tensor, temperature: float,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-level contrast summed over the rows of ``sims`` ``[rows, I]`` (overwritten) and its
    gradient with respect to ``sims``."""
    e = sims.div_(temperature).exp_()
    e_strong, e_weak = e.gather(1, strong), e.gather(1, weak)
    total, hit, soft = e.sum(1), e_strong.sum(1), e_weak.sum(1)
    rest = total - hit
    a, b = hit / total, soft / rest
    loss = (-(a + eps).log() - (b + eps).log()).sum()
    # a = hit/total, b = soft/(total - hit): the loss's derivatives by the three sums, times ∂e/∂s = e/τ
    da, db = -1.0 / (a + eps) / temperature, -1.0 / (b + eps) / temperature
    d_hit = da / total + db * soft / rest**2
    d_total = -da * hit / total**2 - db * soft / rest**2
    g = e.mul_(d_total[:, None])
    g.scatter_add_(1, strong, e_strong * d_hit[:, None])
    g.scatter_add_(1, weak, e_weak * (db / rest)[:, None])
    return loss, g


class BatchRows(NamedTuple):
    """A pairwise batch's distinct users and items as rows of the stacked ``[users; items]`` table.

    Graph models that evaluate a row-wise step (a fuser, a gate) only on the rows a batch needs
    gather ``rows`` from their propagation and index back with ``user_at`` / ``item_at``.
    """

    users: torch.Tensor    # distinct users [U]
    items: torch.Tensor    # distinct items among the positives and negatives [I]
    rows: torch.Tensor     # [users; n_users + items]: their rows of the stacked table [U + I]
    user_at: torch.Tensor  # batch position -> index into ``rows`` of its user [B]
    item_at: torch.Tensor  # position in [pos; neg] -> index into ``rows`` of its item [2B]


def batch_rows(batch, n_users: int) -> BatchRows:
    """The :class:`BatchRows` of a (users, pos_items, neg_items) batch."""
    users, user_at = torch.unique(batch.users, return_inverse=True)
    items, item_at = torch.unique(torch.cat([batch.pos_items, batch.neg_items]), return_inverse=True)
    return BatchRows(users, items, torch.cat([users, n_users + items]), user_at, item_at + len(users))


def user_item_contrast(view: torch.Tensor, base: torch.Tensor, r: BatchRows, temperature: float,
                       precision: torch.dtype | None = None) -> torch.Tensor:
    """InfoNCE between two views of a batch's rows, over its positive items (a duplicated positive
    counts each time) plus over its users: ``view``/``base`` are ``[len(r.rows), d]``."""
    b = len(r.user_at)
    return (info_nce_rows(view, base, r.item_at[:b], temperature, precision)
            + info_nce_rows(view, base, r.user_at, temperature, precision))
