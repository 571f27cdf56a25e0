"""MovieLens-100K raw files: u.data + u.item, positives, the per-user time split, metadata, bad input."""
import pytest

from prismrec.data import load_dataset, load_movielens
from prismrec.data.movielens import GENRES
from prismrec.errors import DataError


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


def test_bad_rating(tmp_path):
    folder = _ml(tmp_path / "ml", data=[(1, 1, 5, 10), (1, 2, "five", 11)])
    with pytest.raises(DataError) as e:
        load_movielens(folder)
    assert (e.value.line, e.value.field) == (2, "rating") and "u.data" in str(e.value)


def test_non_integer_user(tmp_path):
    folder = _ml(tmp_path / "ml", data=[(1, 1, 5, 10), ("x1", 2, 4, 11)])
    with pytest.raises(DataError) as e:
        load_movielens(folder)
    assert (e.value.line, e.value.field) == (2, "user_id")


def test_wrong_field_count(tmp_path):
    folder = _ml(tmp_path / "ml", data=[(1, 1, 5, 10), (1, 2, 4, 11, 0)])
    with pytest.raises(DataError) as e:
        load_movielens(folder)
    assert e.value.line == 2 and "4 '\\t'-separated fields" in str(e.value)


def test_blank_line_inside(tmp_path):
    folder = _ml(tmp_path / "ml")
    (folder / "u.data").write_text("1\t1\t5\t10\n\n1\t2\t4\t11\n")
    with pytest.raises(DataError, match=r"u\.data.*line 2.*empty line"):
        load_movielens(folder)


def test_movie_not_in_u_item(tmp_path):
    folder = _ml(tmp_path / "ml", data=[(1, 1, 5, 10), (1, 99, 4, 11)])
    with pytest.raises(DataError) as e:
        load_movielens(folder)
    assert (e.value.line, e.value.field) == (2, "item_id") and "u.item" in str(e.value)


def test_bad_genre_flag(tmp_path):
    items = [f"{i}|M|||u|{_flags()}" for i in range(1, 12)] + ["12|M|||u|" + "|".join(["0"] * 18 + ["y"])]
    with pytest.raises(DataError) as e:
        load_movielens(_ml(tmp_path / "ml", items=items))
    assert (e.value.line, e.value.field) == (12, "Western")


def test_duplicate_movie_id(tmp_path):
    items = [f"{i}|M|||u|{_flags()}" for i in [*range(1, 13), 5]]
    with pytest.raises(DataError) as e:
        load_movielens(_ml(tmp_path / "ml", items=items))
    assert e.value.line == 13 and "appears twice" in str(e.value)


def test_empty_u_data(tmp_path):
    folder = _ml(tmp_path / "ml")
    (folder / "u.data").write_text("")
    with pytest.raises(DataError, match=r"u\.data.*empty file"):
        load_movielens(folder)
