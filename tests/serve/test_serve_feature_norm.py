"""``POST /items`` on a bundle trained with ``feature_norm``: the raw features of a new item go
through the bundle's fitted transform (``feature_norm.json``), so a new item scores exactly like the
same item did as a (transformed) training item; a bundle without the file says so."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.bundle import MANIFEST
from prismrec.serve.settings import ServeSettings
from prismrec.serve.state import FEATURE_RANGE, ServingState

TWIN = 17  # the training item whose raw features the new item is given


@pytest.fixture(scope="module")
def norm_bundles(tmp_path_factory, serve_data):
    """mode -> a VBPR bundle trained with ``feature_norm=mode`` on ``serve_data`` (raw features)."""
    root = tmp_path_factory.mktemp("norm")
    for mode in ("l2", "standardize"):
        Recommender("vbpr", epochs=3, feature_norm=mode).fit(serve_data, run_dir=root / mode, show_progress=False)
    return root


def _served_scores(client, user) -> dict:
    body = client.get("/recommend", params={"user": user, "k": 1000, "exclude_seen": False}).json()
    return dict(zip(map(str, body["items"]), body["scores"]))


@pytest.mark.parametrize("mode", ["l2", "standardize"])
def test_a_new_item_scores_like_its_transformed_training_twin(norm_bundles, serve_data, make_client, admin_headers,
                                                              mode):
    state = ServingState.load(ServeSettings(bundle=norm_bundles / mode))
    raw = {m: f[TWIN] for m, f in serve_data.features.items()}
    model, stored = state.rec.model, state.rec.dataset.features  # the bundle's: transformed at training
    with torch.no_grad():
        twin = model.embed_items({m: torch.tensor(f[TWIN:TWIN + 1]) for m, f in stored.items()})[0]
        untransformed = model.embed_items({m: torch.tensor(f[None]) for m, f in raw.items()})[0]
    with make_client(state) as c:
        r = c.post("/items", json={"id": "twin", "features": {m: v.tolist() for m, v in raw.items()}},
                   headers=admin_headers)
        assert r.status_code == 201, r.json()
        assert c.get("/health").json()["cold_start_items"] is True
        for user in (0, 5, 123):
            served = _served_scores(c, user)["twin"]
            u = state.user_vecs[state.user_index(user)]
            assert served == pytest.approx(float(u @ twin), rel=1e-5, abs=1e-6)
            assert abs(served - float(u @ untransformed)) > 1e-3 * abs(served)  # raw features would differ
        # a reload re-embeds the registered item from its raw features, through the same transform
        assert c.post("/reload", headers=admin_headers).status_code == 200
        assert _served_scores(c, 5)["twin"] == pytest.approx(float(state.user_vecs[5] @ twin), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mode", ["l2", "standardize"])
def test_the_accepted_range_is_the_raw_features_one(norm_bundles, serve_data, make_client, admin_headers, mode):
    """The bundle stores transformed features; POST /items takes raw ones, so its limits (and the
    schema's) come from the raw training features."""
    state = ServingState.load(ServeSettings(bundle=norm_bundles / mode))
    for m, f in serve_data.features.items():
        assert state.feature_limits[m] == pytest.approx(FEATURE_RANGE * float(np.abs(f).max()), rel=1e-6)
    with make_client(state) as c:
        schema = c.get("/openapi.json").json()["components"]["schemas"]["NewItem"]["properties"]["features"]
        assert schema["properties"]["image"]["items"]["maximum"] == state.feature_limits["image"]
        big = {m: (f[TWIN] * 0 + 0.9 * state.feature_limits[m]).tolist() for m, f in serve_data.features.items()}
        assert c.post("/items", json={"id": "big", "features": big}, headers=admin_headers).status_code == 201
        over = {**big, "text": [1.01 * state.feature_limits["text"]] * len(big["text"])}
        r = c.post("/items", json={"id": "over", "features": over}, headers=admin_headers)
        assert r.status_code == 422 and "modality 'text' has values out of range" in r.json()["detail"]


def test_an_old_standardize_bundle_serves_but_refuses_new_items_naming_the_file(norm_bundles, tmp_path, make_client,
                                                                               admin_headers, serve_data):
    old = tmp_path / "old"
    shutil.copytree(norm_bundles / "standardize", old)
    m = json.loads((old / MANIFEST).read_text())
    del m["files"]["feature_norm.json"]  # as written before bundles kept the transform
    (old / MANIFEST).write_text(json.dumps(m))
    (old / "feature_norm.json").unlink()
    state = ServingState.load(ServeSettings(bundle=old))
    with make_client(state) as c:
        assert c.get("/health").json()["cold_start_items"] is False
        body = {"id": "n", "features": {m: f[0].tolist() for m, f in serve_data.features.items()}}
        r = c.post("/items", json=body, headers=admin_headers)
        detail = r.json()["detail"]
        assert r.status_code == 422 and detail.startswith("feature_norm.json: missing: this bundle was trained with "
                                                          "feature_norm=standardize")
        assert str(tmp_path) not in detail  # clients are not told the server's paths
        assert c.get("/recommend", params={"user": "0", "k": 5}).status_code == 200
