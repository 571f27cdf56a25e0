"""``prismrec extract --data PATH``: a dataset's own item text -> ``text_feat.npy`` -> a trainable folder.

Datasets whose loader keeps item metadata (RecBole ``.text``/``.item`` files, MovieLens ``u.item``;
see :attr:`prismrec.data.Dataset.item_meta`) carry the text to encode: its ``text`` column by
default (UniSRec's title + categories + brand; MovieLens's ``"<title>. <genres>"``). The output
folder is a generic dataset (:mod:`prismrec.data.generic`) that ``prismrec train --data OUT`` reads
as it is::

    OUT/items.csv            the item metadata (item id + its columns; also shown by `serve`)
    OUT/items.json           external item ids in feature row order
    OUT/text_feat.npy        float32 [n_items, d], one row per item (the dataset's other
    OUT/<modality>_feat.npy  modalities are written beside it, as loaded)
    OUT/interactions.csv     user, item, split (train/valid/test): the loaded split, unchanged
    OUT/extract_report.json  encoder, counts, items/s, skipped items

``interactions.csv`` is written last, so a folder whose extraction failed is not a dataset.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.errors import DataError

log = logging.getLogger("prismrec")


def extract_dataset(data: str | Path, out: str | Path, *, text_cols: list[str] | None = None,
                    load_options: dict | None = None, **extract_options):
    """Encode a dataset's item text and write a generic dataset folder (see the module docstring).

    Args:
        data: any dataset :func:`prismrec.data.load_dataset` reads that has item metadata.
        out: the output folder (created).
        text_cols: metadata columns joined (with ``". "``) into the encoded text (default ``text``).
        load_options: keyword arguments of the loader (e.g. ``{"min_rating": 4}``).
        **extract_options: passed to :func:`prismrec.features.pipeline.extract` (``encoders``,
            ``batch_size``, ``cache_dir``, ``show_progress``, ...).

    Returns:
        The :class:`~prismrec.features.pipeline.ExtractResult`.
    """
    from prismrec.data import load_dataset
    from prismrec.features.pipeline import extract

    ds = load_dataset(data, **(load_options or {}))
    meta = ds.item_meta
    if meta is None:
        raise DataError(f"dataset '{ds.name}' ({ds.provenance.get('format', 'unknown format')}) has no item text: "
                        "--data works for RecBole (.text/.item files) and MovieLens (u.item); for other data "
                        "pass an items table with --items", file=str(data))
    cols = list(text_cols) if text_cols else ["text"]
    missing = [c for c in cols if c not in meta.columns]
    if missing:
        raise DataError(f"no item metadata column {missing}; columns: {', '.join(meta.columns)}", file=str(data))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = out / "interactions.csv"
    if stale.exists():
        stale.unlink()  # the folder is a dataset again only once everything below is written
    table = meta.copy()
    table["item"] = [str(v) for v in ds.item_ids.tolist()]
    _atomic_csv(table, out / "items.csv")
    result = extract(out / "items.csv", out, modalities=["text"], text_cols=cols, id_col="item", **extract_options)
    if result.modalities["text"].file is None:
        return result  # every item failed: no features, no dataset
    for m, f in ds.features.items():
        if m != "text":
            np.save(out / f"{m}_feat.npy", f)
    frames = []
    for split in ("train", "valid", "test"):
        coo = ds.split(split).tocoo()
        frames.append(pd.DataFrame({"user": ds.user_ids[coo.row], "item": ds.item_ids[coo.col], "split": split}))
    _atomic_csv(pd.concat(frames, ignore_index=True), out / "interactions.csv")
    log.info("%s: %d users, %d items, %d interactions; train with: prismrec train --data %s --model ...",
             out, ds.n_users, ds.n_items, sum(len(f) for f in frames), out)
    return result


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
