"""The extraction pipeline: output layout, skipped items, the content-hash cache, workers and shards."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from prismrec.data import load_generic
from prismrec.errors import DataError
from prismrec.features import extract, get_encoder
from prismrec.features.cache import FeatureCache

from tests.features.mediagen import make_media, write_table

FALLBACK = {"text": "hashing", "image": "colorstats", "audio": "logmel"}


def run(items, out, **kw):
    kw.setdefault("encoders", FALLBACK)
    return extract(items, out, show_progress=False, **kw)


def test_outputs_readable_by_generic_loader(media_items, tmp_path):
    out = tmp_path / "out"
    res = run(media_items, out, batch_size=8)
    ids = json.loads((out / "items.json").read_text())
    assert ids == [f"b{k}" for k in range(24)]
    dims = {"text": 512, "image": 233, "audio": 218}
    for m, d in dims.items():
        arr = np.load(out / f"{m}_feat.npy")
        assert arr.shape == (24, d) and arr.dtype == np.float32 and np.isfinite(arr).all()
        assert res.modalities[m].n_encoded + res.modalities[m].n_failed == 24
    # the generic loader reads the folder once interactions sit beside the features
    (out / "interactions.csv").write_text("user,item\n" + "".join(f"u{k % 5},b{k}\n" for k in range(24)))
    ds = load_generic(out)
    assert ds.item_ids.tolist() == ids and set(ds.features) == set(dims)
    assert not list(out.glob(".*tmp"))  # no temporary files left behind


def test_skipped_items_are_reported_and_get_the_mean_row(media_items, tmp_path):
    out = tmp_path / "out"
    res = run(media_items, out)
    img = res.modalities["image"]
    assert {(e.item, e.reason) for e in img.errors} == {
        ("b5", "missing file"), ("b6", "unreadable image: not a recognised image format")}
    assert [(e.item, e.reason) for e in res.modalities["text"].errors] == [("b7", "no text")]
    feats = np.load(out / "image_feat.npy")
    ok = np.ones(24, bool)
    ok[[5, 6]] = False
    np.testing.assert_allclose(feats[5], feats[ok].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(feats[5], feats[6])
    report = json.loads((out / "extract_report.json").read_text())
    assert report["modalities"]["image"]["n_failed"] == 2
    assert report["modalities"]["image"]["errors"][0]["item"] == "b5"
    assert report["skipped_item_row"] == "mean of the encoded rows"

    res = run(media_items, tmp_path / "zeros", fill="zeros", modalities=["image"])
    assert not np.load(tmp_path / "zeros" / "image_feat.npy")[[5, 6]].any()
    assert list(res.modalities) == ["image"]


def test_rerun_after_deleting_half_the_cache_encodes_only_that_half(tmp_path):
    """Acceptance (issue 8): a rerun encodes only what the cache lacks."""
    rows = make_media(tmp_path, [f"c{k}" for k in range(32)])
    items = write_table(tmp_path / "items.csv", rows)
    out = tmp_path / "out"
    first = run(items, out, batch_size=4, modalities=["image", "audio"])
    assert first.modalities["image"].n_encoded == 32 and first.modalities["image"].n_cached == 0
    before = {m: np.load(out / f"{m}_feat.npy") for m in ("image", "audio")}

    again = run(items, out, batch_size=4, modalities=["image", "audio"])
    assert again.modalities["image"].n_encoded == 0 and again.modalities["image"].n_cached == 32

    cache = FeatureCache(out / "cache", get_encoder("colorstats"))
    parts = cache.parts()
    assert len(parts) == 8  # one part per batch of 4
    deleted = set()
    for p in parts[::2]:
        deleted |= {k.tobytes() for k in load_file(str(p))["keys"]}
        p.unlink()
    third = run(items, out, batch_size=4, modalities=["image", "audio"])
    assert third.modalities["image"].n_encoded == 16 == len(deleted)
    assert third.modalities["image"].n_cached == 16
    assert third.modalities["audio"].n_encoded == 0  # its cache was not touched
    for m in ("image", "audio"):
        np.testing.assert_array_equal(np.load(out / f"{m}_feat.npy"), before[m])


def test_new_items_and_duplicate_content_encode_once(tmp_path):
    rows = make_media(tmp_path, [f"d{k}" for k in range(12)])
    run(write_table(tmp_path / "a.csv", rows[:8]), tmp_path / "out", modalities=["image", "text"])
    dup = dict(rows[0], item="copy-of-d0")  # same image file and title as d0
    res = run(write_table(tmp_path / "b.csv", rows + [dup]), tmp_path / "out", modalities=["image", "text"])
    assert res.modalities["image"].n_encoded == 4 and res.modalities["image"].n_cached == 9
    feats = np.load(tmp_path / "out" / "image_feat.npy")
    np.testing.assert_array_equal(feats[0], feats[12])
    assert json.loads((tmp_path / "out" / "items.json").read_text())[-1] == "copy-of-d0"


def test_changed_encoder_options_do_not_reuse_the_cache(media_items, tmp_path):
    run(media_items, tmp_path / "out", modalities=["text"])
    res = run(media_items, tmp_path / "out", modalities=["text"], encoder_options={"text": {"dim": 64}})
    assert res.modalities["text"].n_encoded == 23 and np.load(tmp_path / "out" / "text_feat.npy").shape == (24, 64)


def test_no_cache_leaves_nothing_behind(media_items, tmp_path):
    res = run(media_items, tmp_path / "out", modalities=["audio"], use_cache=False)
    assert res.modalities["audio"].n_encoded == 24
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["audio_feat.npy", "extract_report.json",
                                                                   "items.json"]


def test_workers_give_the_same_features(media_items, tmp_path):
    one = run(media_items, tmp_path / "one", modalities=["image", "audio"], batch_size=6)
    two = run(media_items, tmp_path / "two", modalities=["image", "audio"], batch_size=6, workers=2)
    for m in ("image", "audio"):
        assert two.modalities[m].n_encoded == one.modalities[m].n_encoded
        np.testing.assert_allclose(np.load(tmp_path / "two" / f"{m}_feat.npy"),
                                   np.load(tmp_path / "one" / f"{m}_feat.npy"), rtol=1e-6, atol=1e-7)


def test_shards_fill_the_cache_and_the_merge_encodes_nothing(media_items, tmp_path):
    """What each torchrun rank does, run in turn here (the real torchrun test is marked slow)."""
    ref = run(media_items, tmp_path / "ref", modalities=["image", "text"])
    out = tmp_path / "sharded"
    parts = [run(media_items, out, modalities=["image", "text"], shard=(r, 3)) for r in range(3)]
    assert not (out / "image_feat.npy").exists()  # shards write only to the cache
    assert sum(p.modalities["image"].n_items for p in parts) == 24
    assert sum(p.modalities["image"].n_encoded for p in parts) == ref.modalities["image"].n_encoded
    merged = run(media_items, out, modalities=["image", "text"])
    assert merged.modalities["image"].n_encoded == 0 and merged.modalities["text"].n_encoded == 0
    for m in ("image", "text"):
        np.testing.assert_array_equal(np.load(out / f"{m}_feat.npy"), np.load(tmp_path / "ref" / f"{m}_feat.npy"))


def test_items_table_errors(tmp_path):
    t = tmp_path / "items.csv"
    t.write_text("item,title\na,x\na,y\n")
    with pytest.raises(DataError, match="line 3.*duplicate item id 'a'"):
        run(t, tmp_path / "out")
    t.write_text("name,title\na,x\n")
    with pytest.raises(DataError, match="expected an item id column"):
        run(t, tmp_path / "out")
    t.write_text("item,title\na,x\n")
    with pytest.raises(DataError, match="no column for modality 'image'"):
        run(t, tmp_path / "out", modalities=["image"])
    with pytest.raises(ValueError, match="fill"):
        run(t, tmp_path / "out", fill="median")


def test_every_item_failing_writes_no_file(tmp_path):
    t = tmp_path / "items.csv"
    t.write_text("item,image\na,missing1.png\nb,missing2.png\n")
    res = run(t, tmp_path / "out")
    assert res.modalities["image"].file is None and res.modalities["image"].n_failed == 2
    assert not (tmp_path / "out" / "image_feat.npy").exists()


def test_parquet_items_table(media_items, tmp_path):
    import pandas as pd
    df = pd.read_csv(media_items, keep_default_na=False)
    df.to_parquet(media_items.with_suffix(".parquet"))
    res = run(media_items.with_suffix(".parquet"), tmp_path / "out", modalities=["text"])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "text_feat.npy"),
                                  np.load(run(media_items, tmp_path / "csv", modalities=["text"]).modalities["text"].file))
    assert res.modalities["text"].n_failed == 1


@pytest.mark.slow
def test_spawned_workers_with_a_torch_encoder(media_items, tmp_path):
    """Torch encoders run in spawned workers (each re-imports prismrec: slow), writing to the parent's cache."""
    import torch
    from safetensors.torch import save_file
    from prismrec.features.effnet import efficientnet_lite0
    torch.manual_seed(0)
    save_file(efficientnet_lite0().state_dict(), str(tmp_path / "w.safetensors"))
    opts = {"image": {"arch": "efficientnet_lite0", "weights": tmp_path / "w.safetensors", "image_size": 64}}
    kw = dict(modalities=["image"], encoders={"image": "torch-image"}, encoder_options=opts, batch_size=6)
    one = run(media_items, tmp_path / "one", **kw)
    two = run(media_items, tmp_path / "two", workers=2, **kw)
    assert two.modalities["image"].n_encoded == one.modalities["image"].n_encoded == 22
    np.testing.assert_allclose(np.load(tmp_path / "two" / "image_feat.npy"), np.load(tmp_path / "one" / "image_feat.npy"),
                               rtol=1e-4, atol=1e-5)
