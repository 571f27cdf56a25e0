"""Serving UX (issue 23 items 7 and 8): the unknown-user 404 names the cold-start POST,
``fallback=popular``, explanations whose parts add up to the score, item metadata carried from the
dataset's items table into the bundle and served."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from prismrec import Recommender, load_dataset
from prismrec.bundle import read_manifest
from prismrec.errors import DataError, PrismrecError
from prismrec.explain import modality_contributions


def _reference_popular(state, k):
    """Most popular items by a plain count over the training pairs (ties: lower index first)."""
    counts = Counter(state.seen.tocoo().col.tolist())
    order = sorted(range(state.n_base), key=lambda i: (-counts.get(i, 0), i))[:k]
    return [state.item_ids[i].item() for i in order], [float(counts.get(i, 0)) for i in order]


# -- issue 23 item 7 ---------------------------------------------------------------------------------
def test_unknown_user_404_names_the_cold_start_post(client, vbpr_state):
    r = client.get("/recommend", params={"user": "nobody"})
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert detail.startswith("unknown user 'nobody'")
    assert "POST /recommend" in detail and "fallback=popular" in detail
    users = vbpr_state.user_map.ids[:3].tolist()
    assert f"e.g. {users[0]}, {users[1]}, {users[2]}" in detail  # example user ids
    liked = _reference_popular(vbpr_state, 2)[0]
    assert json.dumps({"items": liked, "k": 10}) in detail  # a body that works as it is
    assert client.post("/recommend", json={"items": liked, "k": 10}).status_code == 200


def test_unknown_user_404_without_item_vectors(make_client, vbpr_state):
    """A model without item vectors cannot serve a cold-start POST: the hint offers only the fallback."""
    from dataclasses import replace
    with make_client(replace(vbpr_state, index=None, sim_index=None)) as c:
        detail = c.get("/recommend", params={"user": "nobody"}).json()["detail"]
        assert "fallback=popular" in detail and "POST" not in detail and "cannot recommend for a new user" in detail
        body = c.get("/recommend", params={"user": "nobody", "k": 3, "fallback": "popular"}).json()
        assert body["items"] == _reference_popular(vbpr_state, 3)[0]


def test_fallback_popular(client, vbpr_state):
    r = client.get("/recommend", params={"user": "nobody", "k": 7, "fallback": "popular"})
    assert r.status_code == 200
    body = r.json()
    items, counts = _reference_popular(vbpr_state, 7)
    assert body == {"user": "nobody", "items": items, "scores": counts, "fallback": "popular"}
    assert client.get("/popular", params={"k": 7}).json() == {"items": items, "scores": counts}
    # a known user is answered as usual, flagged as no fallback
    known = client.get("/recommend", params={"user": 3, "k": 5, "fallback": "popular"}).json()
    plain = client.get("/recommend", params={"user": 3, "k": 5}).json()
    assert known == plain and known["fallback"] is None
    assert known["items"] == [int(i) for i in vbpr_state.recommend(3, 5)[0]]
    assert client.get("/recommend", params={"user": "nobody", "fallback": "random"}).status_code == 422


def test_unknown_user_elsewhere_gives_examples(client):
    detail = client.get("/history", params={"user": "nobody"}).json()["detail"]
    assert detail.startswith("unknown user 'nobody'") and "300 users known, e.g." in detail
    assert client.get("/explain", params={"user": "nobody", "item": 1}).status_code == 404


def test_explain_parts_sum_to_the_score(client, vbpr_state):
    """VBPR's own split (no stand-in): the ID part plus the modalities give the score /recommend
    ranks by, and the same parts as `prismrec explain`."""
    rec = client.get("/recommend", params={"user": 5, "k": 3}).json()
    for item, listed in zip(rec["items"], rec["scores"]):
        body = client.get("/explain", params={"user": 5, "item": item}).json()
        parts = body["contributions"]
        assert list(parts) == ["id", "image", "text"]
        assert sum(parts.values()) == pytest.approx(body["score"], abs=1e-5)
        assert body["score"] == pytest.approx(listed, abs=1e-5)
        u, i = vbpr_state.user_index(5), vbpr_state.item_index(item)
        cli = modality_contributions(vbpr_state.rec.model, [u], [i])
        assert parts == pytest.approx({k: float(v[0]) for k, v in cli.items()}, abs=1e-5)


def test_explain_without_item_vectors_still_sums(client, vbpr_state, monkeypatch):
    """A model scored by model.score (no index): the score comes from the model itself."""
    monkeypatch.setattr(type(vbpr_state), "explain", lambda self, u, i: (None, {"image": 0.5, "text": 0.25}))
    model = vbpr_state.rec.model
    with torch.no_grad():
        model.prepare_scoring()  # what ServingState.load does for a model without item vectors
    try:
        expected = float(model.score(torch.tensor([vbpr_state.user_index(1)]))[0, vbpr_state.item_index(2)])
        body = client.get("/explain", params={"user": 1, "item": 2}).json()
    finally:
        model._cache = None
    assert body["score"] == pytest.approx(expected, abs=1e-6)
    assert body["contributions"]["id"] == pytest.approx(expected - 0.75, abs=1e-6)


# -- issue 23 item 8: metadata carried into the bundle and served ------------------------------------
def test_items_table_carried_into_the_bundle(meta_bundle, meta_data_dir):
    assert "items_meta.json" in read_manifest(meta_bundle)["files"]  # verified like the other files
    meta = json.loads((meta_bundle / "items_meta.json").read_text())
    assert meta["source"] == "items.csv" and len(meta["items"]) == 120
    assert meta["items"]["4"] == {"title": "Product 4", "image_file": str((meta_data_dir / "img" / "4.png").resolve()),
                                  "fields": {"brand": "brand-1"}}
    rec = Recommender.load(meta_bundle)
    assert rec.items_meta == meta


def test_bad_items_table_fails_before_training(tmp_path, meta_data_dir):
    import shutil
    folder = tmp_path / "tiny-shop"
    shutil.copytree(meta_data_dir, folder)
    (folder / "items.csv").write_text("item,title\n1,a\n1,b\n")
    with pytest.raises(DataError, match="line 3, field 'item': duplicate item id '1'"):
        Recommender("vbpr", epochs=1).fit(load_dataset(folder), run_dir=tmp_path / "run", show_progress=False,
                                          data_path=str(folder))
    assert not (tmp_path / "run" / "config.json").exists()


def test_edited_items_meta_is_refused(tmp_path, meta_bundle):
    import shutil
    copy = tmp_path / "b"
    shutil.copytree(meta_bundle, copy)
    f = copy / "items_meta.json"
    f.write_text(f.read_text().replace("Product 4", "Product 5"))
    with pytest.raises(PrismrecError, match="items_meta.json"):
        Recommender.load(copy)


def test_items_served(make_client, meta_state, meta_data_dir):
    with make_client(meta_state) as c:
        one = c.get("/items/4").json()
        assert one == {"item": 4, "title": "Product 4", "image": "/image?item=4", "popularity": one["popularity"],
                       "registered": False, "fields": {"brand": "brand-1"}}
        assert one["popularity"] == int(meta_state.seen[:, 4].sum()) > 0
        batch = c.get("/items", params=[("ids", 4), ("ids", 11), ("ids", 3)]).json()
        assert [i["item"] for i in batch["items"]] == [4, 11, 3] and batch["total"] == 120
        assert batch["items"][1]["image"].startswith("data:image/png;base64,")  # a URL is given as it is
        assert batch["items"][2]["image"] is None and batch["items"][2]["title"] == "Product 3"
        page = c.get("/items", params={"offset": 118, "limit": 5}).json()
        assert [i["item"] for i in page["items"]] == [118, 119]
        assert c.get("/items", params=[("ids", 4), ("ids", "nope")]).status_code == 404
        img = c.get("/image", params={"item": 4})
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert img.content == (meta_data_dir / "img" / "4.png").read_bytes()
        assert img.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("item", ["3", "11", "../../etc/passwd", "/etc/passwd", "img/4.png", "%2e%2e%2fitems.csv"])
def test_image_route_serves_only_recorded_files(make_client, meta_state, item):
    """The request names an item, never a path: other values are unknown items or items without a file."""
    with make_client(meta_state) as c:
        r = c.get("/image", params={"item": item})
        assert r.status_code == 404 and "detail" in r.json()


def test_image_file_gone(make_client, meta_state, meta_data_dir, tmp_path):
    import shutil
    f = meta_data_dir / "img" / "6.png"
    shutil.move(f, tmp_path / "6.png")
    try:
        with make_client(meta_state) as c:
            r = c.get("/image", params={"item": 6})
        assert r.status_code == 404 and "no longer there" in r.json()["detail"]
    finally:
        shutil.move(tmp_path / "6.png", f)


def test_registered_item_has_no_metadata(make_client, meta_state, admin_headers):
    with make_client(meta_state) as c:
        r = c.post("/items", headers=admin_headers, json={"id": "new-1", "features": {"image": [0.1] * 24,
                                                                                    "text": [0.2] * 16}})
        assert r.status_code == 201
        info = c.get("/items/new-1").json()
        assert info == {"item": "new-1", "title": None, "image": None, "popularity": 0, "registered": True,
                        "fields": {}}
        assert c.get("/items", params={"offset": 120}).json()["items"][0]["item"] == "new-1"
        assert c.get("/image", params={"item": "new-1"}).status_code == 404


def test_bundle_without_metadata(client):
    info = client.get("/items/4").json()
    assert info["title"] is None and info["image"] is None and info["fields"] == {}


def test_readme_and_serve_help_describe_the_same_routes():
    from pathlib import Path

    from typer.testing import CliRunner

    from prismrec.cli import app
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Serving"):]
    for phrase in ("fallback=popular", "/?user=ID", "POST /recommend", "/popular", "/explain", "/items/ID",
                   "/items?ids=1&ids=2", "/image?item=ID", "items.csv", "prismrec train"):
        assert phrase in result.output and phrase in section, phrase
