"""Item metadata for display: an optional items table beside a dataset, carried into the bundle.

A dataset folder may hold ``items.csv``, ``items.tsv`` or ``items.parquet`` (the table
``prismrec extract`` reads works as it is). It is not used for training; ``prismrec train`` copies
it into the bundle as ``items_meta.json`` and ``prismrec serve`` shows it (``GET /items``, the web
page). Columns:

- ``item`` (or ``item_id``, ``itemID``, ``id``): the external item id, as in the interactions;
- ``title`` (or ``name``): shown instead of the bare id;
- an image: ``thumbnail``, ``thumbnail_url``, ``image``, ``image_url``, ``image_path`` or
  ``image_file`` (the first present is used): an ``http(s)://`` or ``data:image/`` URL, shown as
  given, or a file path (relative paths are resolved against the table's folder) that the server
  serves itself (``GET /image?item=ID``; the bundle records the path, not the image);
- any other column is carried as given (strings and numbers), e.g. ``brand`` or ``category``.

Rows whose item is not in the dataset are left out (with a warning); items without a row simply
have no title. The JSON written into the bundle::

    {"format": "prismrec-items-meta", "version": 1, "source": "items.csv",
     "title_column": "title", "image_column": "image", "fields": ["brand"],
     "items": {"<id>": {"title": "...", "image_url": "https://...", "fields": {"brand": "..."}},
               "<id>": {"image_file": "/abs/path/img.jpg"}}}
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.errors import BundleError, DataError

log = logging.getLogger("prismrec")
NAMES = ("items.csv", "items.tsv", "items.parquet")
FILENAME = "items_meta.json"  # its name inside a bundle
FORMAT, VERSION = "prismrec-items-meta", 1
ID_COLS = ("item", "item_id", "itemID", "id")
TITLE_COLS = ("title", "name")
IMAGE_COLS = ("thumbnail", "thumbnail_url", "image", "image_url", "image_path", "image_file")
# image files the server may send: types every browser shows, and no SVG (it can carry scripts)
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
               ".webp": "image/webp", ".bmp": "image/bmp", ".avif": "image/avif"}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")  # two letters or more: "C:\x" is a path


def find_items_meta(data_path: str | Path | None) -> Path | None:
    """The items table of a dataset (a folder, or a file inside it), or None.

    Raises:
        DataError: more than one candidate (``items.csv`` and ``items.parquet``): which one is meant?
    """
    if data_path is None or str(data_path) == "synthetic":
        return None
    p = Path(data_path)
    folder = p if p.is_dir() else p.parent
    found = [folder / n for n in NAMES if (folder / n).is_file()]
    if len(found) > 1:
        raise DataError(f"more than one items table ({', '.join(f.name for f in found)}); keep one",
                        file=str(folder))
    return found[0] if found else None


def read_items_meta(path: str | Path, item_ids) -> dict:
    """Read and validate an items table into the JSON object written as ``items_meta.json``.

    Args:
        path: the ``.csv``/``.tsv``/``.parquet`` file.
        item_ids: the dataset's external item ids (rows for other ids are left out, with a warning).

    Raises:
        DataError: unreadable table, no id column, an empty or duplicate id, an image value that
            is neither an http(s)/data URL nor a path (names the line and column).
    """
    from prismrec.data.generic import read_table

    path = Path(path)
    df = read_table(path)
    where = {"file": str(path)}
    cols = [str(c) for c in df.columns]
    df.columns = cols
    id_col = next((c for c in ID_COLS if c in cols), None)
    if id_col is None:
        raise DataError(f"expected an item id column ({' / '.join(ID_COLS)}); columns: {', '.join(cols)}", **where)
    ids = _id_strings(df[id_col])
    lines = np.arange(len(df)) + 2  # the header is line 1
    empty = np.flatnonzero(ids == "")
    if len(empty):
        raise DataError("expected an item id, got an empty value", line=int(lines[empty[0]]), field=id_col, **where)
    dup = pd.Series(ids).duplicated(keep="first").to_numpy()
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(ids == ids[j])[0])
        raise DataError(f"duplicate item id '{ids[j]}' (first on line {lines[first]})", line=int(lines[j]),
                        field=id_col, **where)

    # a hash look-up: np.isin on object (string) arrays compares every pair (14 s at 18k items)
    known = pd.Series(ids).isin(pd.Index([str(i) for i in np.asarray(item_ids).tolist()])).to_numpy()
    if not known.all():
        log.warning("%s: %d of %d rows name items that are not in the dataset (e.g. '%s'); they are left out",
                    path, int((~known).sum()), len(ids), ids[~known][0])
    title_col = next((c for c in TITLE_COLS if c in cols), None)
    image_col = next((c for c in IMAGE_COLS if c in cols), None)
    fields = [c for c in cols if c not in (id_col, title_col) and c not in IMAGE_COLS]

    records: dict[str, dict] = {i: {} for i in ids[known]}
    if title_col is not None:
        for i, v in zip(ids[known], df[title_col].to_numpy()[known]):
            v = _scalar(v)
            if v is not None and str(v).strip():
                records[i]["title"] = str(v).strip()
    if image_col is not None:
        _add_images(records, ids[known], df[image_col].to_numpy()[known], lines[known], image_col, path)
    for c in fields:
        for i, v in zip(ids[known], df[c].to_numpy()[known]):
            v = _scalar(v)
            if v is not None and v != "":
                records[i].setdefault("fields", {})[c] = v
    return {"format": FORMAT, "version": VERSION, "source": path.name, "title_column": title_col,
            "image_column": image_col, "fields": fields, "items": records}


def items_meta_for(data_path: str | Path | None, item_ids) -> dict | None:
    """:func:`read_items_meta` of the dataset's items table, or None when it has none."""
    path = find_items_meta(data_path)
    if path is None:
        return None
    meta = read_items_meta(path, item_ids)
    log.info("item metadata from %s: %d items (title: %s, image: %s)", path, len(meta["items"]),
             meta["title_column"], meta["image_column"])
    return meta


def check_items_meta(obj, file: str) -> dict:
    """Validate an ``items_meta.json`` read back from a bundle (what the server relies on).

    Raises:
        BundleError: not the format :func:`read_items_meta` writes (names the file and the item).
    """
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("items"), dict):
        raise BundleError(f"{file}: not an item metadata file (expected format '{FORMAT}' with an 'items' object)")
    for key, rec in obj["items"].items():
        ok = isinstance(rec, dict) and all(isinstance(rec.get(f, ""), str) for f in ("title", "image_url", "image_file"))
        ok = ok and isinstance(rec.get("fields", {}), dict)
        if ok and "image_url" in rec:
            ok = _is_url(rec["image_url"])
        if ok and "image_file" in rec:
            ok = Path(rec["image_file"]).is_absolute() and Path(rec["image_file"]).suffix.lower() in IMAGE_TYPES
        if not ok:
            raise BundleError(f"{file}: item '{key}': expected title/image_url/image_file strings and a 'fields' "
                              "object (an http(s) or data:image URL, an absolute image path)")
    return obj


# ------------------------------------------------------------------------------------------------
def _id_strings(col: pd.Series) -> np.ndarray:
    """Item ids as the strings the id maps use ("12", not "12.0", for a numeric Parquet column)."""
    if pd.api.types.is_float_dtype(col) and col.notna().all() and (col % 1 == 0).all():
        col = col.astype(np.int64)
    return col.where(col.notna(), "").astype(str).str.strip().to_numpy(dtype=object)


def _scalar(v):
    """A JSON value of one cell: numpy scalars as Python ones, NaN/None as None, arrays as lists."""
    if isinstance(v, np.ndarray):
        return [_scalar(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and math.isinf(v):
        return str(v)
    if isinstance(v, (str, int, float, bool, list)):
        return v
    return str(v)  # timestamps, decimals: as text


def _is_url(v: str) -> bool:
    low = v[:16].lower()
    return low.startswith(("http://", "https://")) or low.startswith("data:image/")


def _add_images(records: dict, ids, values, lines, col: str, table: Path) -> None:
    missing, unsupported = [], []
    for i, v, line in zip(ids, values, lines):
        v = _scalar(v)
        v = "" if v is None else str(v).strip()
        if not v:
            continue
        if _is_url(v):
            records[i]["image_url"] = v
            continue
        if _SCHEME.match(v) and not v.lower().startswith("file:"):
            raise DataError(f"expected an http(s):// or data:image/ URL or a file path, got '{v[:60]}'",
                            file=str(table), line=int(line), field=col)
        p = Path(v[5:] if v.lower().startswith("file:") else v).expanduser()
        p = (p if p.is_absolute() else table.parent / p).resolve()
        if p.suffix.lower() not in IMAGE_TYPES:
            unsupported.append(v)
        elif not p.is_file():
            missing.append(v)
        else:
            records[i]["image_file"] = str(p)
    if missing:
        log.warning("%s: %d image files in column '%s' do not exist (e.g. '%s'); those items show no image",
                    table, len(missing), col, missing[0])
    if unsupported:
        log.warning("%s: %d images in column '%s' are not %s files (e.g. '%s'); those items show no image",
                    table, len(unsupported), col, "/".join(sorted({s[1:] for s in IMAGE_TYPES})), unsupported[0])
