"""DRAGON and LGMRec bundles served over HTTP give the Python API's recommendations (issue 21); a
FREEDOM bundle registers new items from their features."""
from __future__ import annotations

import numpy as np
import pytest

from prismrec import Recommender
from prismrec.serve.settings import ServeSettings
from prismrec.serve.state import ServingState


@pytest.mark.parametrize("name", ["dragon", "lgmrec"])
def test_served_lists_equal_the_api(name, serve_data, tmp_path, make_client):
    rec = Recommender(name, epochs=2, patience=100).fit(serve_data, run_dir=tmp_path, show_progress=False)
    state = ServingState.load(ServeSettings(bundle=tmp_path))
    with make_client(state) as client:
        for u in serve_data.user_ids[[0, 7, 123]]:
            r = client.get("/recommend", params={"user": str(u), "k": 10})
            assert r.status_code == 200, r.text
            ids, scores = rec.recommend(u, k=10)
            assert [str(i) for i in r.json()["items"]] == [str(i) for i in ids.tolist()]
            np.testing.assert_allclose(r.json()["scores"], scores, rtol=1e-4, atol=1e-4)


def test_freedom_bundle_registers_items_over_http(serve_data, tmp_path, make_client, admin_headers):
    """POST /items on a FREEDOM bundle (a content path for unseen items through its kNN item graph):
    /health says so, and the new item is ranked."""
    Recommender("freedom", epochs=2, patience=100).fit(serve_data, run_dir=tmp_path, show_progress=False)
    state = ServingState.load(ServeSettings(bundle=tmp_path))
    with make_client(state) as client:
        assert client.get("/health").json()["cold_start_items"] is True
        feats = {m: serve_data.features[m][5].tolist() for m in serve_data.features}
        r = client.post("/items", json={"id": "copy-of-5", "features": feats}, headers=admin_headers)
        assert r.status_code == 201, r.text
        ranked = client.get("/recommend", params={"user": 1, "k": 1000}).json()["items"]
        assert "copy-of-5" in ranked
