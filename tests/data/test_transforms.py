"""The ``feature_norm`` training key: data/transforms.py, its use by Recommender.fit, and its fitted
transform in the bundle (``feature_norm.json``), applied to new items' raw features."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.api import FEATURE_NORM_FILE
from prismrec.bundle import MANIFEST, read_manifest
from prismrec.data.transforms import FeatureNorm, normalize_dataset
from prismrec.errors import BundleError, ConfigError, DataError
from tests.test_bundle import reseal


@pytest.fixture
def scaled(tiny):
    """``tiny`` with its image features 7x larger and shifted, a constant text column, one zero image row."""
    img = tiny.features["image"] * 7.0 + 3.0
    img[5] = 0.0
    txt = tiny.features["text"].copy()
    txt[:, 0] = 2.5
    return dataclasses.replace(tiny, features={"image": img, "text": txt})


def test_none_returns_the_dataset_itself(scaled):
    ds, norm = normalize_dataset(scaled, "none")
    assert ds is scaled and norm.mode == "none"


def test_l2_gives_unit_rows_and_keeps_zero_rows(scaled):
    ds, _ = normalize_dataset(scaled, "l2")
    norms = np.linalg.norm(ds.features["image"], axis=1)
    assert norms[5] == 0.0
    np.testing.assert_allclose(np.delete(norms, 5), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ds.features["text"], axis=1), 1.0, rtol=1e-5)
    # the input arrays are untouched
    assert np.abs(scaled.features["image"]).max() > 3.0


def test_standardize_equalises_the_modalities(scaled):
    ds, norm = normalize_dataset(scaled, "standardize")
    for m, f in ds.features.items():
        assert np.isfinite(f).all()
        np.testing.assert_allclose(f.mean(axis=0), 0.0, atol=1e-5)
        # mean squared row norm 1 (a constant column contributes 0)
        live = (scaled.features[m].std(axis=0) > 0).sum()
        np.testing.assert_allclose((f ** 2).sum(axis=1).mean(), live / f.shape[1], rtol=1e-4)
    assert (ds.features["text"][:, 0] == 0).all()
    # the same map applies to items that arrive later, and survives JSON
    again = FeatureNorm.from_json(norm.to_json()).apply({"image": scaled.features["image"][:3]})
    np.testing.assert_allclose(again["image"], ds.features["image"][:3], rtol=1e-5, atol=1e-6)


def test_standardize_rejects_unknown_or_misshaped_modalities(scaled):
    _, norm = normalize_dataset(scaled, "standardize")
    with pytest.raises(DataError, match="audio"):
        norm.apply({"audio": np.zeros((2, 4), np.float32)})
    with pytest.raises(DataError, match="expected 24 columns, got 5"):
        norm.apply({"image": np.zeros((2, 5), np.float32)})


def test_recommender_applies_it_before_setup(scaled):
    rec = Recommender("vbpr", epochs=1, feature_norm="standardize", checkpoint=False, eval_ks=(20,))
    rec.fit(scaled, show_progress=False)
    assert rec.feature_norm.mode == "standardize"
    np.testing.assert_allclose(rec.model.features("image").numpy().mean(axis=0), 0.0, atol=1e-5)
    plain = Recommender("vbpr", epochs=1, checkpoint=False, eval_ks=(20,)).fit(scaled, show_progress=False)
    assert plain.feature_norm is None
    np.testing.assert_allclose(plain.model.features("image").numpy(), scaled.features["image"])


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="feature_norm must be one of none, l2, standardize"):
        Recommender("vbpr", feature_norm="zscore")


# -- the fitted transform in the bundle, applied to new items' raw features ---------------------------
@pytest.fixture(scope="module")
def norm_bundles(tmp_path_factory, tiny):
    """mode -> a VBPR bundle trained with ``feature_norm=mode`` on ``tiny`` with its image features
    7x larger and shifted (so that every transform changes them)."""
    img = tiny.features["image"] * 7.0 + 3.0
    ds = dataclasses.replace(tiny, features={"image": img, "text": tiny.features["text"]})
    root = tmp_path_factory.mktemp("norm")
    out = {}
    for mode in ("none", "l2", "standardize"):
        Recommender("vbpr", epochs=2, feature_norm=mode, eval_ks=(20,)).fit(ds, run_dir=root / mode,
                                                                            show_progress=False)
        out[mode] = root / mode
    return ds, out


def _by_hand(raw: dict[str, np.ndarray], train: dict[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    """The transforms of the module docstring, written out: the reference for new items."""
    if mode == "none":
        return raw
    if mode == "l2":
        return {m: f / np.linalg.norm(f, axis=1, keepdims=True) for m, f in raw.items()}
    out = {}
    for m, f in raw.items():
        t = train[m].astype(np.float64)
        std = t.std(axis=0)
        out[m] = np.where(std > 0, (f - t.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0) / np.sqrt(t.shape[1])
    return out


def _drop(bundle, name: str) -> None:
    """Remove ``name`` from a bundle as a prismrec from before it existed would have written it."""
    m = json.loads((bundle / MANIFEST).read_text())
    del m["files"][name]
    (bundle / MANIFEST).write_text(json.dumps(m))
    (bundle / name).unlink()


@pytest.mark.parametrize("mode", ["l2", "standardize"])
def test_bundle_keeps_the_fitted_transform_and_new_items_go_through_it(norm_bundles, mode):
    ds, bundles = norm_bundles
    rec = Recommender.load(bundles[mode])
    assert FEATURE_NORM_FILE in read_manifest(bundles[mode])["files"]
    fresh = FeatureNorm.fit(ds.features, mode)
    assert rec.feature_norm.mode == mode and set(rec.feature_norm.shift) == set(fresh.shift)
    for m in fresh.shift:  # read back bit for bit
        assert np.array_equal(rec.feature_norm.shift[m], fresh.shift[m])
        assert np.array_equal(rec.feature_norm.scale[m], fresh.scale[m])
    assert rec.feature_norm.input_abs_max == pytest.approx({m: np.abs(f).max() for m, f in ds.features.items()})
    rows = np.arange(0, 120, 7)
    raw = {m: f[rows] for m, f in ds.features.items()}
    np.testing.assert_allclose(rec.transform_features(raw)["image"], _by_hand(raw, ds.features, mode)["image"],
                               rtol=1e-4, atol=1e-6)
    # a new item with a training item's raw features gets the vector the model gives that item's
    # training-time (transformed, stored in the bundle) features, not the one of its raw features
    new = rec.embed_items(raw)
    with torch.no_grad():
        stored = rec.model.embed_items({m: torch.from_numpy(f[rows]) for m, f in rec.dataset.features.items()})
        untransformed = rec.model.embed_items({m: torch.from_numpy(f) for m, f in raw.items()})
    np.testing.assert_allclose(new, stored.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(new - untransformed.numpy()).max() > 1e-2 * np.abs(new).max()


def test_a_bundle_without_feature_norm_writes_no_transform_file(norm_bundles):
    ds, bundles = norm_bundles
    rec = Recommender.load(bundles["none"])
    assert FEATURE_NORM_FILE not in read_manifest(bundles["none"])["files"] and rec.feature_norm is None
    raw = {m: f[:3] for m, f in ds.features.items()}
    assert rec.transform_features(raw)["image"] is not ds.features["image"]
    np.testing.assert_array_equal(rec.transform_features(raw)["image"], raw["image"])


def test_an_old_standardize_bundle_loads_but_names_the_missing_file_for_new_items(norm_bundles, tmp_path):
    ds, bundles = norm_bundles
    old = tmp_path / "old"
    shutil.copytree(bundles["standardize"], old)
    _drop(old, FEATURE_NORM_FILE)
    rec = Recommender.load(old)  # recommending for known users needs no transform
    assert rec.feature_norm is None and rec.missing_feature_norm().startswith("missing: this bundle was trained "
                                                                              "with feature_norm=standardize")
    assert len(rec.recommend(ds.user_ids[0], k=5)[0]) == 5
    with pytest.raises(BundleError, match=rf"{old / FEATURE_NORM_FILE}: missing: .*re-create the bundle"):
        rec.embed_items({m: f[:2] for m, f in ds.features.items()})


def test_an_old_l2_bundle_rebuilds_its_transform_from_the_config(norm_bundles, tmp_path):
    """l2 fits nothing, so a bundle from before feature_norm.json existed loses nothing."""
    ds, bundles = norm_bundles
    old = tmp_path / "old"
    shutil.copytree(bundles["l2"], old)
    _drop(old, FEATURE_NORM_FILE)
    rec, new = Recommender.load(old), Recommender.load(bundles["l2"])
    raw = {m: f[:4] for m, f in ds.features.items()}
    assert rec.feature_norm.mode == "l2" and rec.feature_norm.input_abs_max == {}
    np.testing.assert_array_equal(rec.embed_items(raw), new.embed_items(raw))


def _tampered(bundles, tmp_path, mode, change):
    out = tmp_path / "t"
    shutil.copytree(bundles[mode], out)
    f = out / FEATURE_NORM_FILE
    d = json.loads(f.read_text())
    new = change(d)
    f.write_text(new if isinstance(new, str) else json.dumps(new))
    reseal(out)  # a consistent manifest: the content itself must be checked
    return out


def _set(d, path, value):
    *keys, last = path
    for k in keys:
        d = d[k]
    d[last] = value


@pytest.mark.parametrize("mode,change,match", [
    ("standardize", lambda d: "{not json", r"feature_norm.json: not valid JSON"),
    ("standardize", lambda d: [1, 2], r"feature_norm.json: expected a JSON object, got list"),
    ("standardize", lambda d: {**d, "mode": "zscore"}, r"feature_norm.json, field 'mode': expected one of none, l2"),
    ("standardize", lambda d: {**d, "mode": "l2"}, r"field 'shift': expected no statistics for mode 'l2'"),
    ("l2", lambda d: {**d, "mode": "none"}, r"field 'mode': expected 'l2' \(config.json's feature_norm\), got 'none'"),
    ("standardize", lambda d: {**d, "shift": {"image": d["shift"]["image"]}},
     r"field 'shift': expected the modalities \['image', 'text'\], got \['image'\]"),
    ("standardize", lambda d: (_set(d, ("scale", "text"), d["scale"]["text"][:-1]), d)[1],
     r"field 'scale.text': expected 16 numbers \(the modality's dimension\), got 15"),
    ("standardize", lambda d: (_set(d, ("shift", "image", 3), "0.5"), d)[1],
     r"field 'shift.image': expected a list of numbers, got \["),
    ("standardize", lambda d: json.dumps(d).replace(str(d["scale"]["image"][0]), "NaN", 1),
     r"field 'scale.image': expected finite float32 numbers"),
    ("standardize", lambda d: {**d, "scale": 3}, r"field 'scale': expected an object of modality -> values, got 3"),
    ("l2", lambda d: (_set(d, ("input_abs_max", "text"), -1.0), d)[1],
     r"field 'input_abs_max.text': expected a finite number >= 0, got -1.0"),
    ("l2", lambda d: (_set(d, ("input_abs_max", "audio"), 1.0), d)[1], r"field 'input_abs_max': unknown modalities"),
])
def test_a_bad_feature_norm_file_is_refused_at_load_naming_file_and_field(norm_bundles, tmp_path, mode, change,
                                                                        match):
    _, bundles = norm_bundles
    with pytest.raises(BundleError, match=match) as e:
        Recommender.load(_tampered(bundles, tmp_path, mode, change))
    assert str(tmp_path / "t" / FEATURE_NORM_FILE) in str(e.value)


def test_a_listed_but_missing_feature_norm_file_is_refused(norm_bundles, tmp_path):
    _, bundles = norm_bundles
    out = tmp_path / "b"
    shutil.copytree(bundles["standardize"], out)
    (out / FEATURE_NORM_FILE).unlink()
    with pytest.raises(BundleError, match=rf"{out / FEATURE_NORM_FILE}: listed in manifest.json but missing"):
        Recommender.load(out)
