"""Bundle round trip, the ``GET /music`` router on a bare FastAPI app, and the ``prismrec music`` CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from prismrec.cli import app as cli_app
from prismrec.errors import BundleError
from prismrec.tasks.music import fit
from prismrec.tasks.music.bundle import MusicBundle, save_music_bundle
from prismrec.tasks.music.serving import router


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, music_small):
    res = fit(music_small, "cmvae", {"epochs": 2, "latent_dim": 8, "hidden": "32", "converter_dim": 16})
    return save_music_bundle(tmp_path_factory.mktemp("b") / "cmvae", res, music_small)


def test_bundle_round_trip(bundle_dir, music_small):
    b = MusicBundle(bundle_dir)
    assert b.config["model"] == "cmvae" and b.config["similarity"] == "neg_sqdist"
    assert {p.suffix for p in bundle_dir.iterdir()} <= {".json", ".safetensors", ".jsonl"}
    ids, scores = b.match("v7", 5)
    assert len(ids) == 5 and scores == sorted(scores, reverse=True)
    assert b.used_track("v7") == music_small.track_ids[music_small.video_track[7]]
    # a new video given by its features ranks like the stored embedding of the same video
    feats = {m: f[7] for m, f in music_small.video_features.items()}
    new_ids, _ = b.match_features(feats, 5)
    assert new_ids[0] == ids
    only_text, _ = b.match_features({"text": music_small.video_features["text"][7:9]}, 3)
    assert len(only_text) == 2 and len(only_text[0]) == 3
    with pytest.raises(KeyError, match="unknown video 'nope'"):
        b.match("nope")


def test_bundle_refuses_bad_directories(tmp_path, bundle_dir):
    with pytest.raises(BundleError, match="not a bundle directory"):
        MusicBundle(tmp_path / "none")
    (tmp_path / "x").mkdir()
    with pytest.raises(BundleError, match=r"not a bundle \(no manifest.json\); a music bundle is written by"):
        MusicBundle(tmp_path / "x")
    (tmp_path / "x" / "model.pt").write_bytes(b"")
    with pytest.raises(BundleError, match="pickle"):
        MusicBundle(tmp_path / "x")


def test_router_on_bare_app(bundle_dir):
    api = FastAPI()
    api.include_router(router(bundle_dir))
    client = TestClient(api)
    r = client.get("/music", params={"video": "v3", "k": 4})
    assert r.status_code == 200
    body = r.json()
    want_ids, want_scores = MusicBundle(bundle_dir).match("v3", 4)
    assert body["video"] == "v3" and body["model"] == "cmvae" and body["used_track"].startswith("t")
    assert [t["track"] for t in body["tracks"]] == want_ids
    assert np.allclose([t["score"] for t in body["tracks"]], want_scores)
    assert len(client.get("/music", params={"video": "v3"}).json()["tracks"]) == 10
    r = client.get("/music", params={"video": "nope"})
    assert r.status_code == 404 and r.json()["detail"] == "unknown video 'nope'"
    assert client.get("/music", params={"video": "v3", "k": 0}).status_code == 422
    assert client.get("/music").status_code == 422


def test_cli_end_to_end(tmp_path):
    runner = CliRunner()
    data = tmp_path / "m"
    r = runner.invoke(cli_app, ["music", "synth", "--out", str(data), "--videos", "400", "--tracks", "30"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"
    r = runner.invoke(cli_app, ["music", "train", "--data", str(data), "--model", "dual-encoder", "--set", "epochs=2",
                                "--set", "hidden=16", "--set", "embedding_dim=8", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "recall@10" in r.output and (out / "log.jsonl").is_file()
    r = runner.invoke(cli_app, ["music", "evaluate", str(out), "-k", "5"])
    assert r.exit_code == 0 and "recall@5" in r.output and "medr" in r.output, r.output
    r = runner.invoke(cli_app, ["music", "match", str(out), "--video", "v2", "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["video"] == "v2" and len(body["tracks"]) == 3
    np.save(tmp_path / "vis.npy", np.zeros((1, 128), np.float32))
    r = runner.invoke(cli_app, ["music", "match", str(out), "--features", f"visual={tmp_path / 'vis.npy'}"])
    assert r.exit_code == 0 and "track t" in r.output, r.output
    r = runner.invoke(cli_app, ["music", "match", str(out), "--features", f"audio={tmp_path / 'vis.npy'}"])
    assert r.exit_code == 2 and "unknown video modality" in r.output
    r = runner.invoke(cli_app, ["music", "match", str(out), "--video", "zzz"])
    assert r.exit_code == 2 and "unknown video 'zzz'" in r.output
    r = runner.invoke(cli_app, ["music", "train", "--data", str(data), "--model", "cmvea"])
    assert r.exit_code == 2 and "unknown music model 'cmvea'" in r.output
    r = runner.invoke(cli_app, ["music", "train", "--data", str(tmp_path / "nope"), "--model", "pop"])
    assert r.exit_code == 2 and "not found" in r.output


def test_mounted_in_the_recommendation_service(bundle_dir, tmp_path):
    """`prismrec serve RUN --music BUNDLE` serves /music beside /recommend."""
    from prismrec import Recommender, make_synthetic
    from prismrec.serve.app import create_app
    from prismrec.serve.settings import ServeSettings
    run = tmp_path / "rec"
    Recommender("bpr", epochs=1).fit(make_synthetic(60, 40, seed=0), run_dir=run, show_progress=False)
    client = TestClient(create_app(ServeSettings(bundle=run, music_bundle=bundle_dir)))
    assert client.get("/music", params={"video": "v3", "k": 3}).status_code == 200
    assert client.get("/recommend", params={"user": 0, "k": 3}).status_code == 200
    assert "/music" in client.get("/openapi.json").json()["paths"]
