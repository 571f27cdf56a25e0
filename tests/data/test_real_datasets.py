"""Every real dataset of ``../shared/data/real/`` loads as it is, with the counts its SOURCE.md states.

The data is research-only and lives outside the repository; each test skips, saying why, where it
is absent. Run with ``pytest -m slow tests/data/test_real_datasets.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prismrec.data import load_dataset

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
pytestmark = pytest.mark.slow


def _folder(name: str) -> Path:
    p = REAL / name
    if not p.is_dir():
        pytest.skip(f"real dataset {name} not found at {p} (research-only data, kept outside the repository)")
    return p


def _counts(ds):
    return ds.n_users, ds.n_items, ds.train.nnz + ds.valid.nnz + ds.test.nnz, \
        (ds.train.nnz, ds.valid.nnz, ds.test.nnz)


def test_tiktok_diffmm():
    ds = load_dataset(_folder("tiktok-diffmm"))
    assert _counts(ds) == (9308, 6710, 68722, (59541, 3051, 6130))
    assert {m: f.shape for m, f in ds.features.items()} == {"image": (6710, 128), "audio": (6710, 128)}
    assert ds.provenance["feature_dtypes"] == {"image": "float16", "audio": "float16"}
    assert all(f.dtype == np.float32 for f in ds.features.values())
    # SOURCE.md: 10 users without train rows, 465 items only in valid/test, valid and test users disjoint
    assert int((np.diff(ds.train.indptr) == 0).sum()) == 10
    in_train = np.zeros(ds.n_items, bool)
    in_train[ds.train.indices] = True
    assert int((~in_train).sum()) == 465
    assert not (np.diff(ds.valid.indptr) > 0)[np.diff(ds.test.indptr) > 0].any()
    # mean row norms 33.1 (image) and 4.5 (audio)
    assert np.linalg.norm(ds.features["image"], axis=1).mean() == pytest.approx(33.1, abs=0.1)
    assert np.linalg.norm(ds.features["audio"], axis=1).mean() == pytest.approx(4.5, abs=0.1)


def test_baby_diffmm():
    ds = load_dataset(_folder("baby-diffmm"))
    # x_label 1 = DiffMM's tstMat (20,559), x_label 2 = its valMat (21,682)
    assert _counts(ds) == (19445, 7050, 160792, (118551, 20559, 21682))
    assert ds.modalities == []
    assert int(np.diff(ds.train.indptr).min()) >= 3


def test_amazon_sports_p5():
    ds = load_dataset(_folder("amazon-sports-p5"))
    assert _counts(ds) == (35598, 18357, 296337, (218409, 37899, 40029))
    per_user = np.diff((ds.train + ds.valid + ds.test).indptr)
    assert int(per_user.min()) >= 5


def test_ml_100k():
    folder = _folder("ml-100k")
    ds = load_dataset(folder)
    assert ds.provenance["format"] == "movielens" and ds.name == "ml-100k"
    n_users, n_items, n, _ = _counts(ds)
    assert (n_users, n_items, n) == (943, 1682, 100000)
    # SOURCE.md: ratings 4 -> 34,174 and 5 -> 21,201
    liked = load_dataset(folder, min_rating=4)
    assert liked.train.nnz + liked.valid.nnz + liked.test.nnz == 34174 + 21201
    # every user has >= 20 ratings, so 80/10/10 holds out int(0.2 n) per user
    per_user = np.diff((ds.train + ds.valid + ds.test).indptr)
    assert int(per_user.min()) >= 20
    assert ds.valid.nnz + ds.test.nnz == int((0.2 * per_user).astype(int).sum())
    meta = ds.item_meta
    assert len(meta) == 1682 and meta["title"][0] == "Toy Story (1995)"
    assert meta["genres"][0] == "Animation, Children's, Comedy" and meta["year"][0] == "1995"


def test_scientific_unisrec():
    folder = _folder("scientific-unisrec")
    ds = load_dataset(folder)
    assert ds.provenance["format"] == "recbole" and ds.provenance["layout"].startswith("sequential")
    assert (ds.n_users, ds.n_items) == (8442, 4385)
    assert ds.user_ids[0] == "ABW8NXS7SV55K" and ds.item_ids[0] == "B00TNNWMXI"  # the token maps' ids
    assert (ds.item_meta["text"] != "").all()
    assert ds.item_meta["text"][ds.item_map.index("B0000223SI")].startswith("PORTER-CABLE 740000801")
    # one valid and one test row per user (SOURCE.md); a target that repeats an item of its own history
    # stays a train interaction, so those users have no valid (or test) item. Count them from the raw rows.
    raw = folder / "raw"
    for split, mat in (("valid", ds.valid), ("test", ds.test)):
        lines = (raw / f"Scientific.{split}.inter").read_text().splitlines()[1:]
        assert len(lines) == 8442
        repeats = sum(t in h.split() for _, h, t in (line.split("\t") for line in lines))
        assert mat.nnz == 8442 - repeats
        assert int(np.diff(mat.indptr).max()) == 1
    # train rows: 34,101 = 59,427 - 3 x 8,442 (the published count under UniSRec's construction)
    assert len((raw / "Scientific.train.inter").read_text().splitlines()) - 1 == 34101
    assert not ds.train.multiply(ds.valid).nnz and not ds.train.multiply(ds.test).nnz
