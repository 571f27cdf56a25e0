"""Loader gaps of issue 22 (item 5): each case is a clear DataError (or the right data), never a traceback."""
import logging
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from prismrec.data import load_dataset, load_generic, load_mmrec
from prismrec.data.validate import id_bound
from prismrec.errors import DataError
from tests.conftest import small_mmrec, write_inter
from tests.data.helpers import expect_data_error


# Issue 22: an empty .inter gave pandas' EmptyDataError traceback
def test_empty_inter_file(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    (folder / "d.inter").write_text("")
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert e.value.line == 1 and "empty file" in str(e.value) and "d.inter" in str(e.value)


def _no_features(folder):
    for f in folder.glob("*_feat.npy"):
        f.unlink()
    return folder


# Issue 22: an itemID of 10**12 with no feature file tried a 7 TiB allocation
def test_huge_item_id_is_refused_before_allocating(tmp_path):
    folder = _no_features(small_mmrec(tmp_path / "d"))
    write_inter(folder / "d.inter", [(0, 1, 5, 1, 0), (0, 2, 5, 1, 1), (0, 10**12, 5, 1, 2)])
    tracemalloc.start()
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (e.value.line, e.value.field) == (4, "itemID")
    assert "1,000,000,000,001" in str(e.value) and "remap" in str(e.value)
    assert peak < 50 * 2**20


# Issue 22: an itemID of 10**6 silently made a 1,000,001-item catalogue
def test_sparse_item_id_is_refused(tmp_path):
    folder = _no_features(small_mmrec(tmp_path / "d"))
    write_inter(folder / "d.inter", [(0, 1, 5, 1, 0), (0, 2, 5, 1, 1), (0, 10**6, 5, 1, 2)])
    with pytest.raises(DataError, match=r"d\.inter.*line 4.*field 'itemID'.*1,000,001"):
        load_mmrec(folder)


def test_huge_user_id_is_refused(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    write_inter(folder / "d.inter", [(0, 1, 5, 1, 0), (0, 2, 5, 1, 1), (10**9, 3, 5, 1, 2)])
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert (e.value.line, e.value.field) == (4, "userID")


def test_item_id_beyond_the_feature_rows(tmp_path):
    folder = small_mmrec(tmp_path / "d")  # 5 feature rows
    write_inter(folder / "d.inter", [(0, 1, 5, 1, 0), (0, 2, 5, 1, 1), (0, 7, 5, 1, 2)])
    with pytest.raises(DataError, match=r"line 4.*itemID.*image_feat\.npy has 5 rows"):
        load_mmrec(folder)


def test_id_bound_allows_cold_items_of_a_feature_file(tmp_path):
    """A catalogue far larger than 10 x rows is fine when a feature file has that many rows."""
    folder = small_mmrec(tmp_path / "d", n_items=5)
    for f in folder.glob("*_feat.npy"):
        np.save(f, np.ones((5000, 2), np.float32))
    write_inter(folder / "d.inter", [(0, 1, 5, 1, 0), (0, 2, 5, 1, 1), (0, 4999, 5, 1, 2)])
    assert load_mmrec(folder).n_items == 5000
    assert id_bound(3) == 1000 and id_bound(500) == 5000


# Issue 22: a garbage *_feat.parquet gave an ArrowInvalid traceback
def test_garbage_parquet_features(tmp_path):
    pd.DataFrame({"user": ["a", "a", "a"], "item": ["x", "y", "z"], "timestamp": [1, 2, 3]}).to_csv(
        tmp_path / "interactions.csv", index=False)
    (tmp_path / "image_feat.parquet").write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataError) as e:
        load_generic(tmp_path)
    assert e.value.field == "image" and "image_feat.parquet" in str(e.value) and "Parquet" in str(e.value)


def test_ragged_parquet_list_column(tmp_path):
    pd.DataFrame({"user": ["a", "a", "a"], "item": ["x", "y", "z"], "timestamp": [1, 2, 3]}).to_csv(
        tmp_path / "interactions.csv", index=False)
    pd.DataFrame({"item": ["x", "y", "z"], "vec": [[1.0, 2.0], [3.0], [4.0, 5.0]]}).to_parquet(
        tmp_path / "text_feat.parquet")
    with pytest.raises(DataError, match=r"text_feat\.parquet.*field 'vec'.*equal-length.*row 1"):
        load_generic(tmp_path)


def test_garbage_parquet_interactions(tmp_path):
    (tmp_path / "interactions.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"interactions\.parquet.*cannot read"):
        load_generic(tmp_path)


# Issue 22: the generic loader split before it dropped repeats, so a user's only test item could vanish
def test_generic_dedupes_before_the_split(tmp_path, caplog):
    rows = [("u", f"i{k}", 10 + k) for k in range(5)] + [("u", "i0", 99)]  # i0 bought again, last of all
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(tmp_path / "interactions.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        ds = load_generic(tmp_path)
    assert "1 duplicate" in caplog.text and "earliest" in caplog.text
    assert ds.provenance["dropped_duplicates"] == 1
    # 5 distinct items: 3 train, then i3 valid and i4 test; split first, i0 (t=99) would have been test
    # and then dropped as a repeat of the train i0, leaving the user no test item
    assert ds.item_ids[ds.test[0].indices].tolist() == ["i4"]
    assert ds.item_ids[ds.valid[0].indices].tolist() == ["i3"]
    assert ds.train.nnz == 3


def test_generic_keeps_the_earliest_of_a_repeat_by_time(tmp_path):
    rows = [("u", "i9", 50), ("u", "i1", 1), ("u", "i2", 2), ("u", "i3", 3), ("u", "i9", 0)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(tmp_path / "interactions.csv", index=False)
    ds = load_generic(tmp_path)
    # i9 at t=0 is kept (the earliest), so i9 is the first train item and i2, i3 are held out
    assert ds.item_ids[ds.test[0].indices].tolist() == ["i3"]
    assert "i9" in ds.item_ids[ds.train[0].indices].tolist()


def test_generic_large_numeric_ids_are_labels(tmp_path):
    rows = [(1, 10**12 + k, k) for k in range(4)] + [(2, 10**12, 0), (2, 7, 1), (2, 10**12 + 3, 2)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(tmp_path / "interactions.csv", index=False)
    ds = load_generic(tmp_path)
    assert ds.n_items == 5 and ds.item_ids.tolist() == [7, *(10**12 + k for k in range(4))]


# numeric ids beyond the .npy rows; string ids, which a .npy (rows by position) cannot place without items.json
@pytest.mark.parametrize("items, says", [([0, 1, 9], "image_feat.npy has 4 rows"), (["0", "1", "b"], "items.json")],
                         ids=["numeric-ids-beyond-the-npy-rows", "string-ids-with-npy-need-items-json"])
def test_generic_item_ids_the_npy_rows_cannot_hold(tmp_path, items, says):
    pd.DataFrame({"user": [1, 1, 1], "item": items, "timestamp": [1, 2, 3]}).to_csv(
        tmp_path / "interactions.csv", index=False)
    np.save(tmp_path / "image_feat.npy", np.ones((4, 2), np.float32))
    expect_data_error(load_generic, tmp_path, line=4, field="item", contains=[says])


def test_float16_features_are_float32_and_recorded(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    np.save(folder / "image_feat.npy", np.ones((5, 3), np.float16))
    ds = load_mmrec(folder)
    assert ds.features["image"].dtype == np.float32
    assert ds.provenance["feature_dtypes"] == {"image": "float16", "text": "float32"}


def test_microvideo_huge_user_id(tmp_path):
    from prismrec.data.microvideo import load_microvideo
    folder = tmp_path / "mv"
    folder.mkdir()
    np.save(folder / "v_feat.npy", np.ones((4, 2), np.float32))
    np.save(folder / "train.npy", np.array([[0, 1], [10**12, 2]], np.int64))
    (folder / "val.json").write_text('{"0": [3]}')
    (folder / "test.json").write_text('{"%d": [0]}' % 10**7)
    with pytest.raises(DataError) as e:
        load_microvideo(folder)
    assert (e.value.line, e.value.field) == (2, "user") and "train.npy" in str(e.value)
    np.save(folder / "train.npy", np.array([[0, 1], [1, 2]], np.int64))
    with pytest.raises(DataError, match=r"test\.json.*field 'user'.*10,000,001 users"):
        load_microvideo(folder)
