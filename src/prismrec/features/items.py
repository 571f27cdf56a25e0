"""The items table ``prismrec extract`` reads: one row per item, an id and the item's raw content.

Columns (CSV, TSV or Parquet; names configurable):

- id: ``item`` (or ``item_id``, ``itemID``, ``id``);
- text: ``title``, ``description``, ``text`` — every one present is joined with ``". "``;
- image: ``image`` (or ``image_path``, ``keyframe``, ``frame``): a file path; for videos, a key frame;
- audio: ``audio`` (or ``audio_path``): a file path; for videos, the audio track.

Relative paths are resolved against the table's folder. An empty cell means the item has no
content of that modality (it is reported and filled like an unreadable file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from prismrec.data.generic import read_table
from prismrec.errors import DataError

ID_COLS = ("item", "item_id", "itemID", "id")
TEXT_COLS = ("title", "description", "text")
MEDIA_COLS = {"image": ("image", "image_path", "keyframe", "frame"), "audio": ("audio", "audio_path")}


@dataclass
class ItemsTable:
    """Item ids in row order and, per modality, each item's content source (text or path; ``""`` = none)."""

    path: Path
    ids: list[str]
    sources: dict[str, list[str]] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)


def _column(df: pd.DataFrame, col: str) -> list[str]:
    s = df[col]
    return s.where(s.notna(), "").astype(str).str.strip().tolist()


def _pick(df: pd.DataFrame, given: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str | None:
    if given is not None:
        if given not in df.columns:
            raise DataError(f"no column '{given}' for {what}; columns: {', '.join(map(str, df.columns))}", file=str(path))
        return given
    return next((c for c in candidates if c in df.columns), None)


def read_items(path: str | Path, *, modalities: list[str] | None = None, id_col: str | None = None,
               text_cols: list[str] | None = None, image_col: str | None = None,
               audio_col: str | None = None) -> ItemsTable:
    """Read and validate an items table.

    Args:
        path: the CSV/TSV/Parquet file.
        modalities: modalities to extract (default: every one whose column is present).
        id_col, text_cols, image_col, audio_col: column names overriding the defaults above.
    """
    path = Path(path)
    df = read_table(path)
    if len(df) == 0:
        raise DataError("no items (only a header)", file=str(path))
    idc = _pick(df, id_col, ID_COLS, "the item id", path)
    if idc is None:
        raise DataError(f"expected an item id column ({' / '.join(ID_COLS)}); columns: {', '.join(map(str, df.columns))}",
                        file=str(path))
    ids = _column(df, idc)
    seen: dict[str, int] = {}
    for r, i in enumerate(ids):
        if i == "":
            raise DataError("expected an item id, got an empty value", file=str(path), line=r + 2, field=idc)
        if i in seen:
            raise DataError(f"duplicate item id '{i}' (first on line {seen[i] + 2})", file=str(path), line=r + 2, field=idc)
        seen[i] = r

    found: dict[str, list[str]] = {}
    if text_cols is not None:
        for c in text_cols:
            _pick(df, c, (), "text", path)
        found["text"] = list(text_cols)
    elif any(c in df.columns for c in TEXT_COLS):
        found["text"] = [c for c in TEXT_COLS if c in df.columns]
    for m, given in (("image", image_col), ("audio", audio_col)):
        c = _pick(df, given, MEDIA_COLS[m], m, path)
        if c is not None:
            found[m] = [c]

    wanted = modalities if modalities is not None else [m for m in ("text", "image", "audio") if m in found]
    if not wanted:
        raise DataError("no content columns: expected text (title/description/text), image or audio columns",
                        file=str(path))
    table = ItemsTable(path=path, ids=ids)
    for m in wanted:
        if m not in ("text", "image", "audio"):
            raise DataError(f"unknown modality '{m}'; expected text, image or audio", file=str(path))
        if m not in found:
            expected = " / ".join(TEXT_COLS if m == "text" else MEDIA_COLS[m])
            raise DataError(f"no column for modality '{m}': expected {expected} (or pass --{m}-col{'s' if m == 'text' else ''})",
                            file=str(path))
        table.columns[m] = found[m]
        if m == "text":
            cols = [_column(df, c) for c in found[m]]
            table.sources[m] = [". ".join(v for v in vals if v) for vals in zip(*cols)]
        else:
            table.sources[m] = [_resolve(v, path.parent) for v in _column(df, found[m][0])]
    return table


def _resolve(value: str, base: Path) -> str:
    if not value:
        return ""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)
