"""Attribution: exact splits, occlusion, gradient x input, aggregate shares, CLI; and the planted
informative-vs-noise check that random attributions fail."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prismrec import Dataset, Recommender, make_synthetic
from prismrec import explain as ex
from prismrec.cli import app
from prismrec.errors import PrismrecError

N_INFO, N_NOISE = 8, 16


@pytest.fixture(scope="module")
def planted():
    """Image dims 0-7 encode the latent that drives choices; dims 8-23 and all of text are noise
    of the same scale."""
    base = make_synthetic(1000, 500, 12, modalities={"image": N_INFO}, latent_dim=8, noise=0.1, seed=3)
    rng = np.random.default_rng(0)
    img = base.features["image"]
    scale = img.std()
    feats = {"image": np.concatenate([img, scale * rng.standard_normal((500, N_NOISE))], axis=1),
             "text": scale * rng.standard_normal((500, 8))}
    return Dataset(name="planted", train=base.train, valid=base.valid, test=base.test,
                   features={m: f.astype(np.float32) for m, f in feats.items()})


@pytest.fixture(scope="module")
def vbpr(planted, tmp_path_factory):
    run = tmp_path_factory.mktemp("vbpr")
    return Recommender("vbpr", epochs=12, learning_rate=0.01, reg_weight=1e-2).fit(planted, run_dir=run,
                                                                                   show_progress=False), run


def _separates(att: np.ndarray) -> tuple[bool, float]:
    """Every informative dim above every noise dim, and the mean ratio."""
    mag = np.abs(att).mean(axis=0)
    return bool(mag[:N_INFO].min() > mag[N_INFO:].max()), float(mag[:N_INFO].mean() / mag[N_INFO:].mean())


def test_attribution_prefers_informative_dimensions(vbpr, planted):
    rec, _ = vbpr
    users = np.arange(100)
    top = ex.recommend_internal(rec.model, planted.train, users, 10)
    att = ex.feature_attributions(rec.model, np.repeat(users, 10), top.ravel())["image"]
    assert att.shape == (1000, N_INFO + N_NOISE)
    ok, ratio = _separates(att)
    assert ok and ratio > 2.0, ratio
    # the same criterion fails for random attributions of the same shape and scale
    rnd_ok, rnd_ratio = _separates(np.random.default_rng(1).permutation(att.ravel()).reshape(att.shape))
    assert not rnd_ok and rnd_ratio < 1.5
    # and the informative modality dominates the pure-noise one across users
    summary = ex.dominance(rec.model, planted.train, k=10, max_users=300)
    assert summary["modality_dominant_share"]["image"] > 0.7
    assert summary["mean_abs_share"]["image"] > 2 * summary["mean_abs_share"]["text"]
    assert abs(sum(summary["dominant_share"].values()) - 1) < 1e-6


def test_exact_split_occlusion_and_gradients_agree_for_vbpr(vbpr, planted):
    """VBPR is linear in its features: the exact split, zero-baseline occlusion and the sum of
    gradient x input over dimensions are the same numbers, and the parts sum to the score."""
    model = vbpr[0].model
    users, items = np.array([0, 0, 3, 9]), np.array([1, 7, 4, 2])
    exact = ex.modality_contributions(model, users, items, method="model")
    occl = ex.modality_contributions(model, users, items, method="occlusion")
    grads = ex.feature_attributions(model, users, items)
    with model.scoring():
        scores = model.score(torch.tensor([0, 3, 9]))[[0, 0, 1, 2], items].numpy()
    np.testing.assert_allclose(sum(exact.values()), scores, rtol=1e-4, atol=1e-4)
    for m in ("image", "text"):
        np.testing.assert_allclose(exact[m], occl[m], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(grads[m].sum(axis=1), exact[m], rtol=1e-3, atol=1e-4)


def test_generic_path_for_a_non_dot_product_model(planted):
    """LD4MRec has no exact split: occlusion and gradients go through features()."""
    torch.manual_seed(0)
    rec = Recommender("ld4mrec", epochs=6, hidden_dim=64, embedding_dim=16, learning_rate=3e-3, collab_signal=False)
    rec.fit(planted, show_progress=False)
    assert ex.contribution_method(rec.model) == "occlusion"
    e = ex.explain(rec, planted.user_ids[2], k=5)
    assert e.method == "occlusion" and set(e.contributions) == {"id", "image", "text"}
    np.testing.assert_allclose(sum(e.contributions.values()), e.scores, rtol=1e-5)
    assert e.feature_attributions["image"].shape == (5, N_INFO + N_NOISE)
    assert np.abs(e.feature_attributions["image"]).sum() > 0
    assert len(e.top_dimensions("image", 3)) == 3
    with pytest.raises(PrismrecError, match="no modality_contributions"):
        ex.modality_contributions(rec.model, [0], [1], method="model")


def test_mean_baseline_and_errors(vbpr):
    model = vbpr[0].model
    c = ex.modality_contributions(model, [0, 1], [2, 3], method="occlusion", baseline="mean")
    assert set(c) == {"id", "image", "text"}
    with pytest.raises(ValueError, match="baseline"):
        ex.modality_contributions(model, [0], [1], method="occlusion", baseline="median")
    with pytest.raises(ValueError, match="pairs"):
        ex.modality_contributions(model, [0, 1], [1])


def test_id_only_model_is_a_clear_error(tiny):
    rec = Recommender("bpr", epochs=1).fit(tiny, show_progress=False)
    with pytest.raises(PrismrecError, match="no modality features"):
        ex.modality_contributions(rec.model, [0], [1])


def test_cli_table_json_and_summary(vbpr, planted):
    _, run = vbpr
    runner = CliRunner()
    res = runner.invoke(app, ["explain", str(run), "--user", str(planted.user_ids[5]), "-k", "4", "--summary", "50"])
    assert res.exit_code == 0, res.output
    assert "| rank | item" in res.output and "image (24-d): top dimensions" in res.output
    assert "dominates" in res.output and res.output.count("\n| ") >= 4
    res = runner.invoke(app, ["explain", str(run), "--user", str(planted.user_ids[5]), "-k", "3", "--json"])
    out = json.loads(res.output)
    assert len(out["items"]) == 3 and set(out["contributions"]) == {"id", "image", "text"}
    res = runner.invoke(app, ["explain", str(run), "--user", "nobody"])
    assert res.exit_code == 2 and "unknown user" in res.output
