"""Generic loader: an interactions CSV/Parquet plus one feature file per modality.

Layout of a generic dataset folder (or pass the interactions file itself)::

    interactions.csv | interactions.parquet   columns: user, item, [timestamp], [split]
    <modality>_feat.npy                        rows in item order (see below)
    <modality>_feat.parquet                    column 'item' + a list column or numeric columns
    items.json                                 optional: external item ids in .npy row order

Row order of ``.npy`` features: ``items.json`` when present (``prismrec extract`` writes it);
otherwise the item ids must be the integers ``0..n-1`` and row ``i`` is item ``i``.
``split`` holds 0/1/2 or train/valid/test; without it the data is split per user, by
``timestamp`` when present, else randomly with ``seed``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.data.dataset import Dataset
from prismrec.data.split import per_user_split
from prismrec.data.validate import (check_features, dedupe, integer_column, require_columns,
                                    require_file, split_matrices)
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

    item_order = _item_order(folder, i_ext)
    user_ids, users = np.unique(u_ext, return_inverse=True)
    user_ids = _maybe_int(user_ids)
    item_index = {v: k for k, v in enumerate(item_order)}
    unknown = [v for v in pd.unique(i_ext) if v not in item_index]
    if unknown:
        r = int(np.flatnonzero(i_ext == unknown[0])[0])
        raise DataError(f"item '{unknown[0]}' is not in items.json", file=str(inter), line=r + 2, field=item_col)
    items = pd.Series(i_ext).map(item_index).to_numpy(dtype=np.int64)

    if split_col in df.columns:
        raw = df[split_col].astype(str).str.strip().str.lower()
        codes = raw.map(SPLIT_CODES)
        if codes.isna().any():
            r = int(np.flatnonzero(codes.isna().to_numpy())[0])
            raise DataError(f"expected 0/1/2 or train/valid/test, got {df[split_col].iloc[r]!r}",
                            file=str(inter), line=r + 2, field=split_col)
        labels = codes.to_numpy(dtype=np.int64)
    else:
        if time_col in df.columns:
            key = integer_column(df, time_col, inter, nonnegative=False).astype(np.float64)
        else:
            key = np.random.default_rng(seed).random(len(df))
        labels = per_user_split(users, key)

    users, items, labels = dedupe(users, items, inter, labels)
    shape = (len(user_ids), len(item_order))
    train, valid, test = split_matrices(users, items, labels, shape, inter, split_col)
    features = _load_features(folder, len(item_order), item_order, modalities)
    return Dataset(name=folder.name if path.is_dir() else inter.stem, train=train, valid=valid, test=test,
                   features=features, user_ids=user_ids, item_ids=_maybe_int(np.asarray(item_order)))


def _item_order(folder: Path, i_ext: np.ndarray) -> list[str]:
    ids_file = folder / "items.json"
    if ids_file.is_file():
        try:
            ids = [str(v) for v in json.loads(ids_file.read_text())]
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"expected a JSON list of item ids ({e})", file=str(ids_file)) from None
        return ids
    uniq = pd.unique(i_ext)
    as_int = pd.to_numeric(pd.Series(uniq), errors="coerce")
    if as_int.notna().all() and (as_int >= 0).all() and (as_int == np.floor(as_int)).all():
        n = int(as_int.max()) + 1
        return [str(k) for k in range(n)]  # numeric ids: row i of a .npy is item i
    return sorted(uniq.tolist())


def _maybe_int(ids: np.ndarray) -> np.ndarray:
    try:
        as_int = ids.astype(np.int64)
        if (as_int.astype(str) == ids.astype(str)).all():
            return as_int
    except ValueError:
        pass
    return ids.astype(str)


def _load_features(folder: Path, n_items: int, item_order: list[str], modalities) -> dict[str, np.ndarray]:
    feats = {}
    for f in sorted(folder.glob("*_feat.npy")) + sorted(folder.glob("*_feat.parquet")):
        m = f.name.rsplit("_feat.", 1)[0]
        if (modalities is not None and m not in modalities) or m in feats:
            continue
        if f.suffix == ".npy":
            try:
                arr = np.load(f, allow_pickle=False)
            except ValueError as e:
                raise DataError(f"expected a plain numeric .npy array ({e})", file=str(f), field=m) from None
        else:
            arr = _parquet_features(f, item_order, m)
        feats[m] = check_features(arr, n_items, f, m)
    if modalities is not None and set(modalities) - set(feats):
        missing = sorted(set(modalities) - set(feats))
        raise DataError(f"missing feature file(s) for modality {missing}", file=str(folder))
    return feats


def _parquet_features(f: Path, item_order: list[str], modality: str) -> np.ndarray:
    df = pd.read_parquet(f)
    require_columns(df, ["item"], f)
    rest = [c for c in df.columns if c != "item"]
    if len(rest) == 1 and df[rest[0]].dtype == object:
        mat = np.stack([np.asarray(v, dtype=np.float32) for v in df[rest[0]]])
    else:
        mat = df[rest].to_numpy(dtype=np.float32)
    index = {str(v): k for k, v in enumerate(df["item"].tolist())}
    missing = [i for i in item_order if i not in index]
    if missing:
        raise DataError(f"no feature row for item '{missing[0]}' ({len(missing)} items missing)",
                        file=str(f), field="item")
    return mat[[index[i] for i in item_order]]
