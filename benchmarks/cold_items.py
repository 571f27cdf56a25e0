#!/usr/bin/env python3
"""Cold-start items: do the content features rank items that no user was seen with?

    python benchmarks/cold_items.py --data /work/shared/data/real/tiktok-diffmm --models vbpr,freedom,pgl

A seeded share of the items (``--share``, 10%) is held out entirely: every interaction with them, in
every split, is removed, and each model trains to early stopping on what is left (the warm items,
re-indexed; the usual protocol, patience 20 on the warm valid split). Then each user who interacted
with a held-out item (in any split) and has a warm training item ranks the held-out items only: the
user's vector against each cold item's vector from its raw features (``Recommender.embed_items``, the
path ``POST /items`` serves). Ground truth: the user's cold interactions. Beside the models:

- ``random``: the expected Recall@K of a random order (K / number of cold items, per user);
- ``popularity-oracle``: not a method but a yardstick: the cold items ordered by their true number of
  held-out interactions, one list for all users (what predicting popularity alone could reach);
- ``content-centroid``: no training at all; a user's profile is the mean of their warm training items'
  L2-normalised features, per modality, and an item's score the sum over modalities of its cosine with
  the profile (the item-kNN content baseline, ItemKNN-CBF, in its cheapest form).

An ID-only model cannot score an item it never saw, so ``random`` is what it would get.
Writes ``benchmarks/results/<dataset>/cold-items.json`` (``cold-items-splitN.json`` for
``--split-seed N``; ``--out``, ``--name``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, overrides_for  # noqa: E402  (puts src/ on the path)
from prismrec import Recommender, load_dataset  # noqa: E402
from prismrec.bundle import write_json  # noqa: E402
from prismrec.data.dataset import Dataset  # noqa: E402
from prismrec.evaluation.metrics import metrics_from_hits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KS = (10, 20, 50)


def hold_out_items(ds: Dataset, share: float, seed: int) -> tuple[Dataset, np.ndarray]:
    """``(warm dataset, cold item indices)``: a seeded ``share`` of the items removed from every split."""
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(ds.n_items, size=max(1, round(share * ds.n_items)), replace=False))
    warm = np.setdiff1d(np.arange(ds.n_items), cold)
    warm_ds = Dataset(name=f"{ds.name}-warm", train=ds.train[:, warm], valid=ds.valid[:, warm],
                      test=ds.test[:, warm], features={m: f[warm] for m, f in ds.features.items()},
                      user_ids=ds.user_ids, item_ids=ds.item_ids[warm], cache_dir=None)
    return warm_ds, cold


def cold_truth(ds: Dataset, warm_ds: Dataset, cold: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
    """Users to rank (a cold interaction in any split and a warm training item) and their cold rows."""
    every = ((ds.train + ds.valid + ds.test)[:, cold] > 0).astype(np.float32).tocsr()
    users = np.flatnonzero((np.diff(every.indptr) > 0) & (np.diff(warm_ds.train.indptr) > 0))
    return users, every[users]


def rank_metrics(scores: np.ndarray, truth: sp.csr_matrix) -> dict[str, float]:
    """Recall/NDCG/... at ``KS`` of ``scores [U, C]`` against ``truth [U, C]`` (no masking: no cold
    item is in any user's training row)."""
    k = min(max(KS), scores.shape[1])
    top = torch.topk(torch.from_numpy(scores), k, dim=1).indices.numpy()
    hit = np.take_along_axis(truth.toarray() > 0, top, axis=1)
    return metrics_from_hits(hit, np.diff(truth.indptr), [x for x in KS if x <= k], ("recall", "ndcg", "hit"))


def centroid_scores(warm_ds: Dataset, users: np.ndarray, cold_feats: dict[str, np.ndarray]) -> np.ndarray:
    """Sum over modalities of cos(mean of the user's normalised warm training items, cold item)."""
    rows = warm_ds.train[users]
    rows = sp.diags(1.0 / np.maximum(np.diff(rows.indptr), 1)) @ rows          # row means
    total = 0.0
    for m, f in warm_ds.features.items():
        unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        prof = np.asarray(rows @ unit)
        prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-12)
        c = cold_feats[m] / np.maximum(np.linalg.norm(cold_feats[m], axis=1, keepdims=True), 1e-12)
        total = total + prof @ c.T
    return np.asarray(total, dtype=np.float32)


def user_vectors(rec: Recommender) -> np.ndarray:
    with rec.model.evaluating():
        return rec.model.embeddings()[0].detach().float().cpu().numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder")
    ap.add_argument("--models", default="vbpr,freedom,pgl",
                    help="comma-separated models with a cold-start path (Model.embed_items)")
    ap.add_argument("--share", type=float, default=0.1, help="share of the items held out (default 0.1)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the held-out draw")
    ap.add_argument("--set", action="append", default=[],
                    help="config override key=value (every model) or model:key=value (that model only)")
    ap.add_argument("--max-minutes", type=float, default=None, help="time budget of each model's training")
    ap.add_argument("--name", default="", help="result file name (default cold-items, -splitN for another draw)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if not 0 < args.share < 1:
        ap.error(f"--share must be in (0, 1), got {args.share}")

    ds = load_dataset(args.data)
    warm_ds, cold = hold_out_items(ds, args.share, args.split_seed)
    users, truth = cold_truth(ds, warm_ds, cold)
    cold_feats = {m: np.asarray(f[cold]) for m, f in ds.features.items()}
    n_pos = np.diff(truth.indptr)
    print(f"{ds.name}: {len(cold)} cold items, {len(users)} users to rank them for "
          f"({int(n_pos.sum())} cold interactions); warm train {warm_ds.train.nnz} of {ds.train.nnz}", flush=True)
    name = args.name or ("cold-items" + (f"-split{args.split_seed}" if args.split_seed else ""))
    out_path = Path(args.out) / ds.name / f"{name}.json"
    result = {
        "dataset": ds.name, "command": "python benchmarks/cold_items.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(), "share": args.share, "split_seed": args.split_seed, "cold_items": int(len(cold)),
        "users": int(len(users)), "cold_interactions": int(n_pos.sum()),
        # a random order puts each cold item in the top K with probability K / C: E[recall@K] = K / C
        "random": {f"recall@{k}": min(k, len(cold)) / len(cold) for k in KS},
        "content-centroid": rank_metrics(centroid_scores(warm_ds, users, cold_feats), truth),
        # not a method: the cold items ordered by how often they were really interacted with (the held-out
        # data itself), the same list for every user; how far a non-personal ranking could get
        "popularity-oracle": rank_metrics(np.broadcast_to(np.asarray(truth.sum(axis=0), dtype=np.float32),
                                                          truth.shape).copy(), truth),
        "models": {},
    }
    print("content-centroid", json.dumps(result["content-centroid"]), flush=True)
    for model in args.models.split(","):
        rec = Recommender(model, checkpoint=False, **overrides_for(model, args.set))
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        rec.fit(warm_ds, show_progress=False, max_minutes=args.max_minutes)
        scores = user_vectors(rec)[users] @ rec.embed_items(cold_feats).T
        m = rec.metrics
        result["models"][model] = {
            "cold": rank_metrics(scores, truth),
            "warm_test": {k: round(v, 5) for k, v in m["test"].items() if k.split("@")[0] in ("recall", "ndcg")},
            "epochs": m["epochs"], "best_epoch": m["best_epoch"], "stop_reason": m["stop_reason"],
            "sec_per_epoch": round(m["sec_per_epoch"], 3), "train_minutes": round((time.perf_counter() - t0) / 60, 2),
            "config": dict(rec.config.items()), "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
        }
        print(model, json.dumps(result["models"][model]["cold"]), "warm test R@20",
              result["models"][model]["warm_test"].get("recall@20"), flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(out_path, result)  # after each model: a run cut short keeps what finished
    write_json(out_path, result)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
