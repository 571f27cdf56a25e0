"""End to end (issue 8): generated images, texts and tones -> `prismrec extract` -> train VBPR on the
generic folder -> serve -> recommend, and a cold-start item registered from its extracted features."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import prismrec
from prismrec.cli import app

from tests.features.mediagen import CATEGORIES, category, make_media, write_table

N_ITEMS, N_USERS, PER_USER = 64, 60, 8  # at least 50 items: evaluation ranks top-50
runner = CliRunner()


def interactions(rng) -> str:
    """Each user likes one category: ``PER_USER`` of its items (``N_ITEMS / 4`` per category)."""
    lines = ["user,item"]
    per_cat = [[i for i in range(N_ITEMS) if category(i) == c] for c in range(len(CATEGORIES))]
    for u in range(N_USERS):
        for i in rng.choice(per_cat[u % len(CATEGORIES)], PER_USER, replace=False):
            lines.append(f"u{u},it{i}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop")
    rows = make_media(root, [f"it{i}" for i in range(N_ITEMS + 1)], seed=3)  # the last one arrives later
    write_table(root / "items.csv", rows[:N_ITEMS])
    write_table(root / "new_items.csv", rows[N_ITEMS:])
    return root


def test_extract_train_serve_recommend(shop, tmp_path):
    data = tmp_path / "data"
    args = ["extract", "--items", str(shop / "items.csv"), "--out", str(data), "--text-encoder", "hashing",
            "--image-encoder", "colorstats", "--audio-encoder", "logmel", "--quiet", "--batch-size", "16"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "image [colorstats, 233-d] encoded 64, cached 0, failed 0" in r.output
    (data / "interactions.csv").write_text(interactions(np.random.default_rng(0)))

    ds = prismrec.load_dataset(data)
    assert set(ds.features) == {"text", "image", "audio"} and ds.n_items == N_ITEMS
    run = tmp_path / "run"
    rec = prismrec.Recommender("vbpr", epochs=15, patience=100, embedding_dim=16, batch_size=128)
    rec.fit(ds, run_dir=run, show_progress=False)
    items, _ = rec.recommend("u0", k=5)
    assert len(items) == 5 and all(str(i).startswith("it") for i in items)

    # the same items come out of the HTTP service over the saved bundle
    from fastapi.testclient import TestClient
    from prismrec.serve.app import create_app
    from prismrec.serve.settings import ServeSettings
    with TestClient(create_app(ServeSettings(bundle=run, admin_token="t"))) as client:
        got = client.get("/recommend", params={"user": "u0", "k": 5})
        assert got.status_code == 200 and got.json()["items"] == [str(i) for i in items]
        # users get items of the category they like: well above the 1 in 4 of chance
        hits = []
        for u in range(0, N_USERS, 3):
            recs = client.get("/recommend", params={"user": f"u{u}", "k": 5}).json()["items"]
            hits += [category(int(i[2:])) == u % len(CATEGORIES) for i in recs]
        assert np.mean(hits) > 0.5, np.mean(hits)

        # a new item: extract with the same encoders and cache (only it is encoded), register it, serve it
        r = runner.invoke(app, ["extract", "--items", str(shop / "new_items.csv"), "--out", str(tmp_path / "new"),
                                "--cache", str(data / "cache"), "--text-encoder", "hashing",
                                "--image-encoder", "colorstats", "--quiet"])
        assert r.exit_code == 0 and "encoded 1, cached 0" in r.output, r.output
        new_id = json.loads((tmp_path / "new" / "items.json").read_text())[0]
        feats = {m: np.load(tmp_path / "new" / f"{m}_feat.npy")[0].tolist() for m in ("text", "image", "audio")}
        posted = client.post("/items", json={"id": new_id, "features": feats}, headers={"Authorization": "Bearer t"})
        assert posted.status_code == 201, posted.json()
        similar = client.get("/similar", params={"item": new_id, "k": 6}).json()["items"]
        assert len(similar) == 6 and new_id not in similar
