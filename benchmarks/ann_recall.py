#!/usr/bin/env python3
"""Recall@10 and speed of the serving ANN index (faiss) against exact search, in one run.

    python benchmarks/ann_recall.py                          # 200k items, 64-d, HNSW
    python benchmarks/ann_recall.py --kind ivf --items 50000

Items and queries are synthetic but shaped like a trained model's embeddings: a rank-16 signal
plus isotropic noise, with log-normally spread norms (popular items have longer vectors). Both
searches answer one query at a time on one thread, as a serving request does, through the same
``prismrec.serve.index`` classes the server uses. Recall@10 = |ANN top-10 ∩ exact top-10| / 10,
averaged over the queries; ``ann_speedup`` = exact seconds per query / ANN seconds per query.

Results are merged into ``benchmarks/results/serving.json`` (keys ``ann_*``, ``items``).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _results import machine, merge_result  # noqa: E402  (puts src/ on the path)

from prismrec.serve.index import ExactSearcher, FaissSearcher  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"


def embeddings(n: int, dim: int, rank: int, seed: int) -> torch.Tensor:
    """``[n, dim]`` vectors: rank-``rank`` structure + noise, log-normal norms."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, dim, generator=torch.Generator().manual_seed(12345)) / rank ** 0.5
    x = torch.randn(n, rank, generator=g) @ basis + 0.25 * torch.randn(n, dim, generator=g)
    return x * torch.empty(n, 1).log_normal_(0.0, 0.3, generator=g)


def per_query(search, queries: torch.Tensor, k: int) -> tuple[np.ndarray, float]:
    """Top-k indices ``[q, k]`` and mean seconds per query, one query at a time."""
    search(queries[:1], k)  # warm-up
    out = np.empty((len(queries), k), dtype=np.int64)
    t0 = time.perf_counter()
    for j in range(len(queries)):
        out[j] = search(queries[j:j + 1], k)[1][0].numpy()
    return out, (time.perf_counter() - t0) / len(queries)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--kind", choices=("hnsw", "ivf"), default="hnsw")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    import faiss
    load0 = os.getloadavg()[0]
    items = embeddings(args.items, args.dim, args.rank, args.seed)
    queries = embeddings(args.queries, args.dim, args.rank, args.seed + 1)
    faiss.omp_set_num_threads(args.build_threads)
    torch.set_num_threads(args.build_threads)
    ann = FaissSearcher(items, args.kind, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                        ef_search=args.ef_search, nlist=args.nlist, nprobe=args.nprobe)
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    exact = ExactSearcher(items)
    exact_top, exact_s = per_query(exact.search, queries, args.k)
    ann_top, ann_s = per_query(ann.search, queries, args.k)
    recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ann_top, exact_top)]))
    params = ({"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "ef_search": args.ef_search}
              if args.kind == "hnsw" else {"nlist": ann.index.nlist, "nprobe": ann.index.nprobe})
    result = {
        f"ann_recall@{args.k}": round(recall, 4),
        "ann_speedup": round(exact_s / ann_s, 2),
        "items": args.items,
        "ann": {"kind": args.kind, **params, "dim": args.dim, "queries": args.queries,
                "exact_ms_per_query": round(exact_s * 1e3, 3), "ann_ms_per_query": round(ann_s * 1e3, 3),
                "build_seconds": round(ann.build_seconds, 1), "build_threads": args.build_threads,
                "query_threads": 1, "data": f"synthetic rank-{args.rank} + noise, log-normal norms, seed {args.seed}",
                "command": shlex.join(["python", "benchmarks/ann_recall.py",
                                       *(argv if argv is not None else sys.argv[1:])]),
                "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
                "machine": machine(), "faiss": faiss.__version__,
                "when": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    merge_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
