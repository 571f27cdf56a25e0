"""External <-> internal id mapping shared by :class:`Dataset` and bundles."""
from __future__ import annotations

import numpy as np


class IdMap:
    """Maps external ids (any JSON scalar, compared as strings) to contiguous internal indices.

    Args:
        ids: external ids in internal order.
        kind: 'user' or 'item', used in error messages.
    """

    def __init__(self, ids, kind: str):
        self.ids = np.asarray(ids)
        self.kind = kind
        keys = self.ids if self.ids.dtype.kind in "iu" else self.ids.astype(str)
        if len(np.unique(keys)) != len(self.ids):
            raise ValueError(f"duplicate external {kind} ids")
        self._lookup: dict[str, int] | None = None  # built on the first lookup (serving, recommend), not
        # in training: one Python string per id is ~120 MB at a million users

    @property
    def _index(self) -> dict[str, int]:
        if self._lookup is None:
            self._lookup = {str(v): i for i, v in enumerate(self.ids.tolist())}
        return self._lookup

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external) -> bool:
        return str(external) in self._index

    def index(self, external) -> np.ndarray | int:
        """Internal index (or array of indices) of external id(s); ``KeyError`` names an unknown one."""
        if np.ndim(external) == 0:
            return self._one(external)
        return np.fromiter((self._one(e) for e in np.asarray(external).tolist()), dtype=np.int64)

    def _one(self, e) -> int:
        try:
            return self._index[str(e)]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{e}'") from None

    def external(self, internal):
        """External id(s) of internal index/indices, as Python scalars."""
        out = self.ids[np.asarray(internal)]
        return out.tolist()

    def to_json(self) -> list:
        return self.ids.tolist()
