"""The ``feature_norm`` training key: data/transforms.py and its use by Recommender.fit."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from prismrec import Recommender
from prismrec.data.transforms import FeatureNorm, normalize_dataset
from prismrec.errors import ConfigError, DataError


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
