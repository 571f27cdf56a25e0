"""Loader for MovieLens-100K's raw files: ``u.data`` (ratings) and ``u.item`` (movies).

- ``u.data``: tab-separated ``user id, item id, rating, unix timestamp``, no header.
- ``u.item``: ``|``-separated, latin-1: ``movie id | title | release date | video release date |
  IMDb URL | 19 genre flags`` (genre names from ``u.genre`` when present, else MovieLens-100K's).

Implicit feedback: every rating is a positive by default; ``min_rating=4`` keeps only ratings of 4
and 5, the other common choice. The positives are split per user **by timestamp**, 80/10/10 by
MMRec's rule (:func:`prismrec.data.split.per_user_split`: a user's latest interactions go to
valid, then test; ties keep file order), so the held-out items are each user's most recent
movies. Repeated (user, movie) rows are dropped first, keeping the earliest.

External ids are the files' integer ids; the catalogue is every movie of ``u.item`` (with or
without positives), or the movies of ``u.data`` when ``u.item`` is absent. ``u.item`` becomes
:attr:`~prismrec.data.Dataset.item_meta`: ``title`` (with its year, as MovieLens writes it),
``year``, ``release_date``, ``genres`` (comma-separated names), ``imdb_url`` and ``text`` =
``"<title>. <genres>"``, the text ``prismrec extract`` encodes.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.data.dataset import Dataset
from prismrec.data.split import per_user_split
from prismrec.data.validate import dedupe, integer_column, require_file, split_matrices
from prismrec.errors import DataError

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
DATA_FIELDS = ("user_id", "item_id", "rating", "timestamp")


def is_movielens(folder: Path) -> bool:
    """Whether ``folder`` holds MovieLens-100K's ``u.data``."""
    return (Path(folder) / "u.data").is_file()


def _read(path: Path, sep: str, n_fields: int | None, names, encoding: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep=sep, header=None, dtype=str, na_filter=False, quoting=csv.QUOTE_NONE,
                         encoding=encoding, skip_blank_lines=False, names=names)
    except pd.errors.EmptyDataError:
        raise DataError("empty file", file=str(path), line=1) from None
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+)", str(e))
        raise DataError(f"expected {n_fields or len(names)} {sep!r}-separated fields per line", file=str(path),
                        line=int(m.group(1)) if m else None) from None
    except UnicodeDecodeError as e:
        raise DataError(f"expected {encoding} text ({e})", file=str(path)) from None
    if n_fields is not None and df.shape[1] != n_fields:
        raise DataError(f"expected {n_fields} {sep!r}-separated fields per line, got {df.shape[1]}",
                        file=str(path), line=1)
    return df


def _trailing_blank_dropped(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``df`` without blank lines at its end; a blank line between rows is an error (it has no fields)."""
    blank = (df == "").all(axis=1).to_numpy()
    if not blank.any():
        return df
    last = int(np.flatnonzero(~blank)[-1]) if (~blank).any() else -1
    if blank[: last + 1].any():
        r = int(np.flatnonzero(blank[: last + 1])[0])
        raise DataError("expected a row of fields, got an empty line", file=str(path), line=r + 1)
    return df.iloc[: last + 1]


def _genre_names(folder: Path) -> list[str]:
    f = folder / "u.genre"
    if not f.is_file():
        return list(GENRES)
    df = _read(f, "|", 2, None, "latin-1")
    df.columns = ["genre", "index"]
    df = _trailing_blank_dropped(df, f)
    idx = integer_column(df, "index", f, header_lines=0)
    if sorted(idx.tolist()) != list(range(len(idx))):
        raise DataError(f"expected genre indices 0..{len(idx) - 1}", file=str(f), field="index")
    names = [""] * len(idx)
    for name, k in zip(df["genre"], idx):
        names[k] = name
    return names


def _read_items(folder: Path) -> tuple[np.ndarray, pd.DataFrame] | None:
    f = folder / "u.item"
    if not f.is_file():
        return None
    genres = _genre_names(folder)
    df = _read(f, "|", 5 + len(genres), None, "latin-1")
    df.columns = ["movie_id", "title", "release_date", "video_release_date", "imdb_url", *genres]
    df = _trailing_blank_dropped(df, f)
    ids = integer_column(df, "movie_id", f, header_lines=0)
    ids_lines = np.arange(len(ids)) + 1
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        r = int(np.flatnonzero(ids == ids[first[counts > 1][0]])[1])
        raise DataError(f"movie id {ids[r]} appears twice", file=str(f), line=int(ids_lines[r]), field="movie_id")
    flags = df.iloc[:, 5:]
    ok = flags.isin(["0", "1"]).to_numpy()
    if not ok.all():
        r, c = map(int, np.argwhere(~ok)[0])
        raise DataError(f"expected a genre flag 0 or 1, got {flags.iat[r, c]!r}", file=str(f),
                        line=int(ids_lines[r]), field=genres[c])
    on = flags.to_numpy() == "1"
    names = np.array(genres, dtype=object)
    genre_text = [", ".join(names[row]) for row in on]  # one join per movie; 1,682 rows
    title = df["title"].str.strip()
    release = df["release_date"].str.strip()
    year = release.str.extract(r"(\d{4})\s*$")[0].fillna(title.str.extract(r"\((\d{4})\)\s*$")[0]).fillna("")
    meta = pd.DataFrame({"item": ids.astype(str), "title": title, "year": year, "release_date": release,
                         "genres": genre_text, "imdb_url": df["imdb_url"].str.strip()})
    meta["text"] = np.where(meta["genres"] != "", meta["title"] + ". " + meta["genres"], meta["title"])
    order = np.argsort(ids, kind="stable")
    return ids[order], meta.iloc[order].reset_index(drop=True)


def load_movielens(path: str | Path, *, min_rating: float | None = None) -> Dataset:
    """Load a MovieLens-100K folder (``u.data`` and, when present, ``u.item``); see the module docstring.

    Args:
        path: the folder holding ``u.data`` (or the ``u.data`` file itself).
        min_rating: keep only ratings at least this (e.g. ``4``); ``None`` keeps every rating.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    data = require_file(path if path.is_file() else folder / "u.data", "MovieLens ratings (u.data)")
    df = _read(data, "\t", 4, None, "utf-8")
    df.columns = list(DATA_FIELDS)
    df = _trailing_blank_dropped(df, data)
    if len(df) == 0:
        raise DataError("no ratings", file=str(data))
    users = integer_column(df, "user_id", data, header_lines=0)
    items = integer_column(df, "item_id", data, header_lines=0)
    ratings = pd.to_numeric(df["rating"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(ratings)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"expected a number, got {df['rating'].iloc[r]!r}", file=str(data), line=r + 1,
                        field="rating")
    times = integer_column(df, "timestamp", data, header_lines=0).astype(np.float64)

    found = _read_items(folder)
    if found is not None:
        item_ids, meta = found
        pos = np.searchsorted(item_ids, items)
        unknown = (pos >= len(item_ids)) | (item_ids[np.minimum(pos, len(item_ids) - 1)] != items)
        if unknown.any():
            r = int(np.flatnonzero(unknown)[0])
            raise DataError(f"movie {items[r]} is not in u.item", file=str(data), line=r + 1, field="item_id")
        items_idx = pos.astype(np.int64)
    else:
        item_ids, items_idx = np.unique(items, return_inverse=True)
        meta = None
    user_ids, users_idx = np.unique(users, return_inverse=True)
    rows = np.arange(len(df))
    if min_rating is not None:
        rows = rows[ratings >= min_rating]
        if len(rows) == 0:
            raise DataError(f"no ratings >= {min_rating}", file=str(data), field="rating")
    users_idx, items_idx, rows = dedupe(users_idx[rows], items_idx[rows], data, rows, header_lines=0,
                                        order_key=times[rows])
    labels = per_user_split(users_idx, times[rows])
    shape = (len(user_ids), len(item_ids))
    train, valid, test = split_matrices(users_idx, items_idx, labels, shape, data, "timestamp")
    files = [str(data)] + [str(folder / f) for f in ("u.item", "u.genre") if (folder / f).is_file()]
    name = folder.name if folder.name != "raw" else folder.parent.name
    return Dataset(name=name, train=train, valid=valid, test=test, user_ids=user_ids, item_ids=item_ids,
                   item_meta=meta, provenance={"format": "movielens", "files": files, "feature_dtypes": {},
                                               "min_rating": min_rating,
                                               "layout": "split per user by time, 80/10/10"})
