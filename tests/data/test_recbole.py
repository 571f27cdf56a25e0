"""RecBole atomic files: single and pre-split layouts, sequential files, token maps, metadata, bad input."""
import logging

import numpy as np
import pytest

from prismrec.data import load_dataset, load_recbole
from tests.data.helpers import expect_data_error


def _write(path, header, rows):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


SINGLE_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")


def _single(folder, rows=None, header=SINGLE_HEADER):
    folder.mkdir(parents=True, exist_ok=True)
    if rows is None:  # 3 users x 10 interactions, time = position
        rows = [(f"u{u}", f"i{(u * 3 + k) % 12}", 4.0 if k % 2 else 2.0, 100 + k) for u in range(3) for k in range(10)]
    return _write(folder / f"{folder.name}.inter", header, rows)


def _sequential(folder):
    """Two users, UniSRec-style: sequences u0 = 0 1 2 3 4, u1 = 5 6 7 8 9 (item tokens are indices)."""
    folder.mkdir(parents=True, exist_ok=True)
    h = ("user_id:token", "item_id_list:token_seq", "item_id:token")
    _write(folder / "S.train.inter", h, [(0, "0", 1), (0, "0 1", 2), (1, "5", 6), (1, "5 6", 7)])
    _write(folder / "S.valid.inter", h, [(0, "0 1 2", 3), (1, "5 6 7", 8)])
    _write(folder / "S.test.inter", h, [(0, "0 1 2 3", 4), (1, "5 6 7 8", 9)])
    (folder / "S.item2index").write_text("".join(f"ASIN{k}\t{k}\n" for k in range(11)))  # ASIN10: no interactions
    (folder / "S.user2index").write_text("alice\t0\nbob\t1\n")
    _write(folder / "S.text", ("item_id:token", "text:token_seq"), [(f"ASIN{k}", f"text of {k}") for k in range(11)])
    return folder


def test_single_inter_splits_per_user_by_time(tmp_path):
    _single(tmp_path / "shop")
    ds = load_dataset(tmp_path / "shop")
    assert ds.provenance["format"] == "recbole"
    assert (ds.n_users, ds.n_items) == (3, 12)
    # 10 per user: 8 train, 1 valid, 1 test; the latest two are held out
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (24, 3, 3)
    u = ds.user_map.index("u1")
    assert ds.item_ids[ds.valid[u].indices[0]] == "i11"  # k = 8: (3 + 8) % 12
    assert ds.item_ids[ds.test[u].indices[0]] == "i0"  # k = 9


def test_min_rating_and_single_file_path(tmp_path):
    f = _single(tmp_path / "shop")
    ds = load_dataset(f, min_rating=4)
    assert ds.train.nnz + ds.valid.nnz + ds.test.nnz == 15


def test_duplicates_dropped_before_split_keeping_the_earliest(tmp_path, caplog):
    rows = [("a", f"i{k}", 1, 10 + k) for k in range(5)] + [("a", "i0", 1, 99)]  # i0 again, latest
    _single(tmp_path / "d", rows)
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        ds = load_recbole(tmp_path / "d")
    assert "1 duplicate" in caplog.text
    # without the repeat, the two latest (i3, i4) are valid and test; with it kept they would be i4, i0
    assert ds.item_ids[ds.test[0].indices].tolist() == ["i4"]
    assert ds.item_ids[ds.valid[0].indices].tolist() == ["i3"]


def test_sequential_pre_split_with_token_maps_and_text(tmp_path):
    ds = load_dataset(_sequential(tmp_path / "raw"))
    assert ds.name == "S" and ds.provenance["layout"].startswith("sequential")
    assert ds.user_ids.tolist() == ["alice", "bob"]
    assert ds.n_items == 11 and ds.item_ids[10] == "ASIN10"
    a = ds.user_map.index("alice")
    assert sorted(ds.item_ids[ds.train[a].indices]) == ["ASIN0", "ASIN1", "ASIN2"]
    assert ds.item_ids[ds.valid[a].indices].tolist() == ["ASIN3"]
    assert ds.item_ids[ds.test[a].indices].tolist() == ["ASIN4"]
    assert ds.item_meta["text"].tolist()[3] == "text of 3"
    assert ds.item_meta["item"].tolist()[3] == "ASIN3"


def test_parent_folder_with_raw_is_found(tmp_path):
    _sequential(tmp_path / "sci" / "raw")
    assert load_dataset(tmp_path / "sci").n_items == 11


def test_repeated_target_stays_in_train(tmp_path, caplog):
    folder = _sequential(tmp_path / "raw")
    h = ("user_id:token", "item_id_list:token_seq", "item_id:token")
    _write(folder / "S.test.inter", h, [(0, "0 1 2 3", 1), (1, "5 6 7 8", 9)])  # alice re-buys item 1
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        ds = load_recbole(folder)
    assert ds.test.nnz == 1 and "1 valid/test interactions repeat" in caplog.text


def test_general_pre_split_and_item_file(tmp_path):
    folder = tmp_path / "g"
    folder.mkdir()
    h = ("user_id:token", "item_id:token")
    _write(folder / "g.train.inter", h, [(1, 10), (1, 11), (2, 10)])
    _write(folder / "g.valid.inter", h, [(1, 12)])
    _write(folder / "g.test.inter", h, [(2, 13)])
    _write(folder / "g.item", ("item_id:token", "movie_title:token_seq", "year:token", "class:token_seq"),
           [(10, "Heat", 1995, "Crime Drama"), (11, "Up", 2009, "Animation"), (12, "Fargo", 1996, "Crime"),
            (13, "Alien", 1979, "Horror"), (14, "Brazil", 1985, "")])
    ds = load_dataset(folder)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (3, 1, 1)
    assert ds.item_ids.tolist() == [10, 11, 12, 13, 14]  # integer tokens sorted numerically; 14 from .item
    assert ds.item_meta["text"].tolist() == ["Heat. Crime Drama", "Up. Animation", "Fargo. Crime", "Alien. Horror",
                                             "Brazil"]
    assert ds.item_meta["year"].tolist()[0] == "1995"


def test_quotes_in_text_are_kept(tmp_path):
    folder = _sequential(tmp_path / "raw")
    _write(folder / "S.text", ("item_id:token", "text:token_seq"),
           [("ASIN0", '4 1/2" roll, "grit" 80')] + [(f"ASIN{k}", "x") for k in range(1, 11)])
    assert load_recbole(folder).item_meta["text"][0] == '4 1/2" roll, "grit" 80'


# ---- bad input: each error names file, line and field ------------------------------------------------------
@pytest.mark.parametrize("header, rows, expected", [
    (("user_id:token", "item_id:tokn", "rating:float", "timestamp:float"), [("a", "b", 1, 2)],
     dict(line=1, field="item_id:tokn", contains=["token_seq"])),
    (("user_id:token", "rating:float"), [("a", 1)], dict(match=r"d\.inter.*line 1.*field 'item_id'.*missing field")),
    (SINGLE_HEADER, [("a", "x", 1, 5), ("a", "y", 1, "soon")], dict(line=3, field="timestamp", contains=["'soon'"])),
    (SINGLE_HEADER, [("a", "x", 1, 5), ("a", "y", 1, 6, 7)], dict(line=3, contains=["4 tab-separated fields"])),
    (SINGLE_HEADER, [("a", "x", 1, 5), ("", "y", 1, 6)], dict(line=3, field="user_id")),
], ids=["bad-header-type", "missing-item-field", "non-numeric-timestamp", "too-many-fields", "empty-user-token"])
def test_bad_single_inter(tmp_path, header, rows, expected):
    _single(tmp_path / "d", rows, header=header)
    expect_data_error(load_recbole, tmp_path / "d", **expected)


def test_empty_file(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "d.train.inter").write_text("")
    for s in ("valid", "test"):
        _write(tmp_path / "d" / f"d.{s}.inter", ("user_id:token", "item_id:token"), [(1, 1)])
    expect_data_error(load_recbole, tmp_path / "d", match=r"d\.train\.inter.*line 1.*empty file")


def test_missing_split_file(tmp_path):
    folder = _sequential(tmp_path / "raw")
    (folder / "S.valid.inter").unlink()
    expect_data_error(load_dataset, folder, match=r"S\.valid\.inter is missing")


@pytest.mark.parametrize("name, text, expected", [
    ("S.valid.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1 2\t3\n1\t5 6 7\t77\n",
     dict(line=3, field="item_id", contains=["S.item2index"])),
    ("S.item2index", "ASIN0\t0\nASIN1\tone\n", dict(line=2, contains=["S.item2index"])),
    ("S.user2index", "alice\t0\nbob\t0\n", dict(match=r"S\.user2index.*line 2.*duplicate index")),
    ("S.text", "item_id:token\ttext:token_seq\nASIN0\ta\nNOPE\tb\n", dict(line=3, contains=["S.text", "NOPE"])),
], ids=["token-not-in-map", "bad-token-map-row", "duplicate-index-in-map", "text-for-unknown-item"])
def test_bad_sequential_file(tmp_path, name, text, expected):
    folder = _sequential(tmp_path / "raw")
    (folder / name).write_text(text)
    expect_data_error(load_recbole, folder, **expected)


def test_min_rating_without_rating_field(tmp_path):
    _single(tmp_path / "d", [("a", "x")], header=("user_id:token", "item_id:token"))
    expect_data_error(lambda: load_recbole(tmp_path / "d", min_rating=4), match="missing field 'rating'")


def test_utf8_required(tmp_path):
    folder = tmp_path / "d"
    _single(folder, [("a", "x", 1, 5)])
    with open(folder / "d.inter", "ab") as f:
        f.write("b\tcaf\xe9\t1\t6\n".encode("latin-1"))
    expect_data_error(load_recbole, folder, match=r"d\.inter.*utf-8")


def test_large_integer_tokens_allocate_nothing(tmp_path):
    rows = [(10**12 + u, 10**15 + k, 1, k) for u in range(2) for k in range(5)]
    _single(tmp_path / "d", rows)
    ds = load_recbole(tmp_path / "d")
    assert (ds.n_users, ds.n_items) == (2, 5) and ds.item_ids[0] == 10**15
    np.testing.assert_array_equal(ds.user_ids, [10**12, 10**12 + 1])
