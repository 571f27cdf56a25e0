"""Validation helpers shared by every loader: each failure names file, line, field and expectation."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from prismrec.errors import DataError

log = logging.getLogger("prismrec")

SPLIT_NAMES = {0: "train", 1: "valid", 2: "test"}


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing {what}: file not found", file=str(path))
    return path


def require_columns(df: pd.DataFrame, columns: list[str], file: Path) -> None:
    for c in columns:
        if c not in df.columns:
            raise DataError(f"missing column '{c}'; found columns {list(df.columns)}",
                            file=str(file), line=1, field=c)


def integer_column(df: pd.DataFrame, col: str, file: Path, *, header_lines: int = 1,
                   allowed: set[int] | None = None, nonnegative: bool = True) -> np.ndarray:
    """The column as int64; the first non-integer (or out-of-range) value is reported by line.

    ``header_lines`` is the number of file lines before the first data row, so that row ``r``
    (0-based) is reported as line ``r + header_lines + 1``.
    """
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() | ~np.isfinite(num.to_numpy(dtype=np.float64, na_value=np.nan))
    if not bad.any():
        bad = num != np.floor(num)
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"expected an integer, got {raw.iloc[r]!r}", file=str(file),
                        line=r + header_lines + 1, field=col)
    vals = num.to_numpy().astype(np.int64)
    if nonnegative and (vals < 0).any():
        r = int(np.flatnonzero(vals < 0)[0])
        raise DataError(f"expected a non-negative id, got {vals[r]}", file=str(file),
                        line=r + header_lines + 1, field=col)
    if allowed is not None:
        ok = np.isin(vals, sorted(allowed))
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            raise DataError(f"expected one of {sorted(allowed)}, got {vals[r]}", file=str(file),
                            line=r + header_lines + 1, field=col)
    return vals


def check_features(feat: np.ndarray, n_items: int, file: Path, modality: str) -> np.ndarray:
    """Shape [n_items, d], finite values; returns a float32 array."""
    if feat.dtype == object or not np.issubdtype(feat.dtype, np.number):
        raise DataError(f"expected a numeric array, got dtype {feat.dtype}", file=str(file), field=modality)
    if feat.ndim != 2:
        raise DataError(f"expected a 2-D array [items, dim], got shape {list(feat.shape)}",
                        file=str(file), field=modality)
    if feat.shape[0] != n_items:
        raise DataError(f"expected {n_items} rows (one per item), got {feat.shape[0]}",
                        file=str(file), field=modality)
    feat = np.asarray(feat, dtype=np.float32)
    finite = np.isfinite(feat)
    if not finite.all():
        r, c = map(int, np.argwhere(~finite)[0])
        raise DataError(f"expected finite values, got {feat[r, c]} at item row {r}, column {c}",
                        file=str(file), field=modality)
    return feat


def dedupe(users: np.ndarray, items: np.ndarray, file: Path, *extra: np.ndarray, header_lines: int = 1,
           order_key: np.ndarray | None = None):
    """Drop repeated (user, item) pairs, keeping the earliest, with a warning naming the first repeat.

    "Earliest" is the smallest ``order_key`` (a timestamp) when given, ties and no key going to the
    first in file order. Arrays are in file order, so data row ``r`` is on line ``r + header_lines + 1``.
    Loaders call this *before* splitting, so that a repeat can never push a user's only held-out
    interaction out of its split (issue 22).
    """
    key = users.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
    if order_key is None:
        _, first = np.unique(key, return_index=True)
    else:
        order = np.lexsort((order_key, key))  # stable: equal keys keep file order
        sk = key[order]
        first = order[np.r_[True, sk[1:] != sk[:-1]]]
    if len(first) == len(key):
        return (users, items, *extra)
    keep = np.zeros(len(key), dtype=bool)
    keep[first] = True
    r = int(np.flatnonzero(~keep)[0])
    log.warning("%s: %d duplicate (user, item) interactions dropped, keeping the %s of each "
                "(first repeat on line %d: user %s, item %s)", file, int((~keep).sum()),
                "first" if order_key is None else "earliest", r + header_lines + 1, users[r], items[r])
    return (users[keep], items[keep], *(e[keep] for e in extra))


def id_bound(n_rows: int) -> int:
    """Largest number of users or items an integer-indexed file of ``n_rows`` interactions may
    imply without another source for it: ``max(1000, 10 * n_rows)``.

    Formats whose ids are row indices (MMRec) size the catalogue as ``max(id) + 1``. Real data has
    at most one entity per interaction, plus the cold items a feature file lists; the factor 10
    leaves room for catalogues with many items without interactions while refusing a typo such as
    an id of ``10**12`` (a 7 TiB allocation) or ``10**6`` among a few thousand rows (a million empty
    items) before anything is allocated.
    """
    return max(1000, 10 * int(n_rows))


def check_id_bound(ids: np.ndarray, file: Path, field: str, *, header_lines: int = 1,
                   limit: int | None = None, limit_source: str | None = None) -> None:
    """Refuse an index-like id at or above ``limit`` (default :func:`id_bound` of the row count)."""
    if len(ids) == 0:
        return
    bound = id_bound(len(ids)) if limit is None else int(limit)
    r = int(np.argmax(ids))
    v = int(ids[r])
    if v < bound:
        return
    why = (f"{limit_source} has {bound:,} rows" if limit_source else
           f"{len(ids):,} interactions allow ids below max(1000, 10 x rows) = {bound:,}")
    raise DataError(f"id {v:,} would make a catalogue of {v + 1:,} (ids here are 0-based row indices, "
                    f"n = max(id) + 1) but {why}; remap the ids to 0..n-1 (or use the generic "
                    "interactions.csv format, whose ids may be any labels)", file=str(file),
                    line=r + header_lines + 1, field=field)


def split_matrices(users, items, labels, shape, file: Path, split_field: str):
    """Three CSR matrices from (user, item, label) triples; an empty split is an error."""
    mats = []
    for code, name in SPLIT_NAMES.items():
        sel = labels == code
        if not sel.any():
            raise DataError(f"the {name} split is empty (no rows with {split_field}={code}); "
                            "every split needs at least one interaction", file=str(file), field=split_field)
        mats.append(sp.csr_matrix((np.ones(int(sel.sum()), np.float32), (users[sel], items[sel])), shape=shape))
    return mats
