"""MMRec loader: the real format, and one test per bad-input case (issue 3)."""
import logging

import numpy as np
import pytest

from prismrec.data import load_dataset, load_mmrec
from prismrec.errors import DataError
from tests.conftest import small_mmrec, write_inter


def test_loads_mmrec_folder(tmp_path):
    folder = small_mmrec(tmp_path / "toy")
    ds = load_mmrec(folder)
    assert (ds.n_users, ds.n_items) == (4, 5)
    assert ds.train.nnz == 8 and ds.valid.nnz == 4 and ds.test.nnz == 4
    assert ds.modalities == ["image", "text"]
    assert ds.features["image"].shape == (5, 3) and ds.features["image"].dtype == np.float32
    assert ds.name == "toy"
    assert load_dataset(folder).info() == ds.info()


def test_roundtrip_save_load(mmrec_dir, tiny):
    ds = load_mmrec(mmrec_dir)
    for s in ("train", "valid", "test"):
        assert (ds.split(s) != tiny.split(s)).nnz == 0
    np.testing.assert_array_equal(ds.features["text"], tiny.features["text"])


def test_missing_inter_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*missing interactions.*empty\.inter"):
        load_mmrec(tmp_path / "empty")


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nope")


def test_missing_column(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    write_inter(folder / "d.inter", [(0, 1, 5, 1)], header="userID\titemID\trating\ttimestamp")
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert e.value.field == "x_label" and e.value.line == 1 and "d.inter" in str(e.value)


def test_non_numeric_id(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    write_inter(folder / "d.inter", [(0, 1, 5, 1, 0), (1, 2, 5, 1, 1), ("u7", 3, 5, 1, 2)])
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert (e.value.line, e.value.field) == (4, "userID")
    assert "expected an integer" in str(e.value) and "'u7'" in str(e.value)


def test_x_label_out_of_range(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    write_inter(folder / "d.inter", [(0, 1, 5, 1, 0), (1, 2, 5, 1, 3)])
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert (e.value.line, e.value.field) == (3, "x_label") and "[0, 1, 2]" in str(e.value)


def test_feature_rows_mismatch(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    np.save(folder / "image_feat.npy", np.ones((7, 3), np.float32))
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert e.value.field == "image" and "expected 5 rows" in str(e.value) and "image_feat.npy" in str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features(tmp_path, bad):
    folder = small_mmrec(tmp_path / "d")
    f = np.ones((5, 2), np.float32)
    f[3, 1] = bad
    np.save(folder / "text_feat.npy", f)
    with pytest.raises(DataError, match=r"text_feat\.npy.*field 'text'.*finite.*item row 3, column 1"):
        load_mmrec(folder)


def test_empty_split(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    write_inter(folder / "d.inter", [(0, 1, 5, 1, 0), (1, 2, 5, 1, 0), (1, 3, 5, 1, 2)])
    with pytest.raises(DataError, match=r"valid split is empty.*x_label=1"):
        load_mmrec(folder)


def test_duplicates_are_dropped_with_warning(tmp_path, caplog):
    folder = small_mmrec(tmp_path / "d")
    rows = [(0, 0, 5, 1, 0), (0, 1, 5, 1, 0), (0, 1, 4, 2, 0), (0, 2, 5, 3, 1), (0, 4, 5, 4, 2)]
    write_inter(folder / "d.inter", rows)
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        ds = load_mmrec(folder)
    assert ds.train.nnz == 2
    assert "1 duplicate" in caplog.text and "d.inter" in caplog.text and "line 4" in caplog.text


def test_header_only(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    write_inter(folder / "d.inter", [])
    with pytest.raises(DataError, match="no interactions"):
        load_mmrec(folder)


def test_pickled_npy_refused(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    np.save(folder / "image_feat.npy", np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="plain numeric"):
        load_mmrec(folder)
