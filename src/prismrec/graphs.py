"""Graph pieces shared by every graph model: sparse adjacency, normalisation, propagation,
modality kNN item graphs, degree-sensitive edge pruning, and an on-disk cache.

Nothing here is model-specific; LightGCN, FREEDOM, MGCN, LATTICE, BM3, ... all call these.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file

log = logging.getLogger("prismrec")


# ---------------------------------------------------------------------------------------------
# sparse matrices
# ---------------------------------------------------------------------------------------------
def sym_normalize(m: sp.spmatrix, eps: float = 1e-7) -> sp.csr_matrix:
    """``D^{-1/2} M D^{-1/2}`` with D the row sums of ``M`` (+eps, as MMRec)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    d = np.asarray(m.sum(axis=1)).ravel() + eps
    dinv = np.power(d, -0.5).astype(np.float32)
    return sp.csr_matrix(sp.diags(dinv) @ m @ sp.diags(dinv), dtype=np.float32)


def binary_csr(m: sp.spmatrix) -> sp.csr_matrix:
    """A float32 CSR copy of ``m`` with every stored pair set to 1 (a repeated pair counts once;
    explicit zeros count as pairs, as in the interaction files)."""
    r = sp.csr_matrix(m, dtype=np.float32, copy=True)
    r.sum_duplicates()
    r.data[:] = 1.0
    return r


def bipartite_adjacency(train: sp.spmatrix, normalize: bool = True) -> sp.csr_matrix:
    """The ``(N+I) x (N+I)`` user-item graph ``[[0, R], [Rᵀ, 0]]``, symmetrically normalised."""
    r = binary_csr(train)
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    return sym_normalize(a) if normalize else a


def mean_aggregators(train: sp.spmatrix) -> tuple["SparseMatrix", "SparseMatrix"]:
    """Mean aggregation over the bipartite graph as two blocks: ``(Ā_ui [U, I], Ā_iu [I, U])``.

    ``Ā_ui @ X_items`` averages each user's items, ``Ā_iu @ X_users`` each item's users (PyG
    ``aggr='mean'`` on the user-item graph; nodes without edges get zeros). Keeping the blocks
    apart lets a model multiply by a weight on the smaller side (MMGCN, GraphSAGE).
    """
    r = binary_csr(train)

    def row_mean(m):
        deg = np.asarray(m.sum(axis=1)).ravel()
        inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0).astype(np.float32)
        return SparseMatrix(sp.diags(inv) @ m, symmetric=False)
    return row_mean(r), row_mean(r.T.tocsr())


def spmm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a @ x`` for a torch CSR ``a``; a square ``a`` goes through ``addmm(x, a, x, beta=0)``.

    ``a @ x`` zero-fills a buffer and then copies it; ``addmm`` only copies ``x`` into its
    result first (PyTorch's CPU sparse ``addmm`` copies ``self`` into ``out`` whatever ``beta``
    is), then MKL overwrites it: with int32 indices, 2.5 ms instead of 4-5 ms for baby-like's
    user-item graph at 2 threads. A copy-free ``out.addmm_(a, x, beta=0)`` was measured no faster
    inside LightGCN's training loop (the product then pays for the cache misses the copy took).
    """
    if a.shape[0] == a.shape[1] == x.shape[0] and x.dim() == 2:
        return torch.addmm(x, a, x, beta=0)
    return a @ x


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, at, x):
        ctx.at = at
        return spmm(a, x)

    @staticmethod
    def backward(ctx, g):
        return None, None, spmm(ctx.at, g.contiguous())


class SparseMatrix:
    """A fixed sparse matrix for fast ``A @ X`` with autograd through ``X``.

    Holds ``A`` and ``Aᵀ`` as torch CSR tensors: CSR products run on both cores, and the
    backward pass uses the stored transpose instead of converting on every call (what
    ``torch.sparse.mm`` would do).
    """

    def __init__(self, m: sp.spmatrix, symmetric: bool | None = None):
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        self.shape = m.shape
        self.scipy = m
        self.a = _to_torch_csr(m)
        if symmetric is None:
            symmetric = m.shape[0] == m.shape[1] and abs(m - m.T).max() < 1e-6 if m.nnz else True
        self.at = self.a if symmetric else _to_torch_csr(m.T.tocsr())

    @property
    def nnz(self) -> int:
        return self.scipy.nnz

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            return _SpMM.apply(self.a, self.at, x)
        return spmm(self.a, x)

    def to(self, device) -> "SparseMatrix":
        self.a = self.a.to(device)
        self.at = self.a if self.at is self.a else self.at.to(device)
        return self


def csr_rows(m: sp.csr_matrix, rows: torch.Tensor) -> SparseMatrix:
    """Rows ``rows`` (an index tensor) of a fixed scipy CSR as a :class:`SparseMatrix` on ``rows``' device:
    ``(M @ X)[rows]`` computed from those rows only."""
    return SparseMatrix(m[rows.cpu().numpy()], symmetric=False).to(rows.device)


def _index_dtype(m: sp.spmatrix) -> type:
    """int32 indices where they fit: MKL's sparse kernels take int32, int64 ones are converted on
    every product."""
    return np.int32 if max(m.nnz, *m.shape) < 2**31 - 1 else np.int64


def _to_torch_csr(m: sp.csr_matrix) -> torch.Tensor:
    itype = _index_dtype(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(itype)),
                                       torch.from_numpy(m.indices.astype(itype)),
                                       torch.from_numpy(m.data.astype(np.float32)), m.shape)


class UserItemEdges:
    """The training edges ``(u_e, i_e)`` in user-major order, for products whose edge values change.

    ``to_users(v, X)`` is ``R_v X`` (``[R_v]_{u_e i_e} = v_e``, each user sums over its items),
    ``to_items(v, X)`` is ``R_vᵀ X`` and ``dot(A, B)`` is ``(a_{u_e} · b_{i_e})_e``; all three are
    differentiable in every argument and run as CSR products and sampled products
    (``torch.sparse.sampled_addmm``), never as ``[E, d]`` gathers (about 10x faster on CPU).
    """

    def __init__(self, train: sp.spmatrix):
        r = binary_csr(train)
        r.sort_indices()
        r.data = np.arange(1, r.nnz + 1, dtype=np.float64)      # edge ids (+1: no explicit zeros)
        rt = r.T.tocsr()
        rt.sort_indices()
        self.shape, self.nnz = r.shape, r.nnz
        self.users = torch.from_numpy(np.repeat(np.arange(r.shape[0]), np.diff(r.indptr)))   # u_e [E]
        self.items = torch.from_numpy(r.indices.astype(np.int64))                           # i_e [E]
        self.order = torch.from_numpy(rt.data.astype(np.int64) - 1)  # Rᵀ's k-th entry is edge order[k]
        it = _index_dtype(r)
        self._r = tuple(torch.from_numpy(a.astype(it)) for a in (r.indptr, r.indices))
        self._rt = tuple(torch.from_numpy(a.astype(it)) for a in (rt.indptr, rt.indices))
        self._pattern = self.matrix(torch.zeros(self.nnz), transpose=False)

    def matrix(self, values: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``R_v`` ``[N, I]`` (or ``R_vᵀ`` ``[I, N]``) as a torch CSR tensor; ``values`` in edge order."""
        (crow, col), shape = (self._rt, self.shape[::-1]) if transpose else (self._r, self.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(crow, col, values[self.order] if transpose else values, shape)

    def sampled(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(a_{u_e} · b_{i_e})_e`` without gradient ``[E]``."""
        pattern = self._pattern if a.dtype == self._pattern.dtype else self._pattern.to(a.dtype)
        return torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()

    def to_users(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _EdgeProduct.apply(self, False, values, x)

    def to_items(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _EdgeProduct.apply(self, True, values, x)

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _EdgeDot.apply(self, a, b)


class _EdgeProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, edges, transpose, values, x):
        ctx.edges, ctx.transpose = edges, transpose
        ctx.save_for_backward(values, x)
        return edges.matrix(values.detach(), transpose) @ x.detach()

    @staticmethod
    def backward(ctx, g):
        (values, x), e, t = ctx.saved_tensors, ctx.edges, ctx.transpose
        g = g.contiguous()
        dv = (e.sampled(x, g) if t else e.sampled(g, x)) if ctx.needs_input_grad[2] else None
        dx = e.matrix(values.detach(), not t) @ g if ctx.needs_input_grad[3] else None
        return None, None, dv, dx


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, edges, a, b):
        ctx.edges = edges
        ctx.save_for_backward(a, b)
        return edges.sampled(a.detach(), b.detach())

    @staticmethod
    def backward(ctx, g):
        (a, b), e = ctx.saved_tensors, ctx.edges
        da = e.matrix(g, False) @ b.detach() if ctx.needs_input_grad[1] else None
        db = e.matrix(g, True) @ a.detach() if ctx.needs_input_grad[2] else None
        return None, da, db


def propagate(adj: SparseMatrix, x: torch.Tensor, num_layers: int, mean: bool = True,
              rows: torch.Tensor | None = None, with_input: bool = False):
    """LightGCN propagation: ``mean(X, ÂX, ..., Â^L X)`` (or just ``Â^L X`` with ``mean=False``).

    With ``rows``, only those rows of the result are returned (``propagate(...)[rows]``, computed
    without materialising the full mean); ``with_input=True`` then also returns ``x[rows]`` (the
    layer-0 rows a regulariser reads), as ``(out, x[rows])``. When ``x`` needs a gradient the whole
    thing is one autograd node (:class:`_Propagate`): its backward is one scatter of the output
    gradients and ``L`` CSR products in Horner form, ``G + Âᵀ(G + Âᵀ(G ...))``, instead of
    autograd's chain of full-size sums, slices and zero-filled index gradients (about a third of
    a LightGCN step on baby-like).
    """
    if with_input and rows is None:
        raise ValueError("with_input needs rows")
    if x.requires_grad and num_layers > 0:
        out, x_rows = _Propagate.apply(adj.a, adj.at, x, num_layers, mean, rows, with_input)
        return (out, x_rows) if with_input else out
    out, h = x, x
    for _ in range(num_layers):
        h = adj @ h
        out = out + h
    out = out / (num_layers + 1) if mean else h
    if rows is None:
        return out
    return (out[rows], x[rows]) if with_input else out[rows]


class _Propagate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, at, x, num_layers, mean, rows, with_input):
        ctx.at, ctx.num_layers, ctx.mean, ctx.n = at, num_layers, mean, x.shape[0]
        ctx.has_rows = rows is not None
        if rows is not None:
            ctx.save_for_backward(rows)
        h = x
        pick = (lambda t: t) if rows is None else (lambda t: torch.index_select(t, 0, rows))
        out = x.clone() if (mean and rows is None) else (pick(x) if mean else None)
        for _ in range(num_layers):
            h = spmm(a, h)
            if mean:
                out += pick(h)
        if mean:
            out.div_(num_layers + 1)
        else:
            out = pick(h)
        x_rows = pick(x) if with_input else None
        return out, x_rows

    @staticmethod
    def backward(ctx, g, g_input):
        scale = 1.0 / (ctx.num_layers + 1) if ctx.mean else 1.0
        rows = ctx.saved_tensors[0] if ctx.has_rows else None
        if rows is not None:
            grad = g.new_zeros(ctx.n, g.shape[1]).index_add_(0, rows, g, alpha=scale)
        else:
            grad = g * scale if scale != 1.0 else g.contiguous()
        y = grad
        for _ in range(ctx.num_layers):  # Horner: G + Âᵀ y (mean) or Âᵀ y (last layer only)
            y = torch.addmm(grad, ctx.at, y) if ctx.mean else spmm(ctx.at, y)
        if g_input is not None:  # the layer-0 rows' own gradient is not propagated
            y = y if y is not grad else y.clone()
            y.index_add_(0, rows, g_input)
        return None, None, y, None, None, None, None


COS_EPS = 1e-8  # torch's cosine_similarity (which MMRec calls) divides by max(|x|, eps) · max(|y|, eps)


class _RefinedPropagation(torch.autograd.Function):
    """``Σ_l α^(l) ⊙ Â E^(l-1)`` (rows ``rows`` of it) as one autograd node: the backward walks the
    layers down once with the cosine's derivative written out, instead of autograd's chain of
    full-size norms, masks and products (baby-like epochs about 30% shorter)."""

    @staticmethod
    def forward(ctx, a, at, ego, num_layers, rows):
        ego_norm = torch.linalg.vector_norm(ego, dim=1)                     # [N]
        ego_den = ego_norm.clamp_min(COS_EPS)
        h, out, saved = ego, None, []
        for _ in range(num_layers):
            t = spmm(a, h)                                                  # Â E^(l-1) [N, d]
            t_norm = torch.linalg.vector_norm(t, dim=1)
            den = t_norm.clamp_min(COS_EPS) * ego_den
            cos = (t * ego).sum(dim=1) / den                                # α^(l) [N]
            h = t * cos[:, None]
            part = h if rows is None else h.index_select(0, rows)
            out = part if out is None else out.add_(part)
            saved.append((t, t_norm, cos, den))
        ctx.at, ctx.saved, ctx.ego_norm = at, saved, ego_norm
        ctx.save_for_backward(ego, *(() if rows is None else (rows,)))
        return out

    @staticmethod
    def backward(ctx, g):
        ego, *rows = ctx.saved_tensors
        g_out = g.new_zeros(ego.shape).index_add_(0, rows[0], g) if rows else g   # ∂L/∂h_l from the sum
        grad = torch.zeros_like(ego)
        ego_coef = ego.new_zeros(ego.shape[0])                              # Σ_l of the e-direction terms
        carry = None                                                        # ∂L/∂h_l through layer l+1
        # a norm below eps is clamped: its share of ∂α vanishes (and its 0/0 is discarded by where)
        k_e_mask = ctx.ego_norm < COS_EPS
        for t, t_norm, cos, den in reversed(ctx.saved):
            gh = g_out if carry is None else g_out + carry                  # ∂L/∂h_l [N, d]
            s = (gh * t).sum(dim=1)                                         # [N]
            # ∂α/∂t = e/den - α t/|t|², ∂α/∂e = t/den - α e/|e|²
            k_t = torch.where(t_norm < COS_EPS, 0.0, cos / t_norm.square())
            k_e = torch.where(k_e_mask, 0.0, cos / ctx.ego_norm.square())
            dt = gh * cos[:, None]
            dt.addcmul_(ego, (s / den)[:, None]).addcmul_(t, (-s * k_t)[:, None])   # ∂L/∂t [N, d]
            grad.addcmul_(t, (s / den)[:, None])
            ego_coef.sub_(s * k_e)
            carry = spmm(ctx.at, dt)                                        # ∂L/∂h_{l-1}
        grad.addcmul_(ego, ego_coef[:, None]).add_(carry)
        return None, None, grad, None, None


def refined_propagate(adj: SparseMatrix, ego: torch.Tensor, num_layers: int,
                      rows: torch.Tensor | None = None) -> torch.Tensor:
    """LayerGCN's layer-refined propagation: ``Σ_{l=1..L} α^(l) ⊙ Â E^(l-1)`` with ``α^(l)`` the
    row-wise cosine of ``Â E^(l-1)`` with the ego rows ``E^(0)``, and ``E^(l) = α^(l) ⊙ Â E^(l-1)``
    (only ``rows`` of the sum when given). One autograd node (:class:`_RefinedPropagation`)."""
    return _RefinedPropagation.apply(adj.a, adj.at, ego, num_layers, rows)


# ---------------------------------------------------------------------------------------------
# modality kNN item graphs
# ---------------------------------------------------------------------------------------------
def knn_topk(x: torch.Tensor, k: int, block_size: int = 1024, shrink: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine similarities of every row of ``x`` with all rows (self included), no grad.

    With ``shrink > 0`` the similarity is the shrunk cosine ``x_i·x_j / (|x_i| |x_j| + shrink)``
    (item-based kNN's damping: pairs of small-norm rows count less).

    Row blocks of ``block_size x n`` similarities (never ``n x n``), written into one reused
    buffer (a fresh block per product would be page-faulted in each time).

    Returns:
        ``(values [n, k], indices [n, k])``.
    """
    with torch.no_grad():
        x = x.detach().float()
        norms = x.norm(dim=1)
        if shrink == 0:
            x = x / norms[:, None].clamp_min(1e-12)
        n, k = x.shape[0], min(k, x.shape[0])
        xt = x.T.contiguous()
        buf = torch.empty(min(block_size, n), n, dtype=x.dtype, device=x.device)
        vals = torch.empty(n, k, dtype=x.dtype, device=x.device)
        cols = torch.empty(n, k, dtype=torch.long, device=x.device)
        for s in range(0, n, block_size):
            e = min(s + block_size, n)
            sim = torch.mm(x[s:e], xt, out=buf[: e - s])
            if shrink:
                sim.div_(torch.outer(norms[s:e], norms).add_(shrink))
            torch.topk(sim, k, dim=1, out=(vals[s:e], cols[s:e]))
    return vals, cols


def knn_graph(features: np.ndarray | torch.Tensor, k: int, *, weighted: bool = True,
              block_size: int = 2048, shrink: float = 0.0) -> sp.csr_matrix:
    """Top-``k`` cosine-similarity neighbours of every item (self included), unnormalised.

    Built in row blocks (:func:`knn_topk`) so that memory is ``O(block_size · n_items)``, not ``O(n_items²)``.

    Args:
        features: ``[n_items, d]``.
        k: neighbours per row.
        weighted: keep similarity values (MGCN, LATTICE); ``False`` keeps 1s (FREEDOM).
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    n = x.shape[0]
    k = min(k, n)
    vals, cols = knn_topk(x, k, block_size, shrink=shrink)
    data = vals.numpy().ravel() if weighted else np.ones(n * k, np.float32)
    m = sp.csr_matrix((data, cols.numpy().ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    m.sort_indices()
    return m


def modality_graph(features: np.ndarray, k: int, *, weighted: bool = True, cache: bool = True) -> sp.csr_matrix:
    """Symmetrically normalised kNN graph of one modality, cached on disk by content hash."""
    def build():
        return sym_normalize(knn_graph(features, k, weighted=weighted))
    if not cache:
        return build()
    return cached_csr("knn", [features, np.array([k, int(weighted)])], build)


class NewItemRows:
    """The rows unseen items would have in a weighted sum ``S = Σ_m w_m S_m`` of binary modality
    graphs (``modality_graph(..., weighted=False)`` of the known items), the known rows unchanged.

    In ``S_m`` every item links to its ``k`` most cosine-similar items, itself included, and
    ``S_m = D^{-1/2} A D^{-1/2}`` with every degree ``k``. A new item's row therefore holds its
    ``k - 1`` nearest known items, each ``1/k`` (both degrees are ``k``), and itself, ``1/k``: the
    row it would have had in the graph built with it (where it may also enter known items'
    rows; this cold start leaves them as trained). Used by the cold start (``embed_items``) of
    the models with frozen binary kNN item graphs (FREEDOM, PGL).

    Shapes:
        known[m] [I, d_m], new[m] [n, d_m] -> neighbours[m] [n, k - 1].
    """

    def __init__(self, known: dict[str, np.ndarray | torch.Tensor], new: dict[str, torch.Tensor], k: int,
                 weights: list[float], block_size: int = 1024, eps: float = 1e-7):
        self.neighbours: list[torch.Tensor] = []
        self.scales: list[float] = []
        self.self_weight = 0.0
        for (m, table), w in zip(known.items(), weights):
            table = table if isinstance(table, torch.Tensor) else torch.from_numpy(np.array(table, dtype=np.float32))
            x = torch.nn.functional.normalize(table.detach().float(), dim=1, eps=1e-12)
            q = torch.nn.functional.normalize(torch.as_tensor(new[m], dtype=torch.float32), dim=1, eps=1e-12)
            k_graph = min(k, len(x))  # the degree of the known rows (and of the new row)
            take = min(k_graph - 1, len(x))
            cols = [torch.mm(q[s:s + block_size], x.T).topk(take, dim=1).indices for s in range(0, len(q), block_size)]
            self.neighbours.append(torch.cat(cols) if cols else torch.empty(0, take, dtype=torch.long))
            self.scales.append(w / (k_graph + eps))   # (k + eps)^{-1/2} (k + eps)^{-1/2}, as sym_normalize
            self.self_weight += w / (k_graph + eps)

    def __matmul__(self, table: torch.Tensor) -> torch.Tensor:
        """``S[new, known] @ table`` ``[n, d]`` for a known-items table ``[I, d]``."""
        return sum(s * table[cols].sum(dim=1) for cols, s in zip(self.neighbours, self.scales))


def propagate_new_items(adj: SparseMatrix, rows: NewItemRows, table: torch.Tensor, own: torch.Tensor,
                        num_layers: int) -> torch.Tensor:
    """The new items' rows of ``S'^L [table; own]`` over the graph ``S'`` that is ``adj`` (the known
    items' ``S``) with ``rows`` added: layer by layer, ``h_new ← rows @ h_known + s_self h_new``
    and ``h_known ← S h_known`` (the known rows do not see the new items). ``own [n, d]``: the
    new items' layer-0 rows."""
    known, mine = table, own
    for _ in range(num_layers):
        mine = rows @ known + rows.self_weight * mine
        known = adj @ known
    return mine


def degree_prune(train: sp.csr_matrix, keep_ratio: float, rng: np.random.Generator) -> sp.csr_matrix:
    """FREEDOM's degree-sensitive edge pruning: keep ``keep_ratio`` of the user-item edges, sampled
    without replacement with probability ∝ ``1/sqrt(d_u d_i)``, and return the normalised
    bipartite adjacency of what is kept.
    """
    coo = train.tocoo()
    du = np.asarray(train.sum(axis=1)).ravel()
    di = np.asarray(train.sum(axis=0)).ravel()
    w = 1.0 / np.sqrt(du[coo.row] * di[coo.col])
    n_keep = int(len(w) * keep_ratio)
    # Gumbel top-k draws without replacement from the same distribution as MMRec's
    # torch.multinomial(w, n_keep, replacement=False), in one vectorised pass
    g = np.log(w) + rng.gumbel(size=len(w))
    keep = np.argpartition(-g, n_keep - 1)[:n_keep] if n_keep < len(w) else np.arange(len(w))
    kept = sp.csr_matrix((np.ones(len(keep), np.float32), (coo.row[keep], coo.col[keep])), shape=train.shape)
    return bipartite_adjacency(kept)


def uniform_prune(train: sp.csr_matrix, keep_ratio: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Keep ``keep_ratio`` of the user-item edges drawn uniformly without replacement; return the
    normalised bipartite adjacency of what is kept (the uniform twin of :func:`degree_prune`; LayerGCN)."""
    coo = train.tocoo()
    keep = rng.choice(coo.nnz, int(coo.nnz * keep_ratio), replace=False)
    kept = sp.csr_matrix((np.ones(len(keep), np.float32), (coo.row[keep], coo.col[keep])), shape=train.shape)
    return bipartite_adjacency(kept)


def prune_from_torch_rng(train: sp.csr_matrix, keep_ratio: float, prune=None) -> "SparseMatrix":
    """``prune(train, keep_ratio, rng)`` (default :func:`degree_prune`) as a :class:`SparseMatrix`, with
    the numpy generator seeded from torch's global RNG, so ``torch.manual_seed`` fixes the draw (the
    per-epoch edge pruning of FREEDOM, LayerGCN, MMGCF and PGL's local mode)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    return SparseMatrix((prune or degree_prune)(train, keep_ratio, rng), symmetric=True)


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def cache_root() -> Path | None:
    """``$PRISMREC_CACHE`` or ``~/.cache/prismrec``; ``PRISMREC_CACHE=off`` disables caching."""
    env = os.environ.get("PRISMREC_CACHE")
    if env == "off":
        return None
    return Path(env) if env else Path.home() / ".cache" / "prismrec"


def _hash(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:24]


def cached_csr(kind: str, inputs, build) -> sp.csr_matrix:
    """Return ``build()``, stored as safetensors under the cache root keyed by a hash of ``inputs``."""
    root = cache_root()
    if root is None:
        return build()
    path = root / f"{kind}-{_hash(inputs)}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            return sp.csr_matrix((t["data"], t["indices"], t["indptr"]), shape=tuple(t["shape"]))
        except Exception as e:  # a corrupt cache file is rebuilt, never trusted
            log.warning("ignoring unreadable cache file %s (%s)", path, e)
    m = build()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"data": m.data, "indices": m.indices.astype(np.int64), "indptr": m.indptr.astype(np.int64),
                   "shape": np.array(m.shape, np.int64)}, str(tmp))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write cache file %s (%s)", path, e)
    return m


# ---------------------------------------------------------------------------------------------
# co-occurrence neighbours (user-user graphs) and hypergraphs
# ---------------------------------------------------------------------------------------------
def cooccurrence_topk(train: sp.spmatrix, k: int, cache: bool = True) -> sp.csr_matrix:
    """Every row's ``k`` rows sharing the most columns: for users, the users with the most
    training items in common (DualGNN's / DRAGON's user-user graph, MMRec's
    ``user_graph_dict.npy`` recipe: counts ``C = R Rᵀ`` without the diagonal, top-``k`` per row).

    Ties in the count go to the lower row index. Rows with fewer than ``k`` co-occurring rows
    keep all of them. Cached on disk by content hash like the kNN graphs.

    Returns:
        CSR ``[n_rows, n_rows]`` of co-occurrence counts (float32), at most ``k`` entries a row.
    """
    r = binary_csr(train)

    def build():
        c = (r @ r.T).tocsr()
        c.setdiag(0)
        c.eliminate_zeros()
        c.sort_indices()
        rows = np.repeat(np.arange(c.shape[0], dtype=np.int64), np.diff(c.indptr))
        top = np.int64(c.data.max()) + 1 if c.nnz else 1
        # one stable sort by (row, count descending); column order breaks ties
        order = np.argsort(rows * top + (top - 1 - c.data.astype(np.int64)), kind="stable")
        rank = np.arange(c.nnz) - c.indptr[rows[order]]
        keep = order[rank < k]
        out = sp.csr_matrix((c.data[keep], (rows[keep], c.indices[keep])), shape=c.shape, dtype=np.float32)
        out.sort_indices()
        return out
    if not cache:
        return build()
    return cached_csr("cooc", [r.indptr, r.indices, np.array([k, *r.shape])], build)


def sample_neighbours(top: sp.csr_matrix, k: int, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly ``k`` neighbours per row from a top-``k`` graph (:func:`cooccurrence_topk`), with
    softmax weights of their counts (DRAGON's per-epoch user-graph sample).

    A row with fewer than ``k`` neighbours is padded with neighbours drawn uniformly from its own
    (a drawn one counts again in the softmax); a row without neighbours gets zero weights.

    Returns:
        ``(index [n, k] int64, weight [n, k] float32)``.
    """
    n = top.shape[0]
    length = torch.from_numpy(np.diff(top.indptr).astype(np.int64))       # [n]
    start = torch.from_numpy(top.indptr[:-1].astype(np.int64))
    slot = torch.arange(k).expand(n, k)                                    # [n, k]
    draw = (torch.rand(n, k, generator=generator) * length[:, None].clamp_min(1)).long()
    pos = torch.where(slot < length[:, None], slot, draw) + start[:, None]
    empty = length == 0
    pos[empty] = 0
    cols = torch.from_numpy(top.indices.astype(np.int64))
    vals = torch.from_numpy(top.data.astype(np.float32))
    if top.nnz == 0:
        return torch.zeros(n, k, dtype=torch.long), torch.zeros(n, k)
    index, weight = cols[pos], torch.softmax(vals[pos], dim=1)
    index[empty], weight[empty] = 0, 0.0
    return index, weight


def neighbour_matrix(index: torch.Tensor, weight: torch.Tensor, n_cols: int) -> sp.csr_matrix:
    """CSR ``[n, n_cols]`` with ``weight[r, j]`` at ``(r, index[r, j])`` (repeated columns summed):
    ``M @ X`` is ``Σ_j weight[r, j] X[index[r, j]]`` without the ``[n, k, d]`` gather."""
    n, k = index.shape
    # copies: sum_duplicates works in place and would write into the tensors' memory
    weight, index = weight.detach().cpu(), index.cpu()
    m = sp.csr_matrix((weight.numpy().astype(np.float32, copy=True).ravel(), index.numpy().ravel().copy(),
                       np.arange(0, n * k + 1, k)), shape=(n, n_cols))
    m.sum_duplicates()
    m.eliminate_zeros()
    return m


def hypergraph_conv(h_items: torch.Tensor, h_users: torch.Tensor, x_items: torch.Tensor,
                    num_layers: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Message passing through ``E`` soft hyperedges (LGMRec's HGNN): items ``→`` hyperedges
    ``Λ = H_iᵀ X``, hyperedges ``→`` items ``H_i Λ`` and users ``H_u Λ``, ``num_layers`` times.

    Args:
        h_items: item-hyperedge memberships ``[I, E]``.
        h_users: user-hyperedge memberships ``[U, E]``.
        x_items: item embeddings ``[I, d]``.

    Returns:
        ``(users [U, d], items [I, d])``.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    items = x_items
    for _ in range(num_layers):
        edges = h_items.T @ items          # [E, d]
        items = h_items @ edges
    return h_users @ edges, items


def union_max(*mats: sp.spmatrix) -> sp.csr_matrix:
    """Element-wise maximum over the union of the matrices' stored entries: an entry stored in
    only some of them keeps its largest stored value there (an absent entry is not a 0, so a
    negative weight survives). SMORE's fusion item-item graph (max pooling of modality graphs)."""
    coo = [sp.coo_matrix(m) for m in mats]
    shape = coo[0].shape
    rows = np.concatenate([c.row for c in coo]).astype(np.int64)
    cols = np.concatenate([c.col for c in coo]).astype(np.int64)
    vals = np.concatenate([c.data for c in coo]).astype(np.float32)
    key = rows * shape[1] + cols
    order = np.lexsort((-vals, key))                     # by entry, largest value first
    key, vals = key[order], vals[order]
    first = np.r_[True, key[1:] != key[:-1]]
    out = sp.csr_matrix((vals[first], (key[first] // shape[1], key[first] % shape[1])), shape=shape)
    out.sort_indices()
    return out


# ---------------------------------------------------------------------------------------------
# low-rank principal subgraph (PGL's global-aware extraction)
# ---------------------------------------------------------------------------------------------
def svd_principal_graph(adj: sp.spmatrix, rank: int, share: float = 0.25, threshold: float = 1e-3,
                        block_rows: int = 1024, cache: bool = True) -> sp.csr_matrix:
    """PGL's global-aware principal subgraph of a normalised adjacency ``Â``, as MMRec builds it.

    With the top-``rank`` singular triplets ``Â ≈ U diag(σ) Vᵀ`` (descending ``σ``) and
    ``t = max(1, ⌊share · rank⌋)``, the graph is ``U_{:t} diag(σ_{:t} ⊙ σ_{rank-t:}) V_{:t}ᵀ`` (the
    ``t`` largest singular values, each scaled by its counterpart among the ``t`` smallest kept),
    with entries of magnitude below ``threshold`` dropped. The dense product is formed
    ``block_rows`` rows at a time, so memory is ``O(block_rows · n)``, not ``O(n²)``. The SVD is
    scipy's ``svds`` (ARPACK from a seeded start vector: deterministic), cached like the kNN graphs.
    """
    from scipy.sparse.linalg import svds

    adj = sp.csr_matrix(adj, dtype=np.float64)
    n_rows, n_cols = adj.shape
    rank = max(1, min(rank, min(adj.shape) - 1))

    def build():
        v0 = np.random.default_rng(0).uniform(-1.0, 1.0, min(adj.shape))
        u, s, vt = svds(adj, k=rank, v0=v0)
        order = np.argsort(-s)
        u, s, vt = u[:, order], s[order], vt[order]
        t = max(1, int(share * rank))
        left = (u[:, :t] * (s[:t] * s[rank - t:])).astype(np.float32)   # [n_rows, t]
        right = vt[:t].astype(np.float32)                                # [t, n_cols]
        blocks = []
        for start in range(0, n_rows, block_rows):
            dense = left[start:start + block_rows] @ right
            dense[np.abs(dense) < threshold] = 0.0
            blocks.append(sp.csr_matrix(dense))
        out = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix(adj.shape, dtype=np.float32)
        out.sort_indices()
        return out
    if not cache:
        return build()
    return cached_csr("svd-principal", [adj.data, adj.indices, adj.indptr,
                                        np.array([rank, share, threshold], np.float64)], build)


def user_item_views(train: sp.spmatrix) -> tuple[SparseMatrix, SparseMatrix, sp.csr_matrix]:
    """The normalised bipartite graph and its user→item block, shared by the models that read both.

    Returns:
        ``(A, R̂, R̂ csr)``: ``A = D^{-1/2} [0 R; Rᵀ 0] D^{-1/2}`` ``[N + I, N + I]``, its
        ``R̂ = D_u^{-1/2} R D_i^{-1/2}`` block ``[N, I]`` as a :class:`SparseMatrix`, and the same block in
        scipy CSR (for taking a batch's user rows).
    """
    adj = bipartite_adjacency(train)
    n_users = train.shape[0]
    r = adj[:n_users, n_users:].tocsr()
    return SparseMatrix(adj, symmetric=True), SparseMatrix(r), r


# ---------------------------------------------------------------------------------------------
# denoised item-item graphs (DA-MRS)
# ---------------------------------------------------------------------------------------------
def agreed_knn_graphs(features: list[np.ndarray], k: int, block_size: int = 1024,
                      cache: bool = True) -> list[sp.csr_matrix]:
    """One kNN item graph per modality, each drawn only from the pairs that every modality
    finds similar (DA-MRS's denoised item-item graphs), symmetrically normalised.

    With cosine similarities ``S_m`` and their means ``μ_m`` over all ``n²`` pairs, a pair
    ``(i, j)`` is a candidate when ``S_m[i, j] >= μ_m`` for every modality ``m``; item ``i``'s
    neighbours in modality ``m`` are its ``min(k, c_i)`` candidates of highest ``S_m``, where
    ``c_i`` counts its candidates (it always includes ``i`` itself). Edges weigh 1 before
    ``D^{-1/2} A D^{-1/2}`` (row degrees, as :func:`sym_normalize`). ``μ_m`` is
    ``‖Σ_i x̂_i‖² / n²`` (the mean of ``X̂ X̂ᵀ`` without forming it); the similarities are formed
    ``block_size`` rows at a time, so memory is ``O(block_size · n)``. Cached on disk by content hash.

    Args:
        features: one ``[n_items, d_m]`` array per modality.
        k: neighbours per item and modality.

    Returns:
        The normalised graphs ``[n_items, n_items]``, in the order of ``features``.
    """
    xs = [torch.from_numpy(np.array(f, dtype=np.float32)) for f in features]
    n = xs[0].shape[0]
    if any(x.shape[0] != n for x in xs):
        raise ValueError(f"every modality needs one row per item; got {[x.shape[0] for x in xs]} rows")

    def build():
        unit = [x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) for x in xs]
        means = [float(u.double().sum(0).square().sum()) / n**2 for u in unit]
        kk = min(k, n)
        cols = [torch.empty(n, kk, dtype=torch.long) for _ in unit]
        count = torch.empty(n, dtype=torch.long)
        with torch.no_grad():
            for s in range(0, n, block_size):
                e = min(s + block_size, n)
                sims = [u[s:e] @ u.T for u in unit]
                agree = sims[0] >= means[0]
                for sim, mu in zip(sims[1:], means[1:]):
                    agree &= sim >= mu
                count[s:e] = agree.sum(1)
                for sim, c in zip(sims, cols):
                    c[s:e] = sim.masked_fill_(~agree, -np.inf).topk(kk, dim=1).indices
        keep = (torch.arange(kk)[None, :] < count[:, None]).numpy().ravel()
        rows = np.repeat(np.arange(n), kk)[keep]
        return sp.hstack([sp.csr_matrix((np.ones(len(rows), np.float32), (rows, c.numpy().ravel()[keep])),
                                        shape=(n, n)) for c in cols], format="csr")
    stacked = build() if not cache else cached_csr("agreed-knn", [*features, np.array([k])], build)
    return [sym_normalize(stacked[:, m * n:(m + 1) * n]) for m in range(len(xs))]


def item_behaviour_graph(train: sp.spmatrix, k: int, min_count: int = 1) -> sp.csr_matrix:
    """Items linked by the users they share (DA-MRS's item-item behaviour graph), normalised.

    Each item keeps its ``k`` items with the most common training users (:func:`cooccurrence_topk`
    on the item side) that share at least ``min_count`` users, plus itself; edges weigh 1 before
    ``D^{-1/2} A D^{-1/2}`` (row degrees).

    Returns:
        CSR ``[n_items, n_items]``.
    """
    top = cooccurrence_topk(sp.csr_matrix(train).T.tocsr(), k)
    top.data[top.data < min_count] = 0.0
    top.eliminate_zeros()
    top.data[:] = 1.0
    return sym_normalize(top + sp.identity(top.shape[0], dtype=np.float32, format="csr"))


class SampledUserGraph(torch.nn.Module):
    """The user-user graph of DualGNN and DRAGON: each user's ``k`` most co-occurring users
    (:func:`cooccurrence_topk`), sampled to exactly ``k`` with softmax weights of their counts
    (:func:`sample_neighbours`), drawn again by :meth:`resample` (MMRec's per-epoch ``topk_sample``).

    The draw lives in persistent buffers ``index`` and ``weight`` ``[N, k]``, so a loaded bundle
    scores with the graph it was trained on; :meth:`matrix` rebuilds its CSR form only when they
    change (a new draw, ``load_state_dict``).
    """

    def __init__(self, train: sp.spmatrix, k: int):
        super().__init__()
        self.k = k
        self.top = cooccurrence_topk(train, k)
        index, weight = sample_neighbours(self.top, k)
        self.register_buffer("index", index)      # [N, k]
        self.register_buffer("weight", weight)    # [N, k]
        self._csr: tuple | None = None

    def resample(self, generator: torch.Generator | None = None) -> None:
        """A fresh draw (from torch's global RNG unless ``generator``), written into the buffers."""
        index, weight = sample_neighbours(self.top, self.k, generator)
        self.index.copy_(index)
        self.weight.copy_(weight)

    def matrix(self, rows: torch.Tensor | None = None) -> SparseMatrix:
        """``G [N, N]``, or only its ``rows`` ``[len(rows), N]``:
        ``(G X)_u = Σ_j weight[u, j] X[index[u, j]]``."""
        key = (self.index._version, self.weight._version, self.index.data_ptr())
        if self._csr is None or self._csr[0] != key:
            self._csr = key, neighbour_matrix(self.index, self.weight, self.index.shape[0])
        m = self._csr[1]
        return SparseMatrix(m, symmetric=False).to(self.index.device) if rows is None else csr_rows(m, rows)
