"""Datasets: the :class:`Dataset` type, loaders per format, the synthetic generator, samplers."""
from __future__ import annotations

from pathlib import Path

from prismrec.data.dataset import Dataset
from prismrec.data.generic import load_generic
from prismrec.data.io import save_mmrec
from prismrec.data.mmrec import load_mmrec
from prismrec.data.movielens import load_movielens
from prismrec.data.recbole import load_recbole
from prismrec.data.synthetic import make_synthetic
from prismrec.errors import DataError

__all__ = ["Dataset", "load_dataset", "load_mmrec", "load_generic", "load_movielens", "load_recbole",
           "make_synthetic", "save_mmrec"]


def load_dataset(path: str | Path, **kwargs) -> Dataset:
    """Load a dataset, detecting its format.

    - ``synthetic`` (the literal string): the embedded planted-signal dataset;
    - a folder with ``.inter`` files whose header fields are ``name:type`` (``user_id:token``):
      RecBole atomic files (:func:`load_recbole`), single or pre-split;
    - a folder with ``<name>.inter`` whose header has no ``:`` (``userID itemID ... x_label``):
      MMRec format (:func:`load_mmrec`);
    - a folder with ``u.data``: MovieLens-100K (:func:`load_movielens`);
    - a folder with ``interactions.csv|tsv|parquet`` or such a file: generic format;
    - a folder with ``train.json``/``v_feat.npy`` etc.: micro-video format;
    - a folder holding none of these but a ``raw/`` sub-folder that does: that sub-folder (the
      layout of ``shared/data/real/<dataset>/raw``);
    - a single ``.inter`` file with a RecBole header, or a ``u.data`` file.

    Keyword arguments go to the loader (e.g. ``min_rating=4`` for MovieLens or RecBole).
    """
    if str(path) == "synthetic":
        return make_synthetic(**kwargs)
    p = Path(path)
    if not p.exists():
        raise DataError("missing dataset: no such file or folder", file=str(p))
    if p.is_dir():
        found = _load_folder(p, kwargs)
        if found is None and (p / "raw").is_dir():
            found = _load_folder(p / "raw", kwargs)
        if found is None:
            raise DataError("unknown dataset layout: expected <name>.inter (MMRec or RecBole), u.data "
                            "(MovieLens), interactions.csv/.parquet (generic) or train.npy/.json (micro-video)",
                            file=str(p))
        return found
    if p.suffix == ".inter":
        from prismrec.data.recbole import _first_line, is_recbole_header
        if is_recbole_header(_first_line(p)):
            return load_recbole(p, **kwargs)
        raise DataError("a single MMRec .inter file: pass its folder (feature files sit beside it)", file=str(p))
    if p.name == "u.data":
        return load_movielens(p, **kwargs)
    if p.suffix in (".csv", ".tsv", ".parquet"):
        return load_generic(p, **kwargs)
    raise DataError("unknown dataset file type: expected a folder, .csv, .tsv, .parquet, a RecBole .inter or "
                    "u.data", file=str(p))


def _load_folder(p: Path, kwargs: dict) -> Dataset | None:
    from prismrec.data.recbole import find_recbole
    if list(p.glob("*.inter")):
        if find_recbole(p) is not None:
            return load_recbole(p, **kwargs)
        return load_mmrec(p, **kwargs)
    if (p / "u.data").is_file():
        return load_movielens(p, **kwargs)
    if any((p / f"interactions.{ext}").is_file() for ext in ("csv", "tsv", "parquet")):
        return load_generic(p, **kwargs)
    from prismrec.data import microvideo
    if microvideo.is_microvideo(p):
        return microvideo.load_microvideo(p, **kwargs)
    return None
