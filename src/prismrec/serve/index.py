"""Top-k item search for serving: exact for small catalogues, faiss (inner product) above a size.

An :class:`ItemIndex` is immutable. Registering new items returns a *new* index that shares the
base searcher and searches the (few) new items exactly beside it, so a request that holds the old
index keeps a consistent view while another request registers an item.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from prismrec._faiss import import_faiss

log = logging.getLogger("prismrec")


class ExactSearcher:
    """Maximum inner product by one matrix product and ``torch.topk``.

    Args:
        vectors: item vectors ``[n, d]``.
    """

    kind = "exact"

    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors.contiguous()

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        """Inner products ``[q, n]`` of queries ``[q, d]`` with every item."""
        return queries @ self.vectors.T

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [q, k'], indices [q, k'])``, best first, ``k' = min(k, n)``."""
        top = torch.topk(self.scores(queries), min(k, len(self.vectors)), dim=1)
        return top.values, top.indices


class FaissSearcher:
    """Approximate maximum inner product with faiss (HNSW graph or IVF lists, exact inner products
    on the candidates it visits).

    Args:
        vectors: item vectors ``[n, d]``.
        kind: ``"hnsw"`` (``IndexHNSWFlat``) or ``"ivf"`` (``IndexIVFFlat``).
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths.
        nlist, nprobe: IVF list count (capped at n/39, faiss's minimum training ratio) and lists searched.
    """

    def __init__(self, vectors: torch.Tensor, kind: str = "hnsw", *, hnsw_m: int = 32, ef_construction: int = 80,
                 ef_search: int = 64, nlist: int = 1024, nprobe: int = 64):
        faiss = import_faiss()
        x = np.ascontiguousarray(vectors.detach().cpu().numpy(), dtype=np.float32)
        n, d = x.shape
        t0 = time.perf_counter()
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.add(x)
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            nlist = max(1, min(nlist, n // 39))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.add(x)
            index.nprobe = min(nprobe, nlist)
            self._quantizer = quantizer  # faiss does not own it from Python: keep it alive
        else:
            raise ValueError(f"unknown index kind '{kind}'; expected 'hnsw' or 'ivf'")
        self.kind, self.index, self.n = kind, index, n
        self.build_seconds = time.perf_counter() - t0
        log.info("faiss %s index over %d items built in %.1f s", kind, n, self.build_seconds)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [q, k'], indices [q, k'])``; missing hits have index -1 and score -inf."""
        q = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
        scores, idx = self.index.search(q, min(k, self.n))
        scores = np.where(idx < 0, -np.inf, scores).astype(np.float32)
        return torch.from_numpy(scores), torch.from_numpy(idx.astype(np.int64))


def make_searcher(vectors: torch.Tensor, *, threshold: int, kind: str = "hnsw", **options):
    """Exact search below ``threshold`` items, a :class:`FaissSearcher` from there on."""
    if len(vectors) < threshold:
        return ExactSearcher(vectors)
    return FaissSearcher(vectors, kind, **options)


class ItemIndex:
    """Items' vectors plus a searcher over the base catalogue; registered items are searched exactly.

    Item ``j`` of the index is base item ``j`` for ``j < n_base`` and registered item
    ``j - n_base`` after that.

    Args:
        base: base item vectors ``[n_base, d]`` (kept for exact fallback and scoring).
        searcher: an :class:`ExactSearcher` or :class:`FaissSearcher` built over ``base``.
        extra: registered items' vectors ``[n_extra, d]``.
    """

    def __init__(self, base: torch.Tensor, searcher, extra: torch.Tensor | None = None):
        self.base, self.searcher = base, searcher
        self.extra = extra if extra is not None else base.new_zeros(0, base.shape[1])
        self.n_base = len(base)

    @property
    def n_items(self) -> int:
        return self.n_base + len(self.extra)

    @property
    def kind(self) -> str:
        return self.searcher.kind

    def vectors(self, items: np.ndarray) -> torch.Tensor:
        """Vectors ``[len(items), d]`` of internal item indices (base or registered)."""
        items = torch.as_tensor(np.asarray(items, dtype=np.int64))
        if len(self.extra) == 0:
            return self.base[items]
        return torch.cat([self.base, self.extra])[items]

    def with_items(self, vectors: torch.Tensor) -> "ItemIndex":
        """A new index that also holds ``vectors`` ``[m, d]`` (this one is unchanged)."""
        return ItemIndex(self.base, self.searcher, torch.cat([self.extra, vectors.to(self.base.dtype)]))

    def exact_scores(self, query: torch.Tensor) -> torch.Tensor:
        """Inner products ``[1, n_items]`` of one query ``[1, d]`` with every item."""
        s = query @ self.base.T
        return s if len(self.extra) == 0 else torch.cat([s, query @ self.extra.T], dim=1)

    def topk(self, query: torch.Tensor, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` internal item indices and scores for one query ``[1, d]``, ``exclude`` left out.

        Exact search reproduces ``Recommender.recommend`` exactly (same product, mask and topk).
        """
        exclude = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
        if isinstance(self.searcher, ExactSearcher):
            return self._exact(query, k, exclude)
        want = min(k, self.n_items - len(np.unique(exclude)))
        s, i = self.searcher.search(query, k + len(exclude))
        s, i = s[0].numpy(), i[0].numpy()
        keep = (i >= 0) & ~np.isin(i, exclude)
        s, i = s[keep], i[keep]
        if len(self.extra):
            es = (query @ self.extra.T)[0].numpy()
            ei = np.arange(self.n_base, self.n_items)
            ok = ~np.isin(ei, exclude)
            s, i = np.concatenate([s, es[ok]]), np.concatenate([i, ei[ok]])
            order = np.argsort(-s, kind="stable")
            s, i = s[order], i[order]
        if len(i) < want:  # the graph search came back short (long history): answer exactly
            return self._exact(query, k, exclude)
        return i[:k], s[:k]

    def _exact(self, query, k, exclude):
        scores = self.exact_scores(query)
        if len(exclude):
            scores[0, torch.from_numpy(exclude)] = -torch.inf
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        vals, idx = top.values[0].numpy(), top.indices[0].numpy()
        ok = np.isfinite(vals)
        return idx[ok], vals[ok]


def normalize(vectors: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero): inner product becomes cosine similarity."""
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
