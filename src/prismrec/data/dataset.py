"""The immutable :class:`Dataset` every loader returns and every model consumes."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from prismrec.data.idmap import IdMap
from prismrec.errors import DataError


def _frozen_csr(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    for a in (m.data, m.indices, m.indptr):
        a.setflags(write=False)
    return m


@dataclass(frozen=True, eq=False)
class Dataset:
    """Interactions split into train/valid/test plus item features per modality.

    All matrices are ``scipy.sparse.csr_matrix`` of shape ``[n_users, n_items]`` with internal
    (0-based, contiguous) indices; ``user_ids[u]`` / ``item_ids[i]`` give the external ids.

    Args:
        name: dataset name (folder name for MMRec data).
        train, valid, test: binary interaction matrices.
        features: modality name -> float32 array ``[n_items, d_m]``.
        user_ids, item_ids: external ids in internal order.
        cache_dir: where derived structures (kNN graphs) may be cached; ``None`` disables caching.
        item_meta: optional item metadata, one row per item in internal order (string columns such
            as ``title``, ``genres``, ``text``); a ``text`` column is the text ``prismrec extract``
            encodes by default.
        provenance: what the loader read: ``format``, ``files``, ``feature_dtypes`` (modality ->
            dtype on disk, before the float32 cast), ``dropped_duplicates``, ...
    """

    name: str
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    features: dict[str, np.ndarray] = field(default_factory=dict)
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    cache_dir: Path | None = None
    item_meta: pd.DataFrame | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        shape = self.train.shape
        for split in ("valid", "test"):
            if getattr(self, split).shape != shape:
                raise DataError(f"{split} matrix shape {getattr(self, split).shape} != train {shape}")
        for split in ("train", "valid", "test"):
            object.__setattr__(self, split, _frozen_csr(getattr(self, split)))
        feats = {}
        for m, f in self.features.items():
            f = np.ascontiguousarray(f, dtype=np.float32)
            if f.ndim != 2 or f.shape[0] != shape[1]:
                raise DataError(f"expected [{shape[1]}, d] (one row per item), got {list(f.shape)}",
                                field=f"{m} features")
            f.setflags(write=False)
            feats[m] = f
        object.__setattr__(self, "features", feats)
        uid = np.arange(shape[0]) if self.user_ids is None else np.asarray(self.user_ids)
        iid = np.arange(shape[1]) if self.item_ids is None else np.asarray(self.item_ids)
        if len(uid) != shape[0] or len(iid) != shape[1]:
            raise DataError("id maps do not match the matrix shape")
        object.__setattr__(self, "user_ids", uid)
        object.__setattr__(self, "item_ids", iid)
        if self.item_meta is not None:
            if not isinstance(self.item_meta, pd.DataFrame) or len(self.item_meta) != shape[1]:
                raise DataError(f"item metadata: expected a table of {shape[1]} rows (one per item), got "
                                f"{type(self.item_meta).__name__} of {len(self.item_meta)} rows")
            object.__setattr__(self, "item_meta", self.item_meta.reset_index(drop=True))
        object.__setattr__(self, "provenance", dict(self.provenance))

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    def split(self, name: str) -> sp.csr_matrix:
        """The interaction matrix of split ``name`` ('train', 'valid' or 'test')."""
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split '{name}'; expected train, valid or test")
        return getattr(self, name)

    @cached_property
    def user_map(self) -> IdMap:
        """External <-> internal user ids."""
        return IdMap(self.user_ids, "user")

    @cached_property
    def item_map(self) -> IdMap:
        """External <-> internal item ids."""
        return IdMap(self.item_ids, "item")

    def info(self) -> dict:
        """Summary statistics: users, items, interactions, density, per-split counts, modalities."""
        counts = {s: int(self.split(s).nnz) for s in ("train", "valid", "test")}
        total = sum(counts.values())
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": total,
            "density": total / max(1, self.n_users * self.n_items),
            "splits": counts,
            "modalities": {m: int(f.shape[1]) for m, f in self.features.items()},
        }

