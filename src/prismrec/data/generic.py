"""Generic loader: an interactions CSV/Parquet plus one feature file per modality.

Layout of a generic dataset folder (or pass the interactions file itself)::

    interactions.csv | interactions.parquet   columns: user, item, [timestamp], [split]
    <modality>_feat.npy                        rows in item order (see below)
    <modality>_feat.parquet                    column 'item' + a list column or numeric columns
    items.json                                 optional: external item ids in .npy row order

Row order of ``.npy`` features: ``items.json`` when present (``prismrec extract`` writes it);
otherwise the item ids must be the integers ``0..n-1`` and row ``i`` is item ``i`` (the catalogue
is then the ``.npy``'s rows, and an id at or beyond them is an error). Without ``items.json`` or a
``.npy`` feature file, ids are labels: the catalogue is the distinct items of the interactions,
sorted (numerically when every id is an integer), so a large id never allocates anything.
``split`` holds 0/1/2 or train/valid/test; without it the data is split per user, by
``timestamp`` when present, else randomly with ``seed``.

Repeated (user, item) rows are dropped **before** splitting, keeping the earliest (by
``timestamp`` when present, else the first in the file), with a warning giving the count, so
that a repeat purchase can never take a user's only held-out item out of its split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.data.dataset import Dataset
from prismrec.data.split import per_user_split
from prismrec.data.validate import (check_features, check_id_bound, dedupe, integer_column,
                                    require_columns, require_file, split_matrices)
from prismrec.errors import DataError

SPLIT_CODES = {"0": 0, "1": 1, "2": 2, "train": 0, "valid": 1, "validation": 1, "test": 2}


def read_table(path: Path) -> pd.DataFrame:
    path = require_file(path, "table")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        sep = "\t" if path.suffix in (".tsv", ".inter") else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, OSError, ValueError) as e:
        raise DataError(f"cannot read table ({e})", file=str(path)) from None


def find_interactions(folder: Path) -> Path:
    for name in ("interactions.parquet", "interactions.csv", "interactions.tsv"):
        if (folder / name).is_file():
            return folder / name
    raise DataError("missing interactions: expected interactions.csv, .tsv or .parquet", file=str(folder))


def load_generic(path: str | Path, *, seed: int = 0, user_col: str = "user", item_col: str = "item",
                 time_col: str = "timestamp", split_col: str = "split",
                 modalities: list[str] | None = None) -> Dataset:
    """Load interactions (CSV/TSV/Parquet) and the modality feature files beside them.

    Args:
        path: a folder with ``interactions.*`` or the interactions file itself.
        seed: seed of the random split when there is neither a split nor a timestamp column.
        modalities: load only these modalities (default: every ``*_feat.*`` file found).
    """
    path = Path(path)
    if path.is_dir():
        folder, inter = path, find_interactions(path)
    else:
        folder, inter = path.parent, require_file(path, "interaction file")
    df = read_table(inter)
    require_columns(df, [user_col, item_col], inter)
    if len(df) == 0:
        raise DataError("no interactions (only a header)", file=str(inter))
    u_ext = df[user_col].astype(str).to_numpy()
    i_ext = df[item_col].astype(str).to_numpy()
    for col, vals in ((user_col, u_ext), (item_col, i_ext)):
        empty = vals == ""
        if empty.any():
            raise DataError("expected an id, got an empty value", file=str(inter),
                            line=int(np.flatnonzero(empty)[0]) + 2, field=col)

    item_order, order_source = _item_order(folder, i_ext, inter, item_col, modalities)
    user_ids, users = np.unique(u_ext, return_inverse=True)
    user_ids = _maybe_int(user_ids)
    item_index = {v: k for k, v in enumerate(item_order)}
    unknown = [v for v in pd.unique(i_ext) if v not in item_index]
    if unknown:
        r = int(np.flatnonzero(i_ext == unknown[0])[0])
        raise DataError(f"item '{unknown[0]}' is not in {order_source}", file=str(inter), line=r + 2,
                        field=item_col)
    items = pd.Series(i_ext).map(item_index).to_numpy(dtype=np.int64)
    time_key = (integer_column(df, time_col, inter, nonnegative=False).astype(np.float64)
                if time_col in df.columns else None)
    n_rows = len(users)
    keep = np.arange(n_rows)
    users, items, keep = dedupe(users, items, inter, keep, order_key=time_key)

    if split_col in df.columns:
        raw = df[split_col].astype(str).str.strip().str.lower()
        codes = raw.map(SPLIT_CODES)
        if codes.isna().any():
            r = int(np.flatnonzero(codes.isna().to_numpy())[0])
            raise DataError(f"expected 0/1/2 or train/valid/test, got {df[split_col].iloc[r]!r}",
                            file=str(inter), line=r + 2, field=split_col)
        labels = codes.to_numpy(dtype=np.int64)[keep]
    else:
        key = time_key[keep] if time_key is not None else np.random.default_rng(seed).random(n_rows)[keep]
        labels = per_user_split(users, key)

    shape = (len(user_ids), len(item_order))
    train, valid, test = split_matrices(users, items, labels, shape, inter, split_col)
    features, dtypes = _load_features(folder, len(item_order), item_order, modalities)
    return Dataset(name=folder.name if path.is_dir() else inter.stem, train=train, valid=valid, test=test,
                   features=features, user_ids=user_ids, item_ids=_maybe_int(np.asarray(item_order)),
                   provenance={"format": "generic", "files": [str(inter)], "feature_dtypes": dtypes,
                               "dropped_duplicates": n_rows - len(users), "item_order": order_source})


def _item_order(folder: Path, i_ext: np.ndarray, inter: Path, item_col: str,
                modalities: list[str] | None) -> tuple[list[str], str]:
    """External item ids in internal order, and where that order came from."""
    ids_file = folder / "items.json"
    if ids_file.is_file():
        try:
            ids = json.loads(ids_file.read_text())
            if not isinstance(ids, list):
                raise TypeError(f"got {type(ids).__name__}")
            ids = [str(v) for v in ids]
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
            raise DataError(f"expected a JSON list of item ids ({e})", file=str(ids_file)) from None
        if len(set(ids)) != len(ids):
            raise DataError("duplicate item ids", file=str(ids_file))
        return ids, "items.json"
    uniq = pd.unique(i_ext)
    as_int = pd.to_numeric(pd.Series(uniq), errors="coerce")
    numeric = bool(as_int.notna().all() and (as_int >= 0).all() and (as_int == np.floor(as_int)).all())
    npys = [f for f in sorted(folder.glob("*_feat.npy"))
            if modalities is None or f.name.rsplit("_feat.", 1)[0] in modalities]
    if npys:  # row i of a .npy is item i: the catalogue is the rows
        if not numeric:
            ok = (as_int.notna() & (as_int >= 0) & (as_int == np.floor(as_int))).to_numpy()
            bad = uniq[int(np.flatnonzero(~ok)[0])]
            r = int(np.flatnonzero(i_ext == bad)[0])
            raise DataError(f"{npys[0].name} has no items.json beside it, so its row i is item i and item ids "
                            f"must be the integers 0..n-1, got {bad!r}; add items.json (the ids in row order)",
                            file=str(inter), line=r + 2, field=item_col)
        try:
            n = int(np.load(npys[0], mmap_mode="r", allow_pickle=False).shape[0])
        except (ValueError, OSError, IndexError) as e:
            raise DataError(f"expected a plain numeric .npy array ({e})", file=str(npys[0])) from None
        vals = pd.to_numeric(pd.Series(i_ext)).to_numpy(dtype=np.float64)
        check_id_bound(vals, inter, item_col, limit=n, limit_source=npys[0].name)
        return [str(k) for k in range(n)], npys[0].name
    if numeric:
        return [str(v) for v in uniq[np.argsort(as_int.to_numpy(dtype=np.float64), kind="stable")]], \
            "the interactions"
    return sorted(uniq.tolist()), "the interactions"


def _maybe_int(ids: np.ndarray) -> np.ndarray:
    try:
        as_int = ids.astype(np.int64)
        if (as_int.astype(str) == ids.astype(str)).all():
            return as_int
    except ValueError:
        pass
    return ids.astype(str)


def _load_features(folder: Path, n_items: int, item_order: list[str], modalities):
    feats, dtypes = {}, {}
    for f in sorted(folder.glob("*_feat.npy")) + sorted(folder.glob("*_feat.parquet")):
        m = f.name.rsplit("_feat.", 1)[0]
        if (modalities is not None and m not in modalities) or m in feats:
            continue
        if f.suffix == ".npy":
            try:
                arr = np.load(f, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise DataError(f"expected a plain numeric .npy array ({e})", file=str(f), field=m) from None
        else:
            arr = _parquet_features(f, item_order, m)
        dtypes[m] = str(arr.dtype)
        feats[m] = check_features(arr, n_items, f, m)
    if modalities is not None and set(modalities) - set(feats):
        missing = sorted(set(modalities) - set(feats))
        raise DataError(f"missing feature file(s) for modality {missing}", file=str(folder))
    return feats, dtypes


def _parquet_features(f: Path, item_order: list[str], modality: str) -> np.ndarray:
    try:
        df = pd.read_parquet(f)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError/... for a damaged file
        raise DataError(f"not a readable Parquet file ({type(e).__name__}: {e})", file=str(f),
                        field=modality) from None
    require_columns(df, ["item"], f)
    rest = [c for c in df.columns if c != "item"]
    if not rest:
        raise DataError("expected feature columns beside 'item' (one list column or numeric columns)",
                        file=str(f), field=modality)
    try:
        if len(rest) == 1 and df[rest[0]].dtype == object:
            lengths = df[rest[0]].map(lambda v: -1 if v is None or np.ndim(v) != 1 else len(v)).to_numpy()
            bad = lengths != lengths[0] if lengths[0] >= 0 else np.ones(len(lengths), bool)
            if lengths[0] < 0 or bad.any():
                r = int(np.flatnonzero(bad | (lengths < 0))[0]) if (bad | (lengths < 0)).any() else 0
                raise DataError(f"expected one equal-length list of numbers per row, row {r} holds "
                                f"{df[rest[0]].iloc[r]!r:.60}", file=str(f), field=rest[0])
            mat = np.stack([np.asarray(v, dtype=np.float32) for v in df[rest[0]]])
        else:
            mat = df[rest].to_numpy(dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise DataError(f"expected numeric feature values ({e})", file=str(f), field=modality) from None
    index = {str(v): k for k, v in enumerate(df["item"].tolist())}
    missing = [i for i in item_order if i not in index]
    if missing:
        raise DataError(f"no feature row for item '{missing[0]}' ({len(missing)} items missing)",
                        file=str(f), field="item")
    return mat[[index[i] for i in item_order]]
