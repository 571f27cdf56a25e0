"""Serving fixtures: a small VBPR bundle (and a BPR one) trained once per session on synthetic data;
apps and clients over a fresh :class:`StateHolder` per test, so registered items never leak."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from prismrec import Recommender, make_synthetic
from prismrec.serve.app import create_app
from prismrec.serve.settings import ServeSettings
from prismrec.serve.state import ServingState, StateHolder

TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def serve_data():
    """300 users, 120 items, image 24-d + text 16-d, planted signal."""
    return make_synthetic(300, 120, 10, modalities={"image": 24, "text": 16}, seed=1, name="serve-tiny")


@pytest.fixture(scope="session")
def vbpr_bundle(tmp_path_factory, serve_data):
    """A VBPR bundle (about 5 s to train on one core)."""
    out = tmp_path_factory.mktemp("bundles") / "vbpr"
    Recommender("vbpr", epochs=20, patience=100).fit(serve_data, run_dir=out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def bpr_bundle(tmp_path_factory, serve_data):
    """A BPR bundle: an ID-only model that cannot embed unseen items."""
    out = tmp_path_factory.mktemp("bundles") / "bpr"
    Recommender("bpr", epochs=3, patience=100).fit(serve_data, run_dir=out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def vbpr_state(vbpr_bundle):
    """The loaded VBPR bundle; immutable, so every test can share it."""
    return ServingState.load(ServeSettings(bundle=vbpr_bundle))


def _make_client(state: ServingState, token: str | None = TOKEN, **settings) -> TestClient:
    s = ServeSettings(bundle=state.bundle, admin_token=token, **settings)
    return TestClient(create_app(holder=StateHolder(s, state)), raise_server_exceptions=False)


@pytest.fixture
def make_client():
    """``make_client(state, token=TOKEN, **settings)``: a TestClient over a fresh holder of ``state``
    (admin routes enabled with ``token``; ``token=None`` disables them)."""
    return _make_client


@pytest.fixture
def client(vbpr_state):
    """Client of the VBPR app with admin routes enabled."""
    with _make_client(vbpr_state) as c:
        yield c


@pytest.fixture
def admin_token():
    return TOKEN


@pytest.fixture
def admin_headers():
    return {"Authorization": f"Bearer {TOKEN}"}
