"""Generic CSV/Parquet loader and the per-user split."""
import json

import numpy as np
import pandas as pd
import pytest

from prismrec.data import load_dataset, load_generic
from prismrec.data.split import per_user_split
from prismrec.errors import DataError


def _interactions(n_users=6, per_user=12, n_items=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            rows.append({"user": f"u{u}", "item": f"i{i}", "timestamp": 1000 + t})
    return pd.DataFrame(rows)


def test_csv_with_time_split_and_npy_features(tmp_path):
    df = _interactions()
    df.to_csv(tmp_path / "interactions.csv", index=False)
    items = sorted(df["item"].unique())
    (tmp_path / "items.json").write_text(json.dumps(items))
    np.save(tmp_path / "image_feat.npy", np.arange(len(items) * 2, dtype=np.float32).reshape(-1, 2))
    ds = load_dataset(tmp_path)
    assert ds.n_users == 6 and ds.n_items == len(items)
    # 12 interactions per user: vt = 2 -> 10 train, 1 valid, 1 test; the latest ones are held out
    assert ds.train.nnz == 60 and ds.valid.nnz == 6 and ds.test.nnz == 6
    u = ds.user_map.index("u0")
    last = df[df.user == "u0"].sort_values("timestamp").item.tolist()
    assert ds.item_ids[ds.test[u].indices[0]] == last[-1]
    assert ds.item_ids[ds.valid[u].indices[0]] == last[-2]
    assert ds.features["image"][ds.item_map.index(items[3])].tolist() == [6.0, 7.0]


def test_parquet_features_keyed_by_item(tmp_path):
    df = _interactions()
    df.to_parquet(tmp_path / "interactions.parquet")
    items = sorted(df["item"].unique())
    feat = pd.DataFrame({"item": items[::-1], "f0": np.arange(len(items), dtype=float)[::-1], "f1": 1.0})
    feat.to_parquet(tmp_path / "text_feat.parquet")
    ds = load_generic(tmp_path)
    k = ds.item_map.index(items[2])
    assert ds.features["text"][k].tolist() == [2.0, 1.0]


def test_random_split_is_seeded(tmp_path):
    df = _interactions().drop(columns="timestamp")
    df.to_csv(tmp_path / "interactions.csv", index=False)
    a, b, c = load_generic(tmp_path, seed=1), load_generic(tmp_path, seed=1), load_generic(tmp_path, seed=2)
    assert (a.test != b.test).nnz == 0
    assert (a.test != c.test).nnz > 0


def test_explicit_split_column(tmp_path):
    df = pd.DataFrame({"user": [1, 1, 1, 2, 2, 2], "item": [1, 2, 3, 1, 2, 3],
                       "split": ["train", "valid", "test", "train", "train", "test"]})
    df.to_csv(tmp_path / "interactions.csv", index=False)
    ds = load_generic(tmp_path)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (3, 1, 2)
    assert ds.user_ids.dtype.kind == "i"


def test_bad_split_value(tmp_path):
    pd.DataFrame({"user": [1, 1], "item": [1, 2], "split": ["train", "later"]}).to_csv(
        tmp_path / "interactions.csv", index=False)
    with pytest.raises(DataError) as e:
        load_generic(tmp_path)
    assert (e.value.line, e.value.field) == (3, "split")


def test_missing_column(tmp_path):
    pd.DataFrame({"user": [1], "product": [2]}).to_csv(tmp_path / "interactions.csv", index=False)
    with pytest.raises(DataError, match=r"missing column 'item'"):
        load_generic(tmp_path)


def test_missing_feature_row(tmp_path):
    df = _interactions()
    df.to_csv(tmp_path / "interactions.csv", index=False)
    pd.DataFrame({"item": ["i0"], "f0": [1.0]}).to_parquet(tmp_path / "text_feat.parquet")
    with pytest.raises(DataError, match="no feature row for item"):
        load_generic(tmp_path)


def test_split_rule_matches_mmrec():
    users = np.repeat(np.arange(4), [3, 9, 10, 25])
    lab = per_user_split(users, np.arange(len(users), dtype=float))
    counts = [np.bincount(lab[users == u], minlength=3).tolist() for u in range(4)]
    assert counts == [[1, 1, 1], [7, 1, 1], [8, 1, 1], [20, 2, 3]]
    assert per_user_split(np.array([0, 0]), np.array([1.0, 2.0])).tolist() == [0, 0]
