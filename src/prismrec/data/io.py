"""Writing datasets to disk (MMRec format), atomically."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from prismrec.data.dataset import Dataset


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``folder`` to write into; on success it replaces ``folder``
    in one rename, on any error it is removed, so readers never see a half-written folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_mmrec(dataset: Dataset, folder: str | Path) -> Path:
    """Write ``dataset`` as an MMRec folder (``<name>.inter`` + ``<modality>_feat.npy``).

    The folder is written under a temporary name and renamed into place, so a crash never
    leaves a half-written dataset. Internal indices become the ids (MMRec ids are contiguous).
    """
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        frames = []
        for label, split in enumerate(("train", "valid", "test")):
            coo = dataset.split(split).tocoo()
            frames.append(pd.DataFrame({"userID": coo.row, "itemID": coo.col, "rating": 1,
                                        "timestamp": 0, "x_label": label}))
        df = pd.concat(frames).sort_values(["userID", "x_label", "itemID"], kind="stable")
        df.to_csv(tmp / f"{folder.name}.inter", sep="\t", index=False)
        for m, f in dataset.features.items():
            np.save(tmp / f"{m}_feat.npy", f)
    return folder
