"""Item metadata tables (issue 23 item 8): found beside a dataset, validated, turned into the
``items_meta.json`` a bundle carries."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from prismrec.data.items_meta import check_items_meta, find_items_meta, items_meta_for, read_items_meta
from prismrec.errors import BundleError, DataError

IDS = np.arange(6)


def _write(folder, rows, name="items.csv"):
    path = folder / name
    df = pd.DataFrame(rows)
    if name.endswith(".parquet"):
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False, sep="\t" if name.endswith(".tsv") else ",")
    return path


def test_titles_images_and_fields(tmp_path, caplog):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"jpeg bytes")
    rows = [{"item": 0, "title": " Red kettle ", "image": "img/a.jpg", "brand": "acme"},
            {"item": 1, "title": "Cup", "image": "https://example.org/cup.png", "brand": ""},
            {"item": 2, "title": "", "image": "img/missing.png", "brand": "acme"},
            {"item": 3, "title": "Notes", "image": "img/notes.txt", "brand": "b"},
            {"item": 99, "title": "Not in the data", "image": "", "brand": "x"}]
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        meta = read_items_meta(_write(tmp_path, rows), IDS)
    items = meta["items"]
    assert set(items) == {"0", "1", "2", "3"}  # item 99 is not in the dataset
    assert items["0"] == {"title": "Red kettle", "image_file": str((tmp_path / "img" / "a.jpg").resolve()),
                          "fields": {"brand": "acme"}}
    assert items["1"] == {"title": "Cup", "image_url": "https://example.org/cup.png"}  # empty cells left out
    assert items["2"] == {"fields": {"brand": "acme"}}
    assert "image_file" not in items["3"]
    assert (meta["title_column"], meta["image_column"], meta["fields"]) == ("title", "image", ["brand"])
    text = caplog.text
    assert "1 of 5 rows name items that are not in the dataset (e.g. '99')" in text
    assert "1 image files in column 'image' do not exist (e.g. 'img/missing.png')" in text
    assert "img/notes.txt" in text
    assert check_items_meta(meta, "x") is meta


def test_thumbnail_column_preferred_and_name_as_title(tmp_path):
    rows = [{"item_id": 0, "name": "Kettle", "image": "https://x/big.jpg", "thumbnail": "https://x/small.jpg"}]
    meta = read_items_meta(_write(tmp_path, rows), IDS)
    assert meta["items"]["0"] == {"title": "Kettle", "image_url": "https://x/small.jpg"}
    assert meta["fields"] == []  # the other image column is not carried as a field


def test_parquet_float_ids_match(tmp_path):
    """A numeric id column that pandas reads as float (12.0) still matches item '12'."""
    df = pd.DataFrame({"item": [0.0, 4.0], "title": ["a", "b"], "price": [1.5, np.nan]})
    df.to_parquet(tmp_path / "items.parquet")
    meta = read_items_meta(tmp_path / "items.parquet", IDS)
    assert meta["items"] == {"0": {"title": "a", "fields": {"price": 1.5}}, "4": {"title": "b"}}


def test_string_ids(tmp_path):
    meta = read_items_meta(_write(tmp_path, [{"item": "B0001", "title": "t"}], "items.tsv"),
                           np.array(["B0001", "B0002"]))
    assert meta["items"] == {"B0001": {"title": "t"}}


@pytest.mark.parametrize("rows,expected", [
    ([{"item": 0, "title": "a"}, {"item": 0, "title": "b"}], "line 3, field 'item': duplicate item id '0' (first on line 2)"),
    ([{"item": 0, "title": "a"}, {"item": "", "title": "b"}], "line 3, field 'item': expected an item id"),
    ([{"sku": 0, "title": "a"}], "expected an item id column (item / item_id / itemID / id); columns: sku, title"),
    ([{"item": 0, "image": "javascript:alert(1)"}], "line 2, field 'image': expected an http(s):// or data:image/ URL"),
    ([{"item": 0, "image": "ftp://host/a.png"}], "line 2, field 'image'"),
])
def test_bad_tables(tmp_path, rows, expected):
    with pytest.raises(DataError) as e:
        read_items_meta(_write(tmp_path, rows), IDS)
    assert expected in str(e.value) and "items.csv" in str(e.value)


def test_find(tmp_path):
    assert find_items_meta(tmp_path) is None and find_items_meta("synthetic") is None and find_items_meta(None) is None
    assert items_meta_for(tmp_path, IDS) is None
    inter = tmp_path / "interactions.csv"
    inter.write_text("user,item\n")
    _write(tmp_path, [{"item": 1, "title": "t"}])
    assert find_items_meta(tmp_path) == tmp_path / "items.csv"
    assert find_items_meta(inter) == tmp_path / "items.csv"  # the interactions file: its folder
    assert items_meta_for(tmp_path, IDS)["items"] == {"1": {"title": "t"}}
    _write(tmp_path, [{"item": 1, "title": "t"}], "items.parquet")
    with pytest.raises(DataError, match="more than one items table"):
        find_items_meta(tmp_path)


@pytest.mark.parametrize("obj", [
    [], {"format": "other", "items": {}}, {"format": "prismrec-items-meta", "items": []},
    {"format": "prismrec-items-meta", "items": {"1": {"title": 3}}},
    {"format": "prismrec-items-meta", "items": {"1": {"image_url": "javascript:alert(1)"}}},
    {"format": "prismrec-items-meta", "items": {"1": {"image_file": "relative.png"}}},
    {"format": "prismrec-items-meta", "items": {"1": {"image_file": "/etc/passwd"}}},
    {"format": "prismrec-items-meta", "items": {"1": {"fields": []}}},
])
def test_check_refuses_malformed(obj):
    with pytest.raises(BundleError, match="items_meta.json"):
        check_items_meta(obj, "b/items_meta.json")
