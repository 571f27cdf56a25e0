"""The serving API over a small VBPR bundle (TestClient)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from prismrec import Recommender
from prismrec.cli import app as cli_app
from prismrec.errors import BundleError
from prismrec.serve.app import create_app
from prismrec.serve.settings import ServeSettings
from prismrec.serve.state import ServingState, StateHolder



def test_recommend_equals_cli(client, vbpr_bundle, vbpr_state):
    users = [str(u) for u in vbpr_state.user_map.ids[[0, 7, 123, 299]]]
    args = ["recommend", str(vbpr_bundle), "--json", *sum((["--user", u] for u in users), [])]
    out = CliRunner().invoke(cli_app, args)
    assert out.exit_code == 0, out.output
    expected = json.loads(out.output)
    for u, e in zip(users, expected):
        r = client.get("/recommend", params={"user": u})
        assert r.status_code == 200
        assert r.json()["items"] == e["items"]
        np.testing.assert_allclose(r.json()["scores"], e["scores"], atol=1e-5)


def test_recommend_include_seen_equals_cli(client, vbpr_bundle):
    out = CliRunner().invoke(cli_app, ["recommend", str(vbpr_bundle), "--json", "--user", "5", "--include-seen",
                                       "-k", "25"])
    r = client.get("/recommend", params={"user": "5", "k": 25, "exclude_seen": False})
    assert r.json()["items"] == json.loads(out.output)["items"]


def test_recommend_excludes_history(client):
    hist = set(client.get("/history", params={"user": "3"}).json()["items"])
    assert hist
    items = client.get("/recommend", params={"user": "3", "k": 50}).json()["items"]
    assert len(items) == 50 and not hist & set(items)
    items = client.get("/recommend", params={"user": "3", "k": 1000, "exclude_seen": False}).json()["items"]
    assert len(items) == 120 and hist <= set(items)  # k is capped by the catalogue


@pytest.mark.parametrize("url,status", [
    ("/recommend?user=nobody", 404), ("/similar?item=nothing", 404), ("/explain?user=nobody&item=1", 404),
    ("/explain?user=1&item=nothing", 404), ("/history?user=nobody", 404),
    ("/recommend?user=1&k=0", 422), ("/recommend?user=1&k=abc", 422), ("/recommend?user=1&k=100000", 422),
    ("/recommend", 422), ("/recommend?user=", 422), ("/recommend?user=1&exclude_seen=maybe", 422),
    ("/similar?item=1&k=-3", 422), ("/nowhere", 404),
])
def test_errors_are_json(client, url, status):
    r = client.get(url)
    assert r.status_code == status
    assert "detail" in r.json()


def test_unknown_user_message(client):
    detail = client.get("/recommend?user=u42").json()["detail"]
    assert detail.startswith("unknown user 'u42'; ")  # then examples and the cold-start POST (test_serve_ux)


def test_cold_start(client, vbpr_state):
    liked = [int(i) for i in vbpr_state.item_ids[[1, 5, 9]]]
    r = client.post("/recommend", json={"items": liked, "k": 15})
    assert r.status_code == 200
    body = r.json()
    assert len(body["items"]) == 15 and not set(liked) & set(body["items"])
    assert body["scores"] == sorted(body["scores"], reverse=True)
    # the user vector is the mean of the liked items' vectors: check against a direct computation
    v = vbpr_state.index.base[liked].mean(0)
    scores = (vbpr_state.index.base @ v).numpy()
    scores[liked] = -np.inf
    assert body["items"][:5] == [int(i) for i in np.argsort(-scores, kind="stable")[:5]]


@pytest.mark.parametrize("body", [{"items": []}, {"items": [1], "k": 0}, {}, {"items": [1], "zzz": 1},
                                  {"items": "1"}])
def test_cold_start_bad_body(client, body):
    assert client.post("/recommend", json=body).status_code == 422


def test_cold_start_unknown_item(client):
    r = client.post("/recommend", json={"items": [1, "no-such-item"]})
    assert r.status_code == 404 and "no-such-item" in r.json()["detail"]


def test_similar(client, vbpr_state):
    body = client.get("/similar", params={"item": 4, "k": 7}).json()
    assert body["item"] == 4 and len(body["items"]) == 7 and 4 not in body["items"]
    unit = vbpr_state.sim_index.base
    cos = (unit @ unit[4]).numpy()
    cos[4] = -np.inf
    assert body["items"] == [int(i) for i in np.argsort(-cos, kind="stable")[:7]]


def test_explain_not_supported(client, vbpr_state, monkeypatch):
    monkeypatch.setattr(vbpr_state.rec.model, "modality_contributions", lambda u, i: None)
    r = client.get("/explain", params={"user": 1, "item": 2})
    assert r.status_code == 422 and "not support" in r.json()["detail"]


def test_explain_supported(client, vbpr_state, monkeypatch):
    import torch

    def contributions(users, items):
        return {"image": torch.full((len(users),), 0.25), "text": torch.full((len(users),), 0.75)}

    monkeypatch.setattr(vbpr_state.rec.model, "modality_contributions", contributions)
    r = client.get("/explain", params={"user": 1, "item": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["contributions"] == {"id": pytest.approx(body["score"] - 1.0), "image": 0.25, "text": 0.75}
    assert client.get("/health").json()["explain"] is True


def test_health_docs_openapi(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "vbpr" and h["items"] == 120 and h["users"] == 300
    assert h["modalities"] == {"image": 24, "text": 16} and h["index"] == "exact" and h["admin"] is True
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/similar", "/items", "/explain", "/health", "/metrics", "/reload"} <= set(paths)


def test_page_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "<script src=\"/static/app.js\">" in r.text
    assert client.get("/static/app.js").status_code == 200
    for asset in ("/static/app.js", "/static/style.css", "/"):  # nothing from outside the machine
        assert "http://" not in client.get(asset).text and "https://" not in client.get(asset).text


def test_metrics(client):
    client.get("/recommend?user=1")
    client.get("/recommend?user=nobody")
    text = client.get("/metrics").text
    assert 'prismrec_requests_total{method="GET",route="/recommend",status="200"} 1' in text
    assert 'prismrec_requests_total{method="GET",route="/recommend",status="404"} 1' in text
    assert 'prismrec_request_duration_seconds_bucket{route="/recommend",le="+Inf"} 2' in text
    assert "prismrec_request_duration_seconds_count" in text and "prismrec_items 120" in text


# -- admin routes ------------------------------------------------------------------------------------
NEW = {"id": "new-1", "features": {"image": [0.1] * 24, "text": [0.2] * 16}}


def test_admin_disabled_without_token(vbpr_state, make_client):
    with make_client(vbpr_state, token=None) as c:
        for path, body in (("/items", NEW), ("/reload", None)):
            r = c.post(path, json=body, headers={"Authorization": "Bearer anything"})
            assert r.status_code == 403 and "disabled" in r.json()["detail"]
        assert c.get("/similar?item=new-1").status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "TOKEN"},
                                     {"Authorization": "Basic TOKEN"}, {"Authorization": "Bearer TOKEN x"}])
def test_admin_refuses_bad_token(client, admin_token, headers):
    headers = {k: v.replace("TOKEN", admin_token) for k, v in headers.items()}
    for path, body in (("/items", NEW), ("/reload", None)):
        r = client.post(path, json=body, headers=headers)
        assert r.status_code in (401, 403), (path, headers)
    assert client.get("/health").json()["registered_items"] == 0


@pytest.mark.parametrize("features,message", [
    ({"image": [0.1] * 24}, "missing ['text']"),
    ({"image": [0.1] * 24, "text": [0.2] * 16, "audio": [1.0]}, "unknown ['audio']"),
    ({"image": [0.1] * 23, "text": [0.2] * 16}, "modality 'image' needs a vector of 24 numbers"),
    ({"image": [0.1] * 24, "text": [float("nan")] * 16}, "non-finite"),
    ({"image": [0.1] * 24, "text": [float("inf")] + [0.0] * 15}, "non-finite"),
    ({"image": [1e38] * 24, "text": [1e38] * 16}, "modality 'image' has values out of range"),
    ({"image": [0.1] * 24, "text": [-1e6] * 16}, "modality 'text' has values out of range"),  # issue 22
])
def test_register_item_validation(client, admin_headers, features, message):
    r = client.post("/items", content=json.dumps({"id": "x", "features": features}),
                    headers={**admin_headers, "content-type": "application/json"})
    assert r.status_code == 422 and message in r.json()["detail"], r.json()


def test_register_existing_id_conflicts(client, admin_headers):
    assert client.post("/items", json={**NEW, "id": 3}, headers=admin_headers).status_code == 409
    assert client.post("/items", json=NEW, headers=admin_headers).status_code == 201
    assert client.post("/items", json=NEW, headers=admin_headers).status_code == 409


def test_registered_item_is_served(client, admin_headers):
    r = client.post("/items", json=NEW, headers=admin_headers)
    assert r.status_code == 201 and r.json() == {"item": "new-1", "n_items": 121}
    assert len(client.get("/similar", params={"item": "new-1", "k": 5}).json()["items"]) == 5
    r = client.post("/recommend", json={"items": ["new-1", 3]})
    assert r.status_code == 200 and "new-1" not in r.json()["items"]
    assert client.get("/explain", params={"user": 1, "item": "new-1"}).status_code in (404, 422)
    all_items = client.get("/recommend", params={"user": 1, "k": 1000}).json()["items"]
    assert "new-1" in all_items and len(all_items) == 121 - len(client.get("/history?user=1").json()["items"])


def test_new_item_reaches_users_whose_history_matches(vbpr_state, serve_data, admin_headers, make_client):
    """A new item whose content duplicates the user's best-matching history item (by the model's content
    score) reaches that user's top 10; one with the least matching content does not."""
    d = vbpr_state.rec.model.config.embedding_dim
    content = (vbpr_state.user_vecs[:, d:] @ vbpr_state.index.base[:, d:].T).numpy()  # [users, items]
    matched = unmatched = 0
    users = range(0, 300, 15)
    for u in users:
        hist = vbpr_state.seen.indices[vbpr_state.seen.indptr[u]:vbpr_state.seen.indptr[u + 1]]
        for j, kind in ((hist[np.argmax(content[u, hist])], "match"), (np.argmin(content[u]), "far")):
            with make_client(vbpr_state) as c:
                feats = {m: serve_data.features[m][j].tolist() for m in serve_data.features}
                r = c.post("/items", json={"id": "fresh", "features": feats}, headers=admin_headers)
                assert r.status_code == 201
                hit = "fresh" in c.get("/recommend", params={"user": u}).json()["items"]
            matched += hit and kind == "match"
            unmatched += hit and kind == "far"
    assert matched >= 0.8 * len(users) and unmatched <= 0.1 * len(users), (matched, unmatched)


def test_items_unsupported_for_id_only_model(bpr_bundle, admin_headers, make_client):
    with make_client(ServingState.load(ServeSettings(bundle=bpr_bundle))) as c:
        r = c.post("/items", json={"id": "n", "features": {"image": [0.0] * 24, "text": [0.0] * 16}},
                   headers=admin_headers)
        assert r.status_code == 422
        assert r.json()["detail"] == "model 'bpr' cannot embed unseen items from their features"
        assert c.get("/health").json()["cold_start_items"] is False
        assert c.get("/recommend?user=1").status_code == 200


def test_reload_is_atomic(vbpr_state, vbpr_bundle, admin_headers, admin_token):
    settings = ServeSettings(bundle=vbpr_bundle, admin_token=admin_token)
    holder = StateHolder(settings, vbpr_state)
    from fastapi.testclient import TestClient
    c = TestClient(create_app(holder=holder), raise_server_exceptions=False)
    assert c.post("/items", json=NEW, headers=admin_headers).status_code == 201
    before = holder.current
    expected = c.get("/recommend?user=2").json()
    errors, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            r = c.get("/recommend?user=2")
            if r.status_code != 200 or r.json()["items"] != expected["items"]:
                errors.append(r.text)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(3):
        r = c.post("/reload", headers=admin_headers)
        assert r.status_code == 200 and r.json()["items"] == 121  # the registered item is re-embedded
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert holder.current is not before and before.n_items == 121  # the old state is untouched
    assert before.recommend(2, 10)[0] == holder.current.recommend(2, 10)[0]


def test_refuses_pickle_bundle(tmp_path, vbpr_bundle):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(vbpr_bundle, bad)
    (bad / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(BundleError, match="pickle"):
        create_app(ServeSettings(bundle=bad))
    out = CliRunner().invoke(cli_app, ["serve", str(bad), "--port", "0"])
    assert out.exit_code == 2 and "pickle" in out.output


def test_settings_need_a_bundle(tmp_path, monkeypatch):
    import pydantic
    monkeypatch.delenv("PRISMREC_BUNDLE", raising=False)
    with pytest.raises(pydantic.ValidationError, match="bundle"):
        ServeSettings()
    with pytest.raises(pydantic.ValidationError, match="does not exist"):
        ServeSettings(bundle=tmp_path / "missing")
    monkeypatch.setenv("PRISMREC_ADMIN_TOKEN", "from-env")
    assert ServeSettings(bundle=tmp_path).token() == "from-env"


def test_vbpr_embed_items_is_the_content_path(vbpr_state, serve_data):
    """VBPR's cold-start vector = zero ID part + the same projection its trained items use."""
    import torch
    model = vbpr_state.rec.model
    d = model.config.embedding_dim
    items = torch.arange(6)
    with torch.no_grad():
        cold = model.embed_items({m: torch.tensor(serve_data.features[m][:6]) for m in serve_data.features})
        warm = model.item_vectors(items)
    assert cold.shape == (6, 2 * d) and torch.all(cold[:, :d] == 0)
    torch.testing.assert_close(cold[:, d:], warm[:, d:])


def test_serve_command_registered():
    out = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert out.exit_code == 0 and "--admin-token" in out.output and "127.0.0.1" in out.output


@pytest.mark.slow
def test_recommend_equals_cli_on_baby_like(make_client):
    """Acceptance (issue 7): with a baby-like bundle, GET /recommend equals `prismrec recommend` (top 10).
    Uses $PRISMREC_BABY_BUNDLE or /tmp/runs/vbpr-baby (`prismrec train --data /tmp/baby-like --model vbpr
    --set epochs=5 --out /tmp/runs/vbpr-baby`)."""
    import os
    from pathlib import Path
    bundle = Path(os.environ.get("PRISMREC_BABY_BUNDLE", "/tmp/runs/vbpr-baby"))
    if not (bundle / "config.json").is_file():
        pytest.skip(f"no baby-like bundle at {bundle}")
    state = ServingState.load(ServeSettings(bundle=bundle))
    users = [str(u) for u in state.user_map.ids[np.random.default_rng(0).choice(len(state.user_map), 25)]]
    out = CliRunner().invoke(cli_app, ["recommend", str(bundle), "--json", *sum((["--user", u] for u in users), [])])
    assert out.exit_code == 0, out.output
    with make_client(state) as c:
        for u, e in zip(users, json.loads(out.output)):
            assert c.get("/recommend", params={"user": u}).json()["items"] == e["items"]
