"""HTTP conformance and bundle checks before serving (issue 22 items 3 and 6)."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.numpy import load_file as load_np, save_file as save_np
from safetensors.torch import load_file as load_pt, save_file as save_pt
from typer.testing import CliRunner

from prismrec.cli import app as cli_app
from prismrec.errors import BundleError
from prismrec.serve.app import create_app
from prismrec.serve.settings import ServeSettings

NEW = {"id": "n1", "features": {"image": [0.1] * 24, "text": [0.2] * 16}}


# -- strict request models ----------------------------------------------------------------------------
@pytest.mark.parametrize("body", [{"items": [1], "k": "5"}, {"items": [True]}, {"items": [1], "k": True},
                                  {"items": [1.5]}, {"items": [None]}, {"items": [1], "k": 5.5}])
def test_cold_start_is_strict(client, body):
    r = client.post("/recommend", json=body)
    assert r.status_code == 422, r.json()


def test_cold_start_accepts_json_integers(client):
    """5.0 is an integer in JSON Schema (what the OpenAPI schema promises): accepted as 5."""
    a = client.post("/recommend", json={"items": [1, 2], "k": 5.0})
    b = client.post("/recommend", json={"items": [1.0, 2], "k": 5})
    assert a.status_code == b.status_code == 200 and a.json() == b.json() and len(a.json()["items"]) == 5


@pytest.mark.parametrize("body", [{"id": True, "features": NEW["features"]},
                                  {"id": "x", "features": {"image": ["0.1"] * 24, "text": [0.2] * 16}},
                                  {"id": "x", "features": {"image": [True] * 24, "text": [0.2] * 16}},
                                  {"id": "x", "features": {}}])
def test_new_item_is_strict(client, admin_headers, body):
    r = client.post("/items", json=body, headers=admin_headers)
    assert r.status_code == 422, r.json()
    assert client.get("/health").json()["registered_items"] == 0


def test_features_schema_names_every_modality(client, vbpr_state):
    schema = client.get("/openapi.json").json()
    feats = schema["components"]["schemas"]["NewItem"]["properties"]["features"]
    assert feats["required"] == ["image", "text"] and feats["additionalProperties"] is False
    image = feats["properties"]["image"]
    assert image["minItems"] == image["maxItems"] == 24
    assert image["items"]["maximum"] == vbpr_state.feature_limits["image"] > 0
    assert client.post("/items", json=NEW, headers={"Authorization": "Bearer test-admin-token"}).status_code == 201


# -- methods, bodies, paths ------------------------------------------------------------------------------
def test_options_lists_every_method(client):
    r = client.options("/recommend")
    assert r.status_code == 204
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST", "OPTIONS"}  # FastAPI routes take no HEAD
    assert "OPTIONS" in client.options("/health").headers["allow"]
    assert client.options("/nowhere").status_code == 404


def test_unsupported_method_is_405_with_the_full_allow(client):
    r = client.put("/recommend", json={})
    assert r.status_code == 405 and {"GET", "POST"} <= set(r.headers["allow"].split(", "))
    assert r.json() == {"detail": "Method Not Allowed"}
    r = client.delete("/similar")
    assert r.status_code == 405 and "GET" in r.headers["allow"]


def test_invalid_utf8_body_is_a_documented_422(client, admin_headers):
    for path, headers in (("/recommend", {}), ("/items", admin_headers)):
        r = client.post(path, content=b'{"items": ["\xff\xfe"]}',
                        headers={**headers, "content-type": "application/json"})
        assert r.status_code == 422 and "UTF-8" in r.json()["detail"], r.text
    assert "422" in client.get("/openapi.json").json()["paths"]["/recommend"]["post"]["responses"]


def test_malformed_json_is_422(client):
    r = client.post("/recommend", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_no_filesystem_path_is_shown(client, vbpr_bundle, admin_headers):
    assert client.get("/health").json()["bundle"] == "vbpr"
    schema = client.get("/openapi.json").text
    assert str(vbpr_bundle) not in schema and str(vbpr_bundle.parent) not in schema
    r = client.post("/reload", headers=admin_headers)
    assert r.status_code == 200 and r.json()["bundle"] == "vbpr"


# -- serve checks the bundle completely before it listens ------------------------------------------------
def _reseal(path):
    m = json.loads((path / "manifest.json").read_text())
    for name in m["files"]:
        data = (path / name).read_bytes()
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / "manifest.json").write_text(json.dumps(m))


def _nan_weights(path):
    w = load_pt(str(path / "weights.safetensors"))
    k = next(iter(w))
    w[k] = torch.full_like(w[k], float("nan"))
    save_pt(w, str(path / "weights.safetensors"))
    _reseal(path)


def _bad_index(path):
    t = load_np(str(path / "interactions.safetensors"))
    t["indices"][0] = 10 ** 6
    save_np(t, str(path / "interactions.safetensors"))
    _reseal(path)


def _flip(path):
    f = path / "weights.safetensors"
    data = bytearray(f.read_bytes())
    data[-16:] = bytes(b ^ 0xFF for b in data[-16:])
    f.write_bytes(bytes(data))


def _huge_weights(path):
    """Finite weights whose scores overflow to inf: only scoring shows it (the self-check)."""
    w = load_pt(str(path / "weights.safetensors"))
    for k in w:
        if w[k].is_floating_point():
            w[k] = torch.full_like(w[k], 3e38)
    save_pt(w, str(path / "weights.safetensors"))
    _reseal(path)


@pytest.mark.parametrize("tamper,match", [(_nan_weights, "NaN or infinite"), (_bad_index, "outside 0..119"),
                                          (_flip, "sha256 mismatch"), (_huge_weights, "non-finite")])
def test_serve_refuses_a_bad_bundle_before_listening(tmp_path, vbpr_bundle, tamper, match):
    bad = tmp_path / "bad"
    shutil.copytree(vbpr_bundle, bad)
    tamper(bad)
    with pytest.raises(BundleError, match=match):
        create_app(ServeSettings(bundle=bad))
    out = CliRunner().invoke(cli_app, ["serve", str(bad), "--port", "0"])
    assert out.exit_code == 2 and "Traceback" not in out.output and "error:" in out.output, out.output


def test_a_value_at_the_limit_is_kept_across_reload(vbpr_state, vbpr_bundle, make_client, admin_headers):
    """Found by the fuzzing: a value equal to the schema's maximum was accepted, stored as float32
    (rounded above the limit) and dropped on reload; the limit is a float32 number now."""
    limit = vbpr_state.feature_limits["image"]
    body = {"id": "edge", "features": {"image": [limit] * 24, "text": [-vbpr_state.feature_limits["text"]] * 16}}
    with make_client(vbpr_state) as c:
        assert c.post("/items", json=body, headers=admin_headers).status_code == 201
        r = c.post("/reload", headers=admin_headers)
        assert r.status_code == 200 and r.json()["items"] == 121
