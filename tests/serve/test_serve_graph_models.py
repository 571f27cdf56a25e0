"""DRAGON and LGMRec bundles served over HTTP give the Python API's recommendations (issue 21)."""
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
