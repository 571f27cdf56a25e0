"""Loader for RecBole's atomic files: ``.inter`` / ``.item`` / ``.text`` with ``field:type`` headers.

A RecBole dataset is a folder of tab-separated *atomic files* that share a name prefix; the first
line of each names its fields as ``name:type``, where the type is ``token`` (a categorical id),
``token_seq`` (space-separated tokens), ``float`` or ``float_seq``. Read here:

- ``<name>.inter``: one interaction per row (``user_id:token item_id:token [rating:float]
  [timestamp:float]``). Repeated (user, item) pairs are dropped first, keeping the earliest, then
  each user's interactions are split by time (random with ``seed`` without a timestamp) 80/10/10
  by :func:`prismrec.data.split.per_user_split`, the rule of the generic and MMRec loaders.
- ``<name>.train.inter`` / ``.valid.inter`` / ``.test.inter``: a split given in advance (preferred
  when both layouts are present). Two kinds:

  - *general*: a ``user_id`` and an ``item_id`` per row: the rows are the split's interactions.
  - *sequential* (a ``item_id_list:token_seq`` history column, as UniSRec's leave-one-out files,
    where the train file holds one row per earlier target): every item of a **train** row, its
    history and its target, is a train interaction; the **valid** and **test** rows' targets
    are the valid and test interactions. Items of a valid or test history that are none of these
    (a history longer than the train rows kept) are train interactions too. A pair that occurs
    in two places keeps the first, in the order train, valid, test, and the drop is logged.
- ``<name>.item2index`` / ``<name>.user2index`` (no header: ``external id<TAB>index``), RecBole's
  and UniSRec's token maps: when present, the tokens of the ``.inter`` files are these indices,
  the external ids are the mapped names (an ASIN, a reviewer id), the internal order is the
  index order, and every item of the map is in the catalogue, with or without interactions.
- ``<name>.item`` and ``<name>.text``: item metadata keyed by ``item_id`` (an external id or an
  ``.inter`` token). Every other field is kept as a string column of
  :attr:`~prismrec.data.Dataset.item_meta`; its ``text`` column, the text ``prismrec extract``
  encodes, is the ``text`` field itself or else the ``token_seq`` fields joined with ``". "``.

Every error names the file, the line, the field and what was expected.
"""
from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.data.dataset import Dataset
from prismrec.data.split import per_user_split
from prismrec.data.validate import dedupe, require_file, split_matrices
from prismrec.errors import DataError

log = logging.getLogger("prismrec")
TYPES = ("token", "token_seq", "float", "float_seq")
SPLITS = ("train", "valid", "test")


def is_recbole_header(line: str) -> bool:
    """Whether a header line looks like RecBole's (``name:type`` fields; MMRec's have no ``:``)."""
    fields = line.rstrip("\r\n").split("\t")
    return bool(fields) and all(":" in f for f in fields if f)


def _first_line(path: Path, encoding: str = "utf-8") -> str:
    try:
        with open(path, encoding=encoding, newline="") as f:
            return f.readline()
    except UnicodeDecodeError as e:
        raise DataError(f"expected {encoding} text ({e})", file=str(path), line=1) from None


def read_atomic(path: str | Path, *, encoding: str = "utf-8") -> tuple[pd.DataFrame, dict[str, str], np.ndarray]:
    """Read one atomic file.

    Returns:
        The rows as strings (columns named without their type; blank lines dropped), the field
        types by name, and each row's 1-based line number in the file.
    """
    path = require_file(Path(path), "RecBole atomic file")
    header = _first_line(path, encoding)
    if not header.strip():
        raise DataError("empty file: expected a header of tab-separated 'name:type' fields "
                        f"(types {', '.join(TYPES)})", file=str(path), line=1)
    names, types = [], {}
    for f in header.rstrip("\r\n").split("\t"):
        name, sep, typ = f.strip().rpartition(":")
        if not sep or not name or typ not in TYPES:
            raise DataError(f"expected 'name:type' with type one of {', '.join(TYPES)}, got {f!r}",
                            file=str(path), line=1, field=f)
        if name in types:
            raise DataError(f"field '{name}' appears twice in the header", file=str(path), line=1, field=name)
        names.append(name)
        types[name] = typ
    try:
        df = pd.read_csv(path, sep="\t", header=0, names=names, dtype=str, na_filter=False,
                         quoting=csv.QUOTE_NONE, encoding=encoding, skip_blank_lines=False)
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+)", str(e))
        raise DataError(f"expected {len(names)} tab-separated fields ({', '.join(names)}) per row",
                        file=str(path), line=int(m.group(1)) if m else None) from None
    except UnicodeDecodeError as e:
        raise DataError(f"expected {encoding} text ({e})", file=str(path)) from None
    lines = np.arange(len(df)) + 2
    blank = (df == "").all(axis=1).to_numpy() if len(df) else np.zeros(0, bool)
    if blank.any():
        df, lines = df[~blank].reset_index(drop=True), lines[~blank]
    return df, types, lines


def _require(df: pd.DataFrame, types: dict, field: str, typ: tuple[str, ...], path: Path) -> None:
    if field not in types:
        raise DataError(f"missing field '{field}' (expected '{field}:{typ[0]}'); found "
                        f"{', '.join(f'{k}:{v}' for k, v in types.items())}", file=str(path), line=1, field=field)
    if types[field] not in typ:
        raise DataError(f"expected type {' or '.join(typ)}, got {types[field]}", file=str(path), line=1, field=field)


def _tokens(df: pd.DataFrame, field: str, path: Path, lines: np.ndarray) -> np.ndarray:
    vals = df[field].str.strip().to_numpy(dtype=object)
    empty = vals == ""
    if empty.any():
        r = int(np.flatnonzero(empty)[0])
        raise DataError("expected a token (an id), got an empty value", file=str(path), line=int(lines[r]),
                        field=field)
    return vals.astype(str)


def _floats(df: pd.DataFrame, field: str, path: Path, lines: np.ndarray) -> np.ndarray:
    num = pd.to_numeric(df[field].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(num)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"expected a number, got {df[field].iloc[r]!r}", file=str(path), line=int(lines[r]),
                        field=field)
    return num


def _read_map(path: Path, kind: str) -> tuple[pd.Index, pd.Index]:
    """A ``.item2index``/``.user2index`` file: the external ids and their index tokens, in index order."""
    try:
        df = pd.read_csv(path, sep="\t", header=None, dtype=str, na_filter=False, quoting=csv.QUOTE_NONE)
    except pd.errors.EmptyDataError:
        raise DataError(f"empty file: expected one '{kind} id<TAB>index' row per {kind}", file=str(path)) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"expected two tab-separated fields ({kind} id, index) per row ({e})", file=str(path)) from None
    if df.shape[1] != 2:
        raise DataError(f"expected two tab-separated fields ({kind} id, index) per row, got {df.shape[1]}",
                        file=str(path), line=1)
    lines = np.arange(len(df)) + 1
    ext = df[0].str.strip().to_numpy(dtype=object).astype(str)
    idx = pd.to_numeric(df[1].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(idx) | (idx < 0) | (idx != np.floor(idx)) | (ext == "")
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"expected '{kind} id<TAB>non-negative integer index', got {df[0].iloc[r]!r}, "
                        f"{df[1].iloc[r]!r}", file=str(path), line=int(lines[r]))
    for vals, what in ((ext, f"{kind} id"), (idx, "index")):
        _, first, counts = np.unique(vals, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = int(np.sort(first[counts > 1])[0])
            r = int(np.flatnonzero(vals == vals[dup])[1])
            raise DataError(f"duplicate {what} {vals[r]!r} (first on line {dup + 1})", file=str(path),
                            line=int(lines[r]))
    order = np.argsort(idx, kind="stable")
    return pd.Index(ext[order], name=kind), pd.Index(np.char.mod("%d", idx[order].astype(np.int64)))


class _Ids:
    """Token -> internal index for one kind (user or item): from a token map, or the sorted tokens."""

    def __init__(self, kind: str, map_file: Path | None):
        self.kind, self.map_file = kind, map_file
        self.external: pd.Index | None = None
        self.tokens: pd.Index | None = None
        if map_file is not None:
            self.external, self.tokens = _read_map(map_file, kind)

    def fix(self, tokens: list[np.ndarray]) -> None:
        """Without a map: the catalogue is the distinct tokens, sorted (numerically if all integers)."""
        if self.tokens is not None:
            return
        uniq = pd.unique(np.concatenate(tokens)) if tokens else np.array([], dtype=object)
        num = pd.to_numeric(pd.Series(uniq, dtype=object), errors="coerce")
        if len(uniq) and num.notna().all():
            uniq = uniq[np.argsort(num.to_numpy(dtype=np.float64), kind="stable")]
        else:
            uniq = np.sort(uniq.astype(str))
        self.tokens = self.external = pd.Index(uniq.astype(str))

    def index(self, tokens: np.ndarray, path: Path, field: str, lines: np.ndarray) -> np.ndarray:
        idx = self.tokens.get_indexer(tokens)
        if (idx < 0).any():
            r = int(np.flatnonzero(idx < 0)[0])
            where = f"in {self.map_file.name}" if self.map_file is not None else "known"
            raise DataError(f"{self.kind} token {tokens[r]!r} is not {where}", file=str(path),
                            line=int(lines[r]), field=field)
        return idx.astype(np.int64)

    def ids(self) -> np.ndarray:
        ext = self.external.to_numpy(dtype=object).astype(str)
        try:
            as_int = ext.astype(np.int64)
            if (as_int.astype(str) == ext).all():
                return as_int
        except ValueError:
            pass
        return ext


def find_recbole(folder: Path) -> tuple[str, dict[str, Path]] | None:
    """The dataset name and its ``.inter`` file(s) when ``folder`` holds RecBole atomic files."""
    inters = sorted(folder.glob("*.inter"))
    if not inters or not any(is_recbole_header(_first_line(f)) for f in inters):
        return None
    for f in inters:  # pre-split files first
        if f.name.endswith(".train.inter"):
            name = f.name[: -len(".train.inter")]
            files = {s: folder / f"{name}.{s}.inter" for s in SPLITS}
            missing = [p.name for p in files.values() if not p.is_file()]
            if missing:
                raise DataError(f"pre-split RecBole files: {f.name} is here but {', '.join(missing)} is missing",
                                file=str(folder))
            return name, files
    single = [f for f in inters if f.name.count(".") == 1]
    named = [f for f in single if f.stem == folder.name]
    if len(single) == 1 or len(named) == 1:
        f = (named or single)[0]
        return f.stem, {"all": f}
    raise DataError(f"several .inter files {[f.name for f in inters]}; expected '<name>.inter' or "
                    "'<name>.train.inter/.valid.inter/.test.inter'", file=str(folder))


def load_recbole(path: str | Path, *, seed: int = 0, min_rating: float | None = None,
                 user_field: str = "user_id", item_field: str = "item_id", time_field: str = "timestamp",
                 rating_field: str = "rating", encoding: str = "utf-8") -> Dataset:
    """Load a folder of RecBole atomic files (or one ``<name>.inter`` file); see the module docstring.

    Args:
        path: the folder, or a single ``.inter`` file.
        seed: seed of the random per-user split of a single ``.inter`` without timestamps.
        min_rating: keep only interactions whose ``rating`` is at least this (``None``: every row
            is a positive; an error when set and the files have no rating field).
        user_field, item_field, time_field, rating_field: field names (RecBole's defaults).
        encoding: text encoding of the files.
    """
    path = Path(path)
    if path.is_file():
        folder, name, files = path.parent, path.name.split(".")[0], {"all": path}
    else:
        found = find_recbole(path) if path.is_dir() else None
        if found is None:
            raise DataError("no RecBole atomic files: expected '<name>.inter' with 'field:type' headers",
                            file=str(path))
        folder, (name, files) = path, found
    maps = {k: folder / f"{name}.{k}2index" for k in ("item", "user")}
    users_ids = _Ids("user", maps["user"] if maps["user"].is_file() else None)
    items_ids = _Ids("item", maps["item"] if maps["item"].is_file() else None)
    meta_files = [f for f in (folder / f"{name}.item", folder / f"{name}.text") if f.is_file()]

    # read every file, then fix the catalogue, then index: tokens are labels, nothing is allocated by id
    parts = []  # (file, split code or None, user tokens, item tokens, lines, order key or None)
    hist = []  # sequential histories: (file, split code, user tokens, item tokens, lines)
    for split, f in files.items():
        df, types, lines = read_atomic(f, encoding=encoding)
        _require(df, types, user_field, ("token",), f)
        _require(df, types, item_field, ("token",), f)
        u, i = _tokens(df, user_field, f, lines), _tokens(df, item_field, f, lines)
        keep = np.ones(len(df), bool)
        if min_rating is not None:
            _require(df, types, rating_field, ("float",), f)
            keep = _floats(df, rating_field, f, lines) >= min_rating
        key = _floats(df, time_field, f, lines) if (time_field in types and split == "all") else None
        code = None if split == "all" else SPLITS.index(split)
        seq_field = f"{item_field}_list"
        if seq_field in types:
            _require(df, types, seq_field, ("token_seq",), f)
            seqs = df[seq_field].str.split()
            n = seqs.str.len().to_numpy()
            flat = seqs.explode().dropna().to_numpy(dtype=object).astype(str)  # empty lists explode to NaN
            hist.append((f, code, np.repeat(u, n), flat, np.repeat(lines, n)))
        parts.append((f, code, u[keep], i[keep], lines[keep], None if key is None else key[keep]))
        if len(df) == 0:
            raise DataError("no interactions (only a header)", file=str(f))

    meta = [_read_meta(f, item_field, encoding) for f in meta_files]
    users_ids.fix([p[2] for p in parts] + [h[2] for h in hist])
    items_ids.fix([p[3] for p in parts] + [h[3] for h in hist] + [m[1] for m in meta])

    def indexed(f, u, i, lines):
        return users_ids.index(u, f, user_field, lines), items_ids.index(i, f, item_field, lines)

    if "all" in files:
        f, _, u, i, lines, key = parts[0]
        uu, ii = indexed(f, u, i, lines)
        if len(uu) == 0:
            raise DataError(f"no interactions left with {rating_field} >= {min_rating}", file=str(f))
        rows = np.arange(len(uu))
        uu, ii, rows = dedupe(uu, ii, f, rows, order_key=key)
        order_key = key[rows] if key is not None else np.random.default_rng(seed).random(len(lines))[rows]
        labels = per_user_split(uu, order_key)
        src, kind = f, "one .inter, split per user by " + ("time" if key is not None else "random order")
    else:
        chunks = []
        train_hist = [h for h in hist if h[1] == 0]
        for f, code, u, i, lines in train_hist:  # a train row's history: train interactions
            chunks.append((*indexed(f, u, i, lines), np.zeros(len(u), np.int64)))
        for f, code, u, i, lines, _ in parts:
            chunks.append((*indexed(f, u, i, lines), np.full(len(u), code, np.int64)))
        for f, code, u, i, lines in hist:  # held-out rows' histories: train unless seen already
            if code != 0:
                chunks.append((*indexed(f, u, i, lines), np.zeros(len(u), np.int64)))
        uu, ii, labels = (np.concatenate(c) for c in zip(*chunks))
        src = files["train"]
        n_before = len(uu)
        # a pair's first occurrence wins, in the order train, valid, test (then held-out histories)
        key = uu.astype(np.int64) * (int(ii.max(initial=0)) + 1) + ii
        _, first = np.unique(key, return_index=True)
        keep = np.zeros(len(key), bool)
        keep[first] = True
        n_parts = sum(len(c[0]) for c in chunks[:len(train_hist) + len(parts)])
        dropped_heldout = int((~keep[:n_parts] & (labels[:n_parts] > 0)).sum())
        if dropped_heldout:
            log.warning("%s: %d valid/test interactions repeat an earlier interaction of the same user and "
                        "were dropped (the earlier one is kept)", folder / name, dropped_heldout)
        if not hist and not keep.all():  # in sequential files, repeats across histories are the layout
            log.warning("%s: %d duplicate (user, item) interactions dropped, keeping the first (order: "
                        "train, valid, test)", folder / name, int((~keep).sum()))
        uu, ii, labels = uu[keep], ii[keep], labels[keep]
        kind = "sequential, pre-split" if hist else "pre-split"
        log.debug("%s: %d of %d derived pairs kept", folder / name, len(uu), n_before)

    shape = (len(users_ids.tokens), len(items_ids.tokens))
    train, valid, test = split_matrices(uu, ii, labels, shape, src, "split")
    item_meta = _merge_meta(meta, items_ids, shape[1]) if meta else None
    files_read = [str(p) for p in files.values()] + [str(m) for m in maps.values() if m.is_file()] + \
        [str(f) for f in meta_files]
    return Dataset(name=name, train=train, valid=valid, test=test, user_ids=users_ids.ids(),
                   item_ids=items_ids.ids(), item_meta=item_meta,
                   provenance={"format": "recbole", "layout": kind, "files": files_read,
                               "feature_dtypes": {}, "min_rating": min_rating})


def _read_meta(f: Path, item_field: str, encoding: str):
    df, types, lines = read_atomic(f, encoding=encoding)
    _require(df, types, item_field, ("token",), f)
    return f, _tokens(df, item_field, f, lines), (df, types, lines)


def _merge_meta(meta, ids: _Ids, n_items: int) -> pd.DataFrame:
    """One metadata table in item order from the ``.item``/``.text`` files."""
    out = pd.DataFrame(index=range(n_items))
    text_parts = []
    for f, tokens, (df, types, lines) in meta:
        by_ext = ids.external.get_indexer(tokens)
        by_tok = ids.tokens.get_indexer(tokens)
        idx = by_ext if (by_ext >= 0).sum() >= (by_tok >= 0).sum() else by_tok
        if (idx < 0).any():
            r = int(np.flatnonzero(idx < 0)[0])
            where = f"in {ids.map_file.name}" if ids.map_file is not None else "in the interactions"
            raise DataError(f"item {tokens[r]!r} is not {where}", file=str(f), line=int(lines[r]), field="item_id")
        _, first, counts = np.unique(idx, return_index=True, return_counts=True)
        if (counts > 1).any():
            r = int(np.flatnonzero(idx == idx[first[counts > 1][0]])[1])
            raise DataError(f"item {tokens[r]!r} has a second row", file=str(f), line=int(lines[r]), field="item_id")
        for col, typ in types.items():
            if col in (ids.kind + "_id", "item_id") or col in out.columns:
                continue
            vals = np.full(n_items, "", dtype=object)
            vals[idx] = df[col].str.strip().to_numpy(dtype=object)
            out[col] = vals
            if typ == "token_seq":
                text_parts.append(col)
    if "text" not in out.columns:
        joined = pd.Series([""] * n_items, dtype=object)
        for col in text_parts:
            v = out[col].astype(str)
            joined = joined.where(v == "", joined.where(joined == "", joined + ". ") + v)
        out["text"] = joined.to_numpy()
    out.insert(0, "item", ids.external.to_numpy(dtype=object).astype(str))
    return out
