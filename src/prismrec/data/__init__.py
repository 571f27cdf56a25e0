"""Datasets: the :class:`Dataset` type, loaders per format, the synthetic generator, samplers."""
from __future__ import annotations

from pathlib import Path

from prismrec.data.dataset import Dataset
from prismrec.data.generic import load_generic
from prismrec.data.io import save_mmrec
from prismrec.data.mmrec import load_mmrec
from prismrec.data.synthetic import make_synthetic
from prismrec.errors import DataError

__all__ = ["Dataset", "load_dataset", "load_mmrec", "load_generic", "make_synthetic", "save_mmrec"]


def load_dataset(path: str | Path, **kwargs) -> Dataset:
    """Load a dataset, detecting its format.

    - ``synthetic`` (the literal string): the embedded planted-signal dataset;
    - a folder with ``<name>.inter``: MMRec format;
    - a folder with ``interactions.csv|tsv|parquet`` or such a file: generic format;
    - a folder with ``train.json``/``v_feat.npy`` etc.: micro-video format (when available).
    """
    if str(path) == "synthetic":
        return make_synthetic(**kwargs)
    p = Path(path)
    if not p.exists():
        raise DataError("missing dataset: no such file or folder", file=str(p))
    if p.is_dir():
        if list(p.glob("*.inter")):
            return load_mmrec(p, **kwargs)
        if any((p / f"interactions.{ext}").is_file() for ext in ("csv", "tsv", "parquet")):
            return load_generic(p, **kwargs)
        try:
            from prismrec.data import microvideo
        except ImportError:
            microvideo = None
        if microvideo is not None and microvideo.is_microvideo(p):
            return microvideo.load_microvideo(p, **kwargs)
        raise DataError("unknown dataset layout: expected <name>.inter (MMRec) or interactions.csv/.parquet "
                        "(generic)", file=str(p))
    if p.suffix in (".csv", ".tsv", ".parquet"):
        return load_generic(p, **kwargs)
    raise DataError("unknown dataset file type: expected a folder, .csv, .tsv or .parquet", file=str(p))
