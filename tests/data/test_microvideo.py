"""Micro-video format: round trip, detection, and one test per kind of bad input."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from prismrec.data import load_dataset
from prismrec.data.microvideo import is_microvideo, load_microvideo, make_microvideo, save_microvideo
from prismrec.errors import DataError
from tests.data.helpers import expect_data_error


def write_folder(folder, n_users=4, n_items=6, fmt="npy", dims={"v": 3, "a": 2, "t": 4}):
    """A small valid micro-video folder: every user has train, val and test interactions."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "val": [], "test": []}
    for u in range(n_users):
        its = [(u + j) % n_items for j in range(4)]
        splits["train"] += [(u, its[0]), (u, its[1])]
        splits["val"].append((u, its[2]))
        splits["test"].append((u, its[3]))
    for s, pairs in splits.items():
        if fmt == "npy":
            np.save(folder / f"{s}.npy", np.array(pairs, dtype=np.int64))
        else:
            d = {}
            for u, i in pairs:
                d.setdefault(str(u), []).append(i)
            (folder / f"{s}.json").write_text(json.dumps(d))
    rng = np.random.default_rng(0)
    for m, d in dims.items():
        np.save(folder / f"{m}_feat.npy", rng.random((n_items, d)).astype(np.float32))
    return folder


def expect(folder, match, **fields):
    return expect_data_error(load_microvideo, folder, match=match, **fields)


@pytest.mark.parametrize("fmt", ["npy", "json"])
def test_load_valid(tmp_path, fmt):
    folder = write_folder(tmp_path / "mv", fmt=fmt)
    assert is_microvideo(folder)
    ds = load_dataset(folder)
    assert (ds.n_users, ds.n_items) == (4, 6)
    assert ds.modalities == ["visual", "acoustic", "textual"]
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (8, 4, 4)


def test_roundtrip_synthetic(tmp_path):
    ds, noise = make_microvideo(200, 120, 10, seed=3)
    folder = save_microvideo(ds, tmp_path / "synth", noise)
    back = load_dataset(folder)
    for s in ("train", "valid", "test"):
        assert (ds.split(s) != back.split(s)).nnz == 0
    for m in ds.features:
        np.testing.assert_array_equal(ds.features[m], back.features[m])
    assert json.loads((folder / "noise_items.json").read_text())["visual"] == noise["visual"].tolist()


def test_synthetic_noise_subset_is_noise():
    """Clean rows of one modality are partly predictable from another (shared latent part);
    the noise rows are not; and the noise has the clean rows' scale (no marker)."""
    ds, noise = make_microvideo(300, 600, 8, noise_fraction=0.3, seed=0)
    v, t = ds.features["visual"], ds.features["textual"]
    clean = np.setdiff1d(np.arange(600), np.concatenate(list(noise.values())))
    w, *_ = np.linalg.lstsq(t[clean], v[clean], rcond=None)
    err = lambda rows: np.mean((t[rows] @ w - v[rows]) ** 2) / np.var(v[clean])  # noqa: E731
    assert err(clean) < 0.6 and err(noise["visual"]) > 0.9
    assert sum(len(g) for g in noise.values()) == 180 and not set(noise["visual"]) & set(noise["acoustic"])
    assert v[noise["visual"]].std() == pytest.approx(v[clean].std(), rel=0.2)
    _, only = make_microvideo(100, 90, 8, noise_fraction=0.3, noisy_modalities=["acoustic"], seed=0)
    assert list(only) == ["acoustic"] and len(only["acoustic"]) == 27


def test_item_offset(tmp_path):
    folder = write_folder(tmp_path / "mv")
    for s in ("train", "val", "test"):  # MMGCN stores items offset by n_users
        np.save(folder / f"{s}.npy", np.load(folder / f"{s}.npy") + np.array([0, 4]))
    with pytest.raises(DataError):
        load_microvideo(folder)
    ds = load_microvideo(folder, item_offset=4)
    assert ds.train.nnz == 8


def test_duplicates_dropped_with_warning(tmp_path, caplog):
    folder = write_folder(tmp_path / "mv")
    np.save(folder / "train.npy", np.concatenate([np.load(folder / "train.npy"), [[0, 0]]]))
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        ds = load_microvideo(folder)
    assert ds.train.nnz == 8 and "duplicate" in caplog.text


# --- bad inputs: one test each ---------------------------------------------------------------
def test_missing_folder(tmp_path):
    expect(tmp_path / "nope", "not found")


def test_missing_split(tmp_path):
    folder = write_folder(tmp_path / "mv")
    (folder / "val.npy").unlink()
    expect(folder, "missing val interactions")


def test_both_npy_and_json(tmp_path):
    folder = write_folder(tmp_path / "mv")
    (folder / "test.json").write_text("{}")
    expect(folder, "both test.npy and test.json")


def test_pickled_object_array(tmp_path):
    folder = write_folder(tmp_path / "mv")
    np.save(folder / "val.npy", np.array([[0, 1, 2], [1]], dtype=object), allow_pickle=True)
    e = expect(folder, "pickled")
    assert e.file.endswith("val.npy")


def test_wrong_shape(tmp_path):
    folder = write_folder(tmp_path / "mv")
    np.save(folder / "train.npy", np.zeros((5, 3), np.int64))
    expect(folder, r"shape \[n, 2\]")


def test_non_integer_id(tmp_path):
    folder = write_folder(tmp_path / "mv")
    pairs = np.load(folder / "train.npy").astype(np.float64)
    pairs[3, 1] = 2.5
    np.save(folder / "train.npy", pairs)
    expect(folder, "integer id, got 2.5", line=4, field="item")


def test_negative_user(tmp_path):
    folder = write_folder(tmp_path / "mv")
    pairs = np.load(folder / "test.npy")
    pairs[2, 0] = -1
    np.save(folder / "test.npy", pairs)
    expect(folder, "non-negative", line=3, field="user")


def test_item_out_of_range(tmp_path):
    folder = write_folder(tmp_path / "mv")
    pairs = np.load(folder / "train.npy")
    pairs[5, 1] = 6
    np.save(folder / "train.npy", pairs)
    expect(folder, r"id in \[0, 6\)", line=6, field="item")


@pytest.mark.parametrize("split, text, match, fields", [
    ("val", '{\n "0": [1,\n}', "not valid JSON", {"line": 3}),
    ("train", "[[0, 1]]", "expected an object", {}),
    ("train", '{"alice": [1]}', "integer user id as key, got 'alice'", {"field": "user"}),
    ("train", '{"0": 1}', "list of item ids for user '0'", {"field": "item"}),
    ("train", '{"0": [1, "x"]}', "position 1 of user '0'", {"field": "item"}),
    ("test", '{"0": [1], "2": [9]}', r"got 9 \(user 2\)", {"field": "item"}),
], ids=["syntax", "not-object", "bad-user-key", "value-not-list", "bad-item", "item-out-of-range"])
def test_json_bad_split(tmp_path, split, text, match, fields):
    folder = write_folder(tmp_path / "mv", fmt="json")
    (folder / f"{split}.json").write_text(text)
    expect(folder, match, **fields)


def test_empty_split(tmp_path):
    folder = write_folder(tmp_path / "mv")
    np.save(folder / "test.npy", np.zeros((0, 2), np.int64))
    expect(folder, "test split is empty")


def test_no_features(tmp_path):
    folder = write_folder(tmp_path / "mv", dims={})
    expect(folder, "at least one of v_feat.npy")


def test_feature_rows_mismatch(tmp_path):
    folder = write_folder(tmp_path / "mv")
    np.save(folder / "t_feat.npy", np.zeros((5, 4), np.float32))
    e = expect(folder, "expected 6 rows", field="textual")
    assert e.file.endswith("t_feat.npy")


def test_feature_not_finite(tmp_path):
    folder = write_folder(tmp_path / "mv")
    f = np.load(folder / "a_feat.npy")
    f[2, 1] = np.nan
    np.save(folder / "a_feat.npy", f)
    expect(folder, "item row 2, column 1", field="acoustic")


def test_unknown_modality(tmp_path):
    folder = write_folder(tmp_path / "mv")
    with pytest.raises(DataError, match="unknown modality"):
        load_microvideo(folder, modalities=["audio"])
