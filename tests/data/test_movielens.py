"""MovieLens-100K raw files: u.data + u.item, positives, the per-user time split, metadata, bad input."""
import pytest

from prismrec.data import load_dataset, load_movielens
from prismrec.data.movielens import GENRES
from tests.data.helpers import expect_data_error


def _flags(*on):
    return "|".join("1" if g in on else "0" for g in GENRES)


def _ml(folder, n_users=3, per_user=10, data=None, items=None):
    folder.mkdir(parents=True, exist_ok=True)
    if data is None:  # user u rates movies u+1 .. u+per_user at times 1000+k; rating alternates 5 / 3
        data = [(u, (u + k) % 12 + 1, 5 if k % 2 else 3, 1000 + k) for u in range(1, n_users + 1)
                for k in range(per_user)]
    (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in data))
    if items is None:
        items = [f"{i}|Movie {i} (199{i % 10})|01-Jan-199{i % 10}||http://x/{i}|{_flags('Comedy', 'Drama')}"
                 for i in range(1, 13)]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    return folder


def test_loads_with_time_split_and_metadata(tmp_path):
    ds = load_dataset(_ml(tmp_path / "ml"))
    assert ds.provenance["format"] == "movielens"
    assert (ds.n_users, ds.n_items) == (3, 12)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (24, 3, 3)
    u = ds.user_map.index(2)
    # user 2's latest two ratings (k = 8, 9) are valid and test
    assert ds.item_ids[ds.valid[u].indices].tolist() == [(2 + 8) % 12 + 1]
    assert ds.item_ids[ds.test[u].indices].tolist() == [(2 + 9) % 12 + 1]
    m = ds.item_meta.iloc[ds.item_map.index(3)]
    assert (m["title"], m["year"], m["genres"]) == ("Movie 3 (1993)", "1993", "Comedy, Drama")
    assert m["text"] == "Movie 3 (1993). Comedy, Drama"


def test_min_rating(tmp_path):
    ds = load_movielens(_ml(tmp_path / "ml"), min_rating=4)
    assert ds.train.nnz + ds.valid.nnz + ds.test.nnz == 15
    assert ds.n_items == 12  # the catalogue is u.item, with or without positives


def test_raw_subfolder_and_latin1_titles(tmp_path):
    items = [f"{i}|Caf\xe9 {i} (1995)|||http://x|{_flags('Drama')}" for i in range(1, 13)]
    _ml(tmp_path / "ml-100k" / "raw", items=items)
    ds = load_dataset(tmp_path / "ml-100k")
    assert ds.name == "ml-100k" and ds.item_meta["title"][0] == "Caf\xe9 1 (1995)"
    assert ds.item_meta["year"][0] == "1995"  # from the title when the date is empty


def test_without_u_item(tmp_path):
    folder = _ml(tmp_path / "ml")
    (folder / "u.item").unlink()
    ds = load_dataset(folder / "u.data")
    assert ds.item_meta is None and ds.n_items == 12


# ---- bad input: each error names the file, line and field ----------------------------------------------
@pytest.mark.parametrize("data, fields, contains", [
    ([(1, 1, 5, 10), (1, 2, "five", 11)], {"line": 2, "field": "rating"}, ["u.data"]),
    ([(1, 1, 5, 10), ("x1", 2, 4, 11)], {"line": 2, "field": "user_id"}, []),
    ([(1, 1, 5, 10), (1, 2, 4, 11, 0)], {"line": 2}, ["4 '\\t'-separated fields"]),
    ([(1, 1, 5, 10), (1, 99, 4, 11)], {"line": 2, "field": "item_id"}, ["u.item"]),
], ids=["bad-rating", "non-integer-user", "wrong-field-count", "movie-not-in-u-item"])
def test_bad_u_data_row(tmp_path, data, fields, contains):
    expect_data_error(load_movielens, _ml(tmp_path / "ml", data=data), contains=contains, **fields)


@pytest.mark.parametrize("text, match", [("1\t1\t5\t10\n\n1\t2\t4\t11\n", r"u\.data.*line 2.*empty line"),
                                         ("", r"u\.data.*empty file")], ids=["blank-line-inside", "empty"])
def test_bad_u_data_text(tmp_path, text, match):
    folder = _ml(tmp_path / "ml")
    (folder / "u.data").write_text(text)
    expect_data_error(load_movielens, folder, match=match)


@pytest.mark.parametrize("items, fields, contains", [
    ([f"{i}|M|||u|{_flags()}" for i in range(1, 12)] + ["12|M|||u|" + "|".join(["0"] * 18 + ["y"])],
     {"line": 12, "field": "Western"}, []),
    ([f"{i}|M|||u|{_flags()}" for i in [*range(1, 13), 5]], {"line": 13}, ["appears twice"]),
], ids=["bad-genre-flag", "duplicate-movie-id"])
def test_bad_u_item_row(tmp_path, items, fields, contains):
    expect_data_error(load_movielens, _ml(tmp_path / "ml", items=items), contains=contains, **fields)
