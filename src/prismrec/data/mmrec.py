"""Loader for MMRec's format: ``<name>.inter`` (TSV) plus ``<modality>_feat.npy`` files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.data.dataset import Dataset
from prismrec.data.validate import (check_features, check_id_bound, dedupe, integer_column,
                                    require_columns, require_file, split_matrices)
from prismrec.errors import DataError

INTER_COLUMNS = ["userID", "itemID", "x_label"]


def find_inter_file(folder: Path) -> Path:
    folder = Path(folder)
    named = folder / f"{folder.name}.inter"
    if named.is_file():
        return named
    found = sorted(folder.glob("*.inter"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"missing interactions: expected '{folder.name}.inter' (MMRec format) in this folder",
                        file=str(folder))
    raise DataError(f"several .inter files {[f.name for f in found]}; expected '{folder.name}.inter'",
                    file=str(folder))


def load_mmrec(folder: str | Path, modalities: list[str] | None = None) -> Dataset:
    """Load an MMRec-format folder.

    ``n_users``/``n_items`` are ``max(id) + 1`` over the whole file, as in MMRec; every
    ``<modality>_feat.npy`` in the folder becomes a modality (``image_feat.npy`` -> ``image``),
    held as float32 whatever its dtype on disk (``provenance["feature_dtypes"]`` records it).
    Ids are row indices, so they are checked before anything is allocated: an item id must be
    below the feature files' row count, or, without feature files, below ``max(1000, 10 x rows)``
    (:func:`prismrec.data.validate.id_bound`), and so must every user id. Repeated (user, item)
    rows are dropped (the first kept) with a warning.

    Args:
        folder: the dataset folder; its name is the dataset name.
        modalities: load only these modalities (default: all feature files found).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("missing dataset folder: not found or not a directory", file=str(folder))
    inter = require_file(find_inter_file(folder), "interaction file")
    try:
        df = pd.read_csv(inter, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError("empty file: expected a header line 'userID\titemID\trating\ttimestamp\tx_label' "
                        "and one row per interaction", file=str(inter), line=1) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"not a valid tab-separated file ({e})", file=str(inter)) from None
    require_columns(df, INTER_COLUMNS, inter)
    users = integer_column(df, "userID", inter)
    items = integer_column(df, "itemID", inter)
    labels = integer_column(df, "x_label", inter, allowed={0, 1, 2})
    if len(users) == 0:
        raise DataError("no interactions (only a header)", file=str(inter))

    wanted = set(modalities) if modalities is not None else None
    files = [f for f in sorted(folder.glob("*_feat.npy"))
             if wanted is None or f.name[: -len("_feat.npy")] in wanted]
    rows = _feature_rows(files)
    check_id_bound(users, inter, "userID")
    if rows:
        f, n = max(rows.items(), key=lambda kv: kv[1])
        check_id_bound(items, inter, "itemID", limit=n, limit_source=f.name)
    else:
        check_id_bound(items, inter, "itemID")
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    users, items, labels = dedupe(users, items, inter, labels)
    train, valid, test = split_matrices(users, items, labels, shape, inter, "x_label")

    features, dtypes = {}, {}
    for f in files:
        m = f.name[: -len("_feat.npy")]
        try:
            arr = np.load(f, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"expected a plain numeric .npy array ({e})", file=str(f), field=m) from None
        dtypes[m] = str(arr.dtype)
        features[m] = check_features(arr, shape[1], f, m)
    if wanted is not None and wanted - set(features):
        missing = sorted(wanted - set(features))
        raise DataError(f"missing feature file(s) for modality {missing}: expected "
                        f"{[m + '_feat.npy' for m in missing]}", file=str(folder))
    return Dataset(name=folder.name, train=train, valid=valid, test=test, features=features,
                   provenance={"format": "mmrec", "files": [str(inter), *map(str, files)],
                               "feature_dtypes": dtypes})


def _feature_rows(files: list[Path]) -> dict[Path, int]:
    """Row count of each readable ``.npy`` (from its header; the data is not read)."""
    rows = {}
    for f in files:
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError):
            continue  # reported with its reason when the file is loaded
        if arr.ndim >= 1:
            rows[f] = int(arr.shape[0])
    return rows
