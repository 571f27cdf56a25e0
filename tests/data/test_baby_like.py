"""baby-like: the packaged generator writes the reference generator's files, with Baby's statistics."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from prismrec.cli import app
from prismrec.data import load_dataset
from prismrec.data.baby_like import BabyLikeShape, write_baby_like
from prismrec.errors import PrismrecError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REFERENCE = SHARED / "make_baby_like.py"
SMALL = BabyLikeShape(users=400, items=160, interactions=4000, seed=7, image_dim=64, text_dim=32)

# sha256 of the seed-0 files, from the reference data description (shared/data/README.md)
REFERENCE_SHA256 = {
    "baby-like.inter": "60de93443295cef5464554e4e1c03ea2c7ffacc2a197200100484baf17185cc2",
    "image_feat.npy": "7f42d0a5c733fd248620f4bc2454db3ad2ee8c747b60ed4da11ca4062d583752",
    "text_feat.npy": "8629620f896ca1270f54f58527251ac9496aa068aeae40989f65bca74934ef1e",
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference(out: Path, s: BabyLikeShape, env=None) -> None:
    subprocess.run([sys.executable, str(REFERENCE), "--out", str(out), "--users", str(s.users), "--items",
                    str(s.items), "--interactions", str(s.interactions), "--seed", str(s.seed),
                    "--img-dim", str(s.image_dim), "--txt-dim", str(s.text_dim)],
                   check=True, capture_output=True, env=env)


@pytest.mark.skipif(not REFERENCE.is_file(), reason="the reference generator ../shared/data/make_baby_like.py "
                                                    "is not beside this clone")
@pytest.mark.parametrize("shape", [SMALL, BabyLikeShape(users=250, items=400, interactions=1500, seed=0,
                                                        image_dim=40, text_dim=24)])
def test_same_bytes_as_the_reference_generator(tmp_path, shape):
    _reference(tmp_path / "ref" / "set", shape)
    write_baby_like(tmp_path / "ours" / "set", shape)
    for name in ("set.inter", "image_feat.npy", "text_feat.npy"):
        assert _sha(tmp_path / "ours" / "set" / name) == _sha(tmp_path / "ref" / "set" / name), name


def test_statistics_split_and_features(tmp_path):
    info = write_baby_like(tmp_path / "bl", SMALL)
    assert (info["users"], info["items"], info["interactions"]) == (400, 160, 4000)
    ds = load_dataset(tmp_path / "bl")
    full = ds.train + ds.valid + ds.test
    assert full.nnz == 4000 and full.max() == 1                 # distinct pairs, nothing dropped
    assert (np.diff(full.indptr) >= 5).all()                     # at least 5 per user
    assert (np.asarray(full.sum(0)).ravel() > 0).all()           # every item used
    assert (np.diff(ds.test.indptr) >= 1).all() and ds.valid.nnz == info["valid"]
    rows = np.loadtxt(tmp_path / "bl" / "bl.inter", skiprows=1, dtype=np.int64)
    for u in (0, 17, 399):                                        # chronological per user: train, valid, test
        r = rows[rows[:, 0] == u]
        assert (np.diff(r[:, 3]) >= 0).all() and (np.diff(r[:, 4]) >= 0).all()
    img, txt = ds.features["image"], ds.features["text"]
    assert img.shape == (160, 64) and (img >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)


def test_seeded(tmp_path):
    write_baby_like(tmp_path / "a" / "x", SMALL)
    write_baby_like(tmp_path / "b" / "x", SMALL)
    write_baby_like(tmp_path / "c" / "x", BabyLikeShape(**{**SMALL.__dict__, "seed": 8}))
    a, b, c = (_sha(tmp_path / d / "x" / "x.inter") for d in "abc")
    assert a == b != c


@pytest.mark.parametrize("kw, match", [({"interactions": 100}, "at least users"),
                                       ({"interactions": 10**6}, "at most"),
                                       ({"items": 6}, "at most|items must be")])
def test_impossible_shapes_are_clear_errors(tmp_path, kw, match):
    with pytest.raises(PrismrecError, match=match):
        write_baby_like(tmp_path / "x", BabyLikeShape(**{**SMALL.__dict__, **kw}))
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path):
    r = CliRunner().invoke(app, ["datasets", "synth", "--like", "baby", "--out", str(tmp_path / "b"), "--users",
                                 "300", "--items", "120", "--interactions", "2000", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b" / "b.inter").is_file() and '"interactions": 2000' in r.output
    assert load_dataset(tmp_path / "b").features["image"].shape == (120, 4096)
    r = CliRunner().invoke(app, ["datasets", "synth", "--like", "sports", "--out", str(tmp_path / "s")])
    assert r.exit_code != 0 and "expected 'baby'" in r.output
    r = CliRunner().invoke(app, ["datasets", "synth", "--out", str(tmp_path / "s"), "--interactions", "9"])
    assert r.exit_code != 0 and "--like baby" in r.output


@pytest.mark.slow
def test_full_size_matches_published_sha256(tmp_path):
    """The interactions match everywhere. The feature files are products ``z @ W`` whose last bits depend on
    the BLAS kernel: the published sha256 values were made with OpenBLAS's Haswell kernel (AMD and AVX2
    machines), so the features are checked under that kernel (OpenBLAS picks SkylakeX on AVX-512)."""
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}
    code = "from prismrec.data.baby_like import write_baby_like; import sys; write_baby_like(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "baby-like")], check=True, env=env)
    for name, sha in REFERENCE_SHA256.items():
        assert _sha(tmp_path / "baby-like" / name) == sha, name
