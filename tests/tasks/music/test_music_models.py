"""CMVAE, dual encoder and popularity: losses decrease, missing modalities, objectives, learning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from prismrec.errors import ConfigError, UnknownNameError
from prismrec.tasks.music import build, fit
from prismrec.tasks.music.layers import product_of_experts
from prismrec.tasks.music.model import MatchBatch
from prismrec.tasks.music.train import tensors

FAST = {"epochs": 4, "batch_size": 128, "patience": 10, "learning_rate": 3e-3}
SMALL = {"latent_dim": 8, "hidden": "64,32", "converter_dim": 32}


def _dims(ds):
    return ({m: f.shape[1] for m, f in ds.video_features.items()},
            {m: f.shape[1] for m, f in ds.track_features.items()})


def _batch(ds, n=64):
    v = torch.arange(n)
    t = torch.from_numpy(np.array(ds.video_track[:n]))
    vf, tf = tensors(ds.video_features), tensors(ds.track_features)
    return MatchBatch(v, t, {m: f[v] for m, f in vf.items()}, {m: f[t] for m, f in tf.items()})


@pytest.mark.parametrize("name, extra", [("cmvae", SMALL), ("dual-encoder", {"hidden": "64,32", "embedding_dim": 8})])
def test_loss_decreases(music_small, name, extra):
    res = fit(music_small, name, {**FAST, **extra, "seed": 1})
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert 0 <= res.best_epoch < 4 and res.test["recall@10"] > 0


def test_cmvae_beats_popularity(music_small):
    pop = fit(music_small, "pop")
    cm = fit(music_small, "cmvae", {**FAST, **SMALL, "epochs": 6})
    assert pop.history == [] and pop.best_epoch == 0
    assert cm.test["recall@10"] > pop.test["recall@10"] + 0.15
    assert cm.test["medr"] < pop.test["medr"]


def test_seeded_runs_are_reproducible(music_small):
    a = fit(music_small, "cmvae", {**SMALL, "epochs": 2, "seed": 3})
    b = fit(music_small, "cmvae", {**SMALL, "epochs": 2, "seed": 3})
    assert a.test == b.test and [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


@pytest.mark.parametrize("align", ["shared", "converter"])
def test_missing_modality_at_inference_uses_available_experts(music_small, align):
    torch.manual_seed(0)
    vd, td = _dims(music_small)
    model = build("cmvae", {**SMALL, "align": align}, vd, td, music_small.n_tracks)
    model.setup(music_small)
    model.eval()
    vf = {m: f[:10] for m, f in tensors(music_small.video_features).items()}
    with torch.no_grad():
        only_visual = model.embed_videos({"visual": vf["visual"]})
        x = model.video_norm({"visual": vf["visual"]})["visual"]
        want = model.to_music(*product_of_experts([model.video_enc["visual"](x)], prior=True))[0]
        both = model.embed_videos(vf)
    torch.testing.assert_close(only_visual, want)
    assert only_visual.shape == both.shape and not torch.allclose(only_visual, both)
    with torch.no_grad():   # the dual encoder averages the towers' available inputs
        de = build("dual-encoder", {"hidden": "16", "embedding_dim": 4}, vd, td, music_small.n_tracks).eval()
        assert de.embed_videos({"text": vf["text"]}).shape == (10, 4)
    with pytest.raises(ValueError, match="at least one of"):
        model.embed_videos({})
    with pytest.raises(ValueError, match="unknown video modality"):
        model.embed_videos({"audio": vf["visual"]})
    with pytest.raises(ValueError, match=r"expected features \[N, 20\]"):
        model.embed_videos({"visual": vf["text"]})


def test_missing_modality_ranking_still_informative(music_small):
    res = fit(music_small, "cmvae", {**FAST, **SMALL})
    model = res.model
    test = music_small.videos("test")
    vf, tf = tensors(music_small.video_features), tensors(music_small.track_features)
    with torch.no_grad():
        t = model.embed_tracks(tf)
        v = model.embed_videos({"visual": vf["visual"][torch.from_numpy(test)]})
        scores = -torch.cdist(v, t)
    top10 = scores.topk(10, dim=1).indices.numpy()
    hit = (top10 == music_small.video_track[test][:, None]).any(1).mean()
    assert hit > 0.6   # popularity alone gives 0.5 on this set (60 tracks)


@pytest.mark.parametrize("extra", [{"objective": "iwae_looser", "iw_samples": 3}, {"align": "converter"},
                                   {"objective": "iwae_looser", "iw_samples": 3, "align": "converter"},
                                   {"contrastive_weight": 0.5}, {"score": "likelihood"}, {"score": "cosine"}])
def test_cmvae_variants_train(music_small, extra):
    torch.manual_seed(0)
    vd, td = _dims(music_small)
    model = build("cmvae", {**SMALL, **extra}, vd, td, music_small.n_tracks)
    model.setup(music_small)
    model.on_epoch_start(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = _batch(music_small)
    losses = []
    for _ in range(15):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        v = model.embed_videos({m: f[:5] for m, f in tensors(music_small.video_features).items()})
        t = model.embed_tracks(tensors(music_small.track_features))
    assert v.shape[1] == t.shape[1] and t.shape[0] == music_small.n_tracks


def test_beta_warmup():
    model = build("cmvae", {**SMALL, "beta": 0.5, "beta_warmup": 4}, {"a": 3}, {"b": 2}, 5)
    model.on_epoch_start(0)
    assert model.beta_now == pytest.approx(0.125)
    model.on_epoch_start(10)
    assert model.beta_now == pytest.approx(0.5)


def test_config_errors(music_small):
    with pytest.raises(UnknownNameError, match="known: cmvae, dual-encoder, pop"):
        fit(music_small, "cmvea")
    with pytest.raises(ConfigError, match="latent_dimm"):
        fit(music_small, "cmvae", {"latent_dimm": 3})
    with pytest.raises(ConfigError, match="objective"):
        fit(music_small, "cmvae", {"objective": "vae"})
    with pytest.raises(ConfigError, match="valid_metric"):
        fit(music_small, "pop", {"valid_metric": "recall"})


def test_cmvae_warns_when_its_contrastive_term_and_score_disagree(caplog):
    from prismrec.tasks.music.cmvae import CMVAE, CMVAEConfig
    with caplog.at_level("WARNING", logger="prismrec"):
        CMVAE(CMVAEConfig(contrastive_weight=1.0), {"visual": 4}, {"audio": 3}, 5)
    assert "score='cosine'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="prismrec"):
        CMVAE(CMVAEConfig(contrastive_weight=1.0, score="cosine"), {"visual": 4}, {"audio": 3}, 5)
    assert caplog.text == ""
