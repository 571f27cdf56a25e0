"""Batched full ranking: score all items, mask training items, take the top K (protocol §5)."""
from __future__ import annotations

import functools
import inspect
import weakref

import numpy as np
import scipy.sparse as sp
import torch

from prismrec._faiss import import_faiss
from prismrec.evaluation.metrics import METRICS, metrics_from_hits

DEFAULT_KS = (5, 10, 20, 50)
# Users scored at once: on baby-like (7,050 items) blocks of 128 were ~10% faster than 256-1024.
DEFAULT_BLOCK = 128
# Score-buffer size (floats) of the norm-pruned ranking of dot-product models (_factor_blocks).
_PRUNED_BLOCK_FLOATS = 1 << 22


def topk_items(score_fn, users: np.ndarray, k: int, mask: sp.csr_matrix | None = None,
               block_size: int = DEFAULT_BLOCK, extra_mask: sp.csr_matrix | None = None) -> np.ndarray:
    """Top-k item indices per user, with the users' ``mask`` items (and ``extra_mask``) excluded.

    Args:
        score_fn: ``users (LongTensor [B]) -> scores (Tensor [B, n_items])``; when it takes an
            ``out`` keyword (as :meth:`Model.score` does) the scores are written into one reused buffer.
        users: internal user indices ``[U]``.
        k: list length.
        mask: ``[n_users, n_items]`` CSR of items never to recommend (usually train).
        block_size: users scored at once.

    Returns:
        int64 ``[U, k]`` item indices, best first; ``-1`` pads a row when fewer than ``k`` items are
        left once its masked items are taken out (or when ``k > n_items``). Masked items are never
        returned.
    """
    out = np.full((len(users), k), -1, dtype=np.int64)
    for s, _, top in _ranked_blocks(score_fn, users, k, [mask, extra_mask], block_size):
        out[s:s + len(top)] = top
    return out


def _ranked_blocks(score_fn, users: np.ndarray, k: int, masks, block_size: int):
    """Yield ``(start, block users, top [b, k])`` for consecutive blocks of ``users``."""
    masks = [m for m in masks if m is not None]
    factors = _dot_factors(score_fn) if k > 0 else None
    if factors is not None:
        yield from _factor_blocks(*factors, users, k, masks, block_size)
        return
    takes_out = _takes_out(score_fn)
    device = _score_device(score_fn)
    on_cpu = device.type == "cpu"
    buf = None
    with torch.no_grad():
        for s in range(0, len(users), block_size):
            ub = users[s:s + block_size]
            ut = torch.from_numpy(ub) if on_cpu else torch.from_numpy(ub).to(device)
            # A fresh [block, n_items] result each block costs page faults on every block (the
            # allocator returns large blocks to the OS); writing into one buffer is ~30% faster.
            scores = score_fn(ut) if buf is None else score_fn(ut, out=buf[:len(ub)])
            if takes_out and buf is None and scores.dtype == torch.float32 and len(ub) == block_size:
                buf = scores
            n_items = scores.shape[1]
            for m in masks:
                flat = _cached(m, ("mask", ub.tobytes(), n_items, str(device)),
                               lambda m=m, ub=ub, n=n_items: torch.from_numpy(_flat_coords(m, ub, n)).to(device))
                scores.view(-1)[flat] = -torch.inf
            yield s, ub, _select_top(scores, k) if on_cpu else select_top_torch(scores, k)


def _score_device(score_fn) -> torch.device:
    """Where ``score_fn`` computes: the ``device`` of the model it is a method of (the CPU otherwise)."""
    device = getattr(getattr(score_fn, "__self__", None), "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


def select_top_torch(scores: torch.Tensor, k: int) -> np.ndarray:
    """:func:`_select_top` by ``torch.topk`` where the scores are (a model on a GPU ranks there
    and only the ``[b, k]`` indices travel): ``-1`` where fewer than ``k`` finite scores are left;
    NaN never selected."""
    b, n = scores.shape
    ids = np.full((b, k), -1, dtype=np.int64)
    if b == 0 or n == 0:
        return ids
    # NaN joins the masked (-inf) entries; nan_to_num would also turn -inf into a finite number unless told not to
    x = scores.detach().float().nan_to_num(nan=-torch.inf, posinf=torch.finfo(torch.float32).max, neginf=-torch.inf)
    vals, top = torch.topk(x, min(k, n), dim=1)
    ids[:, :top.shape[1]] = torch.where(vals > -torch.inf, top, -1).cpu().numpy()
    return ids


def _dot_factors(score_fn) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(U, I)`` when ``score_fn`` is a model's own :meth:`Model.score` and that is ``U[u] @ Iᵀ``
    (fp32, CPU); ``None`` for any other score function."""
    owner = getattr(score_fn, "__self__", None)
    if owner is None or getattr(score_fn, "__func__", None) is not getattr(type(owner), "score", None):
        return None
    get = getattr(owner, "scoring_factors", None)
    factors = get() if callable(get) else None
    if factors is None:
        return None
    u, i = factors
    if any(t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != 2 for t in (u, i)):
        return None
    return u, i


def _factor_blocks(u_all: torch.Tensor, items: torch.Tensor, users: np.ndarray, k: int, masks,
                   block_size: int):
    """:func:`_ranked_blocks` for a dot-product model, skipping items that cannot rank.

    Items are scanned in descending order of their norm, in segments of doubling width (256,
    512, ...). Before each segment, a user whose k-th best score so far is at least
    ``|u| · max |i|`` over the segment (Cauchy-Schwarz, widened by a margin for fp32 rounding)
    is done: no later item can beat that score, so none would enter the heap. The result is
    the top k of a full scan in that order (a score equal to the k-th is never taken, as in the
    heap); ties are therefore broken towards larger item norms.

    On graph models the popular items have far larger norms than the rest: on baby-like,
    LightGCN after one epoch needs ~1% of the catalogue per user (median), so most of the
    product and of the heap work is never done, and blocks are made larger (less overhead per
    call). Where the norms do not prune (most of the first block scans to the last segment,
    e.g. VBPR or MGCN, or any model at its random initialisation), the other blocks are scored
    in one product each, in ``block_size`` users, still in norm order: the heap then meets high
    scores early and re-orders itself less (~20% less selection time than in index order).
    """
    faiss = import_faiss()  # deferred: ~0.2 s to import

    n, d = items.shape
    with torch.no_grad():
        norms = torch.linalg.vector_norm(items, dim=1)
        order = torch.argsort(norms, descending=True, stable=True)
        cols = items.index_select(0, order).T.contiguous()  # [d, n]: items by descending norm
        sorted_norms = norms.index_select(0, order).double().numpy()
    order_np = order.numpy()
    position = np.empty(n, dtype=np.int64)
    position[order_np] = np.arange(n)
    # a d-term fp32 dot product is within d·2⁻²⁴·|u||i| of the exact one (and the norms within
    # about as much of theirs): the caps are widened by 4x that
    caps = sorted_norms * (1 + 4 * (d + 2) * 2.0 ** -24)
    # most users are done after the first 256 items, so larger blocks pay less per-call overhead
    # (baby-like: 0.17 s with 128 users, 0.09 s with 512); the buffer stays within ~16 MB
    block = max(block_size, min(len(users), _PRUNED_BLOCK_FLOATS // max(n, 1)))
    buf = torch.empty(min(block, len(users)) * n)  # one score buffer for every product
    faiss.omp_set_num_threads(torch.get_num_threads())
    prune, s = True, 0
    with torch.no_grad():
        while s < len(users):
            ub = users[s:s + block]
            b = len(ub)
            x = u_all.index_select(0, torch.from_numpy(ub))
            bound_scale = torch.linalg.vector_norm(x, dim=1).double().numpy()
            mrow, mpos = _masked_positions(masks, ub, position)
            vals = np.empty((b, k), dtype=np.float32)
            ids = np.empty((b, k), dtype=np.int64)
            heap = _heap(faiss, vals, ids)
            heap.heapify()
            j0, width, last = 0, (max(4 * k, 256) if prune else n), 0
            while j0 < n:
                # vals[:, 0] is each heap's smallest kept score; NaN bounds keep a user scanning
                active = np.flatnonzero(~(vals[:, 0] >= bound_scale * caps[j0])) if j0 else np.arange(b)
                if len(active) == 0:
                    break
                j1 = min(n, j0 + width)
                every = len(active) == b
                xa = x if every else x.index_select(0, torch.from_numpy(active))
                scores = torch.mm(xa, cols[:, j0:j1], out=buf[: len(active) * (j1 - j0)].view(len(active), j1 - j0))
                lo, hi = np.searchsorted(mpos, (j0, j1))
                if hi > lo:
                    r, p = mrow[lo:hi], mpos[lo:hi] - j0
                    if not every:  # block row -> row of `scores`; masked entries of done users dropped
                        slot = np.full(b, -1, dtype=np.int64)
                        slot[active] = np.arange(len(active))
                        r = slot[r]
                        p, r = p[r >= 0], r[r >= 0]
                    scores.view(-1)[torch.from_numpy(r * (j1 - j0) + p)] = -torch.inf
                sc = scores.numpy()
                if every:
                    heap.addn(j1 - j0, faiss.swig_ptr(sc), j0, 0, b)
                else:  # the active users' heaps, compacted, advanced, written back
                    sub_vals, sub_ids = vals[active], ids[active]
                    _heap(faiss, sub_vals, sub_ids).addn(j1 - j0, faiss.swig_ptr(sc), j0, 0, len(active))
                    vals[active], ids[active] = sub_vals, sub_ids
                last = len(active)
                j0, width = j1, 2 * width
            heap.reorder()
            yield s, ub, np.where(ids >= 0, order_np[np.maximum(ids, 0)], -1)
            s += b
            if prune and j0 == n and 4 * last > 3 * b:
                # most of this block's users scanned to the last segment: the norms do not prune
                # for this model; full-width products from now on, in blocks of block_size
                prune, block = False, block_size


def _heap(faiss, vals: np.ndarray, ids: np.ndarray):
    """faiss's k-largest heaps over the rows of ``vals``/``ids`` (``[rows, k]``, C-contiguous).

    The heap object holds raw pointers only: the caller keeps ``vals`` and ``ids`` alive."""
    heap = faiss.float_minheap_array_t()
    heap.nh, heap.k = vals.shape
    heap.val, heap.ids = faiss.swig_ptr(vals), faiss.swig_ptr(ids)
    return heap


def _masked_positions(masks, users: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row in block, scan position) of the block's masked items, sorted by position."""
    rows, pos = [], []
    for m in masks:
        r, c = _cached(m, ("coords", users.tobytes()), lambda m=m: _block_coords(m, users))
        rows.append(r)
        pos.append(position[c])
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    rows, pos = np.concatenate(rows), np.concatenate(pos)
    o = np.argsort(pos, kind="stable")
    return rows[o], pos[o]


@functools.lru_cache(maxsize=64)
def _takes_out_of(func) -> bool:
    try:
        return "out" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _takes_out(score_fn) -> bool:
    return _takes_out_of(getattr(score_fn, "__func__", score_fn))


def _select_top(scores: torch.Tensor, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite scores of each row, best first; ``-1`` where none is left.

    Written on faiss's heap selection (C++, rows shared over OpenMP threads) rather than
    ``torch.topk``: on baby-like's [512 × 7,050] blocks it is ~1.5× faster, and a masked (-inf)
    item never enters the heap, so it is never returned. Ties are broken arbitrarily, as by
    ``torch.topk`` (and by MMRec, which uses it). NaN scores are never selected.
    """
    faiss = import_faiss()  # deferred: ~0.2 s to import

    x = scores.detach()
    if x.dtype != torch.float32:
        x = x.float()
    x = np.ascontiguousarray(x.numpy())
    b, n = x.shape
    ids = np.full((b, k), -1, dtype=np.int64)
    if b == 0 or n == 0:
        return ids
    vals = np.empty((b, k), dtype=np.float32)
    heap = _heap(faiss, vals, ids)
    faiss.omp_set_num_threads(torch.get_num_threads())
    heap.heapify()
    heap.addn(n, faiss.swig_ptr(x), 0, 0, b)
    heap.reorder()
    return ids


# Per-matrix cache of what every evaluation of the same split recomputes (the flat positions of
# the training and ground-truth items of each user block): about 10% of an evaluation on
# baby-like. Keyed by the matrix object itself (a weak reference, so a freed matrix whose id is
# reused is never mistaken for the old one); small: a few MB per split.
_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def _cached(m: sp.csr_matrix, key: tuple, make):
    entry = _CACHE.get(id(m))
    if entry is None or entry[0]() is not m:
        for dead in [i for i, (ref, _) in _CACHE.items() if ref() is None]:
            del _CACHE[dead]
        entry = _CACHE[id(m)] = (weakref.ref(m), {})
    store = entry[1]
    if key not in store:
        store[key] = make()
    return store[key]


def _flat_coords(m: sp.csr_matrix, users: np.ndarray, n_cols: int) -> np.ndarray:
    rows, cols = _block_coords(m, users)
    return rows * n_cols + cols


def _block_coords(m: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row-in-block, column) of the non-zeros of ``m[users]``, without building the sub-matrix."""
    starts, ends = m.indptr[users], m.indptr[users + 1]
    counts = ends - starts
    rows = np.repeat(np.arange(len(users), dtype=np.int64), counts)
    offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = m.indices[np.repeat(starts, counts) + offs].astype(np.int64)
    return rows, cols


def ranked_hits(score_fn, users: np.ndarray, truths: dict[str, sp.csr_matrix], k: int,
                mask: sp.csr_matrix | None = None, block_size: int = DEFAULT_BLOCK,
                extra_mask: sp.csr_matrix | None = None) -> dict[str, np.ndarray]:
    """Rank once for ``users`` and mark, for each split, which of the top-``k`` items are relevant.

    Returns:
        split -> bool ``[len(users), k]``: ``hit[u, r]`` is True when the item ranked ``r`` for
        ``users[u]`` is in that split's row of ``truths``.
    """
    hits = {s: np.zeros((len(users), k), dtype=bool) for s in truths}
    if not truths:
        return hits
    n_items = next(iter(truths.values())).shape[1]
    # [block, n_items] bit labels, bit j set where the item is in split j; allocated once (again
    # only if a later block is larger: the pruned ranking uses larger blocks than a fallback)
    lab = None
    for s, ub, top in _ranked_blocks(score_fn, users, k, [mask, extra_mask], block_size):
        if lab is None or lab.shape[0] < len(ub):
            lab = torch.zeros((len(ub), n_items), dtype=torch.int64 if len(truths) > 8 else torch.uint8)
            flat_lab = lab.view(-1)
        flats = []
        for j, (name, t) in enumerate(truths.items()):
            flat = _cached(t, ("truth", ub.tobytes(), n_items),
                           lambda t=t, ub=ub, n=n_items: torch.from_numpy(_flat_coords(t, ub, n)))
            flat_lab[flat] |= 1 << j
            flats.append(flat)
        top_t = torch.from_numpy(top)
        labels = lab[:len(ub)].gather(1, top_t.clamp(min=0))
        labels[top_t < 0] = 0
        for j, name in enumerate(truths):
            hits[name][s:s + len(ub)] = ((labels >> j) & 1).bool().numpy()
        for flat in flats:  # clear only what was set, so the buffer is reused without a full pass
            flat_lab[flat] = 0
    return hits


def evaluation_groups(train: sp.csr_matrix, truths: dict[str, sp.csr_matrix],
                      extra_masks: dict[str, sp.csr_matrix] | None, require_train: bool = True):
    """Split the evaluation into ranking passes: ``[(group, extra mask, users per split, all users)]``.

    Splits without an extra mask share one pass. Users with no ground truth in a split are
    skipped for that split; with ``require_train`` users with no training interaction are
    skipped too (MMRec's ``filter_out_cod_start_users``).
    """
    has_train = np.diff(train.indptr) > 0
    extra_masks = extra_masks or {}
    shared = {s: t for s, t in truths.items() if s not in extra_masks}
    out = []
    for group, extra in [(shared, None)] + [({s: truths[s]}, extra_masks[s]) for s in truths if s in extra_masks]:
        if not group:
            continue
        per_split = {}
        for s, t in group.items():
            u = np.flatnonzero(np.diff(t.indptr) > 0)
            per_split[s] = u[has_train[u]] if require_train else u
        out.append((group, extra, per_split, np.unique(np.concatenate(list(per_split.values())))))
    return out


def evaluate_splits(score_fn, train: sp.csr_matrix, truths: dict[str, sp.csr_matrix], *,
                    ks=DEFAULT_KS, metrics=METRICS, block_size: int = DEFAULT_BLOCK,
                    extra_masks: dict[str, sp.csr_matrix] | None = None,
                    require_train: bool = True) -> dict[str, dict[str, float]]:
    """Evaluate several splits (e.g. valid and test) from **one** ranking pass.

    Only training items are masked (protocol §3.4), so valid and test share the same ranked
    list and each user is scored once. Users with no ground truth in a split are skipped for
    that split; with ``require_train`` users with no training interaction are skipped too
    (MMRec's ``filter_out_cod_start_users``).

    Args:
        extra_masks: split -> additional items to mask for that split (e.g. valid items when
            evaluating test). Splits with an extra mask get their own ranking pass.
    """
    kmax = max(ks)
    results = {}
    for group, extra, per_split, all_users in evaluation_groups(train, truths, extra_masks, require_train):
        hits = ranked_hits(score_fn, all_users, group, kmax, train, block_size, extra)
        for s, u in per_split.items():
            hit = hits[s] if len(u) == len(all_users) else hits[s][np.searchsorted(all_users, u)]
            results[s] = metrics_from_hits(hit, np.diff(group[s].indptr)[u], ks, metrics)
    return {s: results[s] for s in truths}
