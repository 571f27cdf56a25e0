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


# -- item metadata (titles, thumbnails): a dataset folder with an items.csv ------------------------
def tiny_png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A solid-colour RGB PNG written by hand (no imaging library needed)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def meta_data_dir(tmp_path_factory, serve_data):
    """``serve_data`` as an MMRec folder plus ``items.csv``: every item a title and a brand; even
    items a local PNG (``img/<id>.png``), items ``5j + 1`` a ``data:`` URL, the rest no image."""
    import base64

    import pandas as pd

    from prismrec.data.io import save_mmrec
    folder = save_mmrec(serve_data, tmp_path_factory.mktemp("meta") / "tiny-shop")
    (folder / "img").mkdir()
    rows = []
    for i in range(serve_data.n_items):
        row = {"item": i, "title": f"Product {i}", "brand": f"brand-{i % 3}", "image": ""}
        if i % 2 == 0:
            (folder / "img" / f"{i}.png").write_bytes(tiny_png((40 + i, 120, 200 - i)))
            row["image"] = f"img/{i}.png"
        elif i % 5 == 1:
            row["image"] = "data:image/png;base64," + base64.b64encode(tiny_png((200, 60, 60))).decode()
        rows.append(row)
    pd.DataFrame(rows).to_csv(folder / "items.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def meta_bundle(tmp_path_factory, meta_data_dir):
    """A VBPR bundle trained on ``meta_data_dir`` (its items.csv is carried into the bundle)."""
    from prismrec import load_dataset
    out = tmp_path_factory.mktemp("bundles") / "vbpr-meta"
    Recommender("vbpr", epochs=5, patience=100).fit(load_dataset(meta_data_dir), run_dir=out, show_progress=False,
                                                   data_path=str(meta_data_dir))
    return out


@pytest.fixture(scope="session")
def meta_state(meta_bundle):
    return ServingState.load(ServeSettings(bundle=meta_bundle))
