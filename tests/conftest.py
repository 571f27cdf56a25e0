"""Shared fixtures: tiny planted-signal datasets and MMRec-format folders written by the tests."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("PRISMREC_CACHE", "off")  # tests never touch the user's cache
torch.set_num_threads(1)

from prismrec.data import make_synthetic, save_mmrec  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """300 users, 120 items, two modalities (image 24-d, text 16-d)."""
    return make_synthetic(300, 120, 10, modalities={"image": 24, "text": 16}, seed=1, name="tiny")


@pytest.fixture(scope="session")
def tiny_one_modality():
    return make_synthetic(300, 120, 10, modalities={"image": 24}, seed=2, name="tiny1")


@pytest.fixture(scope="session")
def tiny_three_modalities():
    return make_synthetic(300, 120, 10, modalities={"visual": 24, "acoustic": 12, "textual": 16}, seed=3,
                          name="tiny3")


@pytest.fixture
def mmrec_dir(tmp_path, tiny):
    """An MMRec-format folder holding the ``tiny`` dataset."""
    return save_mmrec(tiny, tmp_path / "tiny")


def write_inter(path, rows, header="userID\titemID\trating\ttimestamp\tx_label"):
    """Write an MMRec .inter file from rows of tab-joined values."""
    path.write_text(header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def small_mmrec(folder, n_users=4, n_items=5, dims={"image": 3, "text": 2}):
    """A hand-sized valid MMRec folder: every user has train, valid and test rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for u in range(n_users):
        items = [(u + j) % n_items for j in range(4)]
        rows += [(u, items[0], 5, 1, 0), (u, items[1], 5, 2, 0), (u, items[2], 5, 3, 1), (u, items[3], 5, 4, 2)]
    write_inter(folder / f"{folder.name}.inter", rows)
    rng = np.random.default_rng(0)
    for m, d in dims.items():
        np.save(folder / f"{m}_feat.npy", rng.random((n_items, d)).astype(np.float32))
    return folder
