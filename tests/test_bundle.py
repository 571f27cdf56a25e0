"""Bundles are written all at once and checked when loaded (issue 22): a manifest with every file's
sha256 is renamed in last; loading refuses anything incomplete, changed or inconsistent, with a
``BundleError`` naming the file, and never a traceback."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np, save_file as save_np
from safetensors.torch import load_file as load_pt, save_file as save_pt
from typer.testing import CliRunner

import prismrec.bundle as bundle_mod
from prismrec import Recommender
from prismrec.bundle import MANIFEST, read_manifest, save_bundle, verify_bundle
from prismrec.cli import app as cli_app
from prismrec.errors import BundleError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitted(tiny):
    return Recommender("vbpr", epochs=2, batch_size=256).fit(tiny, show_progress=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory, fitted):
    return fitted.save(tmp_path_factory.mktemp("good") / "vbpr")


@pytest.fixture
def copy(tmp_path, good):
    out = tmp_path / "b"
    shutil.copytree(good, out)
    return out


def reseal(path: Path) -> None:
    """Rewrite the manifest over the files as they are now (a tamperer who also fixes the hashes)."""
    m = json.loads((path / MANIFEST).read_text())
    for name in m["files"]:
        data = (path / name).read_bytes()
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / MANIFEST).write_text(json.dumps(m))


def refused(path: Path, match: str, file: str | None = None) -> str:
    """Loading ``path`` is a BundleError matching ``match`` (naming ``file``); the CLI says it in one
    line, exit code 2, without a traceback."""
    with pytest.raises(BundleError, match=match) as e:
        Recommender.load(path)
    if file is not None:
        assert str(path / file) in str(e.value), str(e.value)
    r = CliRunner().invoke(cli_app, ["recommend", str(path), "--user", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "error:" in r.output, r.output
    return str(e.value)


# -- the manifest -------------------------------------------------------------------------------------
def test_manifest_lists_every_file_with_its_sha256(good, tiny, fitted):
    m = read_manifest(good)
    assert m["format"] == 1 and set(m["files"]) >= {"config.json", "weights.safetensors", "features.safetensors",
                                                    "interactions.safetensors", "users.json", "items.json",
                                                    "embeddings.safetensors", "metrics.json"}
    for name, entry in m["files"].items():
        data = (good / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    verify_bundle(good)
    loaded = Recommender.load(good)
    assert loaded.recommend(tiny.user_ids[3], k=10)[0].tolist() == fitted.recommend(tiny.user_ids[3], k=10)[0].tolist()
    assert not [p.name for p in good.iterdir() if p.name.startswith(".bundle.") or ".tmp" in p.name]


def test_run_manifest_records_the_checkpoint(tmp_path, tiny):
    run = tmp_path / "run"
    Recommender("bpr", epochs=2, batch_size=256).fit(tiny, run_dir=run, show_progress=False)
    ck = read_manifest(run)["checkpoint"]
    data = (run / "checkpoint.safetensors").read_bytes()
    assert ck == {"file": "checkpoint.safetensors", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    verify_bundle(run, checkpoint=True)
    (run / "checkpoint.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BundleError, match="checkpoint.safetensors: differs"):
        verify_bundle(run, checkpoint=True)
    Recommender.load(run)  # loading never needs the checkpoint (it changes when a run is resumed)


# -- issue 22 item 1: corruption is refused, not served -------------------------------------------------
def test_flipped_bytes_in_weights_are_refused(copy):
    w = copy / "weights.safetensors"
    data = bytearray(w.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    w.write_bytes(bytes(data))
    msg = refused(copy, "sha256 mismatch", "weights.safetensors")
    assert "re-create" in msg
    with pytest.raises(BundleError, match="weights.safetensors"):
        verify_bundle(copy)


def test_truncated_file_is_refused(copy):
    f = copy / "features.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    refused(copy, "size", "features.safetensors")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_even_with_a_matching_manifest(copy, value):
    w = load_pt(str(copy / "weights.safetensors"))
    key = next(iter(w))
    w[key] = torch.full_like(w[key], value)
    save_pt(w, str(copy / "weights.safetensors"))
    reseal(copy)
    refused(copy, f"tensor '{key}' holds NaN or infinite", "weights.safetensors")


def test_bundle_without_manifest_is_refused_with_how_to_recreate(copy):
    (copy / MANIFEST).unlink()  # what prismrec before manifests wrote, or an interrupted write
    msg = refused(copy, "incomplete bundle: no manifest.json")
    assert "--resume" in msg and str(copy) in msg


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        Recommender.load(tmp_path)
    with pytest.raises(BundleError, match="not a bundle directory"):
        Recommender.load(tmp_path / "missing")


# -- issue 22 item 3: a corpus of files that are well-sealed but wrong ------------------------------------
def _json_edit(name, fn):
    def edit(path):
        f = path / name
        f.write_text(json.dumps(fn(json.loads(f.read_text()))))
    return edit


def _tensors_edit(name, fn, load, save):
    """An edit of the safetensors file ``name``: ``load`` its tensors, ``fn`` changes them in place, ``save``."""
    def edit(path):
        t = load(str(path / name))
        fn(t)
        save(t, str(path / name))
    return edit


def _np_edit(name, fn):
    return _tensors_edit(name, fn, load_np, save_np)


def _pt_edit(name, fn):
    return _tensors_edit(name, fn, load_pt, save_pt)


def _write(name, data: bytes):
    def edit(path):
        (path / name).write_bytes(data)
    return edit


def _first_weight_resized(t):
    k = next(iter(t))
    t[k] = torch.zeros(t[k].shape[0] + 1, *t[k].shape[1:])


CORPUS = {  # case -> (edit, message, file named)
    "config is a list": (_json_edit("config.json", lambda c: [c]), "expected a JSON object", "config.json"),
    "config model is a number": (_json_edit("config.json", lambda c: {**c, "model": 3}), "field 'model'",
                                 "config.json"),
    "config unknown model": (_json_edit("config.json", lambda c: {**c, "model": "nosuch"}), "unknown model",
                             "config.json"),
    "config unknown key": (_json_edit("config.json", lambda c: {**c, "config": {"embeding_dim": 3}}),
                           "unknown config key", "config.json"),
    "config key of the wrong type": (_json_edit("config.json", lambda c: {**c, "config": {"epochs": "many"}}),
                                     "epochs: expected int", "config.json"),
    "config n_items is a string": (_json_edit("config.json", lambda c: {**c, "n_items": "120"}), "field 'n_items'",
                                   "config.json"),
    "config n_users true": (_json_edit("config.json", lambda c: {**c, "n_users": True}), "field 'n_users'",
                            "config.json"),
    "config modalities wrong": (_json_edit("config.json", lambda c: {**c, "modalities": {"image": "24"}}),
                                "field 'modalities'", "config.json"),
    "config plugins not names": (_json_edit("config.json", lambda c: {**c, "plugins": [1]}), "field 'plugins'",
                                 "config.json"),
    "users too few": (_json_edit("users.json", lambda u: u[:-1]), "expected a list of 300 user ids", "users.json"),
    "users an object": (_json_edit("users.json", lambda u: {"a": 1}), "expected a list", "users.json"),
    "users duplicate": (_json_edit("users.json", lambda u: [u[0]] + u[:-1]), "duplicate user ids", "users.json"),
    "items nested": (_json_edit("items.json", lambda i: [[x] for x in i]), "expected an int or string item id",
                     "items.json"),
    "items float": (_json_edit("items.json", lambda i: [0.5] + i[1:]), "expected an int or string item id",
                    "items.json"),
    "metrics a list": (_json_edit("metrics.json", lambda m: [m]), "expected a JSON object", "metrics.json"),
    "config not JSON": (_write("config.json", b"{not json"), "not valid JSON", "config.json"),
    "users not UTF-8": (_write("users.json", b"\xff\xfe[1]"), "not valid JSON", "users.json"),
    "interaction index out of range": (_np_edit("interactions.safetensors",
                                                lambda t: t.__setitem__("indices", t["indices"] + 10 ** 6)),
                                       "outside 0..119", "interactions.safetensors"),
    "interaction index negative": (_np_edit("interactions.safetensors",
                                            lambda t: t.__setitem__("indices", t["indices"] - 10 ** 6)),
                                   "outside 0..119", "interactions.safetensors"),
    "interactions indptr decreasing": (_np_edit("interactions.safetensors",
                                                lambda t: t.__setitem__("indptr", t["indptr"][::-1].copy())),
                                       "indptr", "interactions.safetensors"),
    "interactions indptr short": (_np_edit("interactions.safetensors",
                                           lambda t: t.__setitem__("indptr", t["indptr"][:-5].copy())),
                                  "indptr", "interactions.safetensors"),
    "interactions shape": (_np_edit("interactions.safetensors",
                                    lambda t: t.__setitem__("shape", np.array([300, 99], np.int64))),
                           "shape", "interactions.safetensors"),
    "interactions float indices": (_np_edit("interactions.safetensors",
                                            lambda t: t.__setitem__("indices", t["indices"].astype(np.float32))),
                                   "expected 1-D integers", "interactions.safetensors"),
    "interactions missing array": (_np_edit("interactions.safetensors", lambda t: t.pop("indptr")),
                                   "missing array 'indptr'", "interactions.safetensors"),
    "features wrong shape": (_np_edit("features.safetensors",
                                      lambda t: t.__setitem__("image", t["image"][:, :5].copy())),
                             r"expected float32 \[120, 24\]", "features.safetensors"),
    "features missing modality": (_np_edit("features.safetensors", lambda t: t.pop("text")),
                                  "holds modalities", "features.safetensors"),
    "features NaN": (_np_edit("features.safetensors", lambda t: t["image"].__setitem__((0, 0), np.nan)),
                     "NaN or infinite", "features.safetensors"),
    "weights resized": (_pt_edit("weights.safetensors", _first_weight_resized), "does not fit model",
                        "weights.safetensors"),
    "weights extra tensor": (_pt_edit("weights.safetensors", lambda t: t.__setitem__("zzz", torch.zeros(2))),
                             "unexpected", "weights.safetensors"),
    "weights missing tensor": (_pt_edit("weights.safetensors", lambda t: t.pop(next(iter(t)))), "missing",
                               "weights.safetensors"),
    "weights garbage": (_write("weights.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"),
                        "not a valid safetensors file", "weights.safetensors"),
    "weights header too large": (_write("weights.safetensors", b"\xff" * 64), "not a valid safetensors file",
                                 "weights.safetensors"),
    "embeddings wrong shape": (_pt_edit("embeddings.safetensors",
                                        lambda t: t.__setitem__("item", t["item"][:-1].clone())),
                               r"expected user \[300, d\] and item \[120, d\]", "embeddings.safetensors"),
    "embeddings NaN": (_pt_edit("embeddings.safetensors", lambda t: t["user"].__setitem__((0, 0), float("nan"))),
                       "NaN or infinite", "embeddings.safetensors"),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_corrupt_but_sealed_files_are_refused(copy, case):
    edit, match, file = CORPUS[case]
    edit(copy)
    reseal(copy)
    refused(copy, match, file)


MANIFEST_CORPUS = {
    "not JSON": lambda m: "{",
    "a list": lambda m: json.dumps([m]),
    "wrong format": lambda m: json.dumps({**m, "format": 99}),
    "files not an object": lambda m: json.dumps({**m, "files": []}),
    "a required file not listed": lambda m: json.dumps({**m, "files": {k: v for k, v in m["files"].items()
                                                                       if k != "weights.safetensors"}}),
    "a path outside the bundle": lambda m: json.dumps({**m, "files": {**m["files"], "../x.json": m["files"]["users.json"]}}),
    "a bad sha256": lambda m: json.dumps({**m, "files": {**m["files"], "users.json": {"sha256": "abc", "bytes": 1}}}),
    "a negative size": lambda m: json.dumps({**m, "files": {**m["files"], "users.json": {
        "sha256": m["files"]["users.json"]["sha256"], "bytes": -1}}}),
    "a listed file missing": None,
}


@pytest.mark.parametrize("case", list(MANIFEST_CORPUS))
def test_bad_manifests_are_refused(copy, case):
    m = json.loads((copy / MANIFEST).read_text())
    if MANIFEST_CORPUS[case] is None:
        (copy / "users.json").unlink()
        refused(copy, "listed in manifest.json but missing", "users.json")
        return
    (copy / MANIFEST).write_text(MANIFEST_CORPUS[case](m))
    refused(copy, "manifest", MANIFEST)


def test_pickle_files_are_refused(copy):
    (copy / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    refused(copy, "pickle")


# -- issue 22 item 2: all or nothing --------------------------------------------------------------------
def _state(path: Path) -> str:
    """'old' / 'new' (a complete, verified bundle of that version) or 'refused'."""
    try:
        rec = Recommender.load(path)
    except BundleError:
        return "refused"
    return rec.metrics["tag"]


@pytest.mark.parametrize("fail_at", range(1, 12))
def test_a_write_that_dies_between_renames_leaves_old_new_or_refused(tmp_path, fitted, tiny, monkeypatch, fail_at):
    path = tmp_path / "b"
    fitted.metrics = {"tag": "old"}
    fitted.save(path)
    real, calls = os.replace, [0]

    def dying_replace(a, b):
        calls[0] += 1
        if calls[0] == fail_at:
            raise OSError("killed here")
        return real(a, b)

    fitted.metrics = {"tag": "new"}
    monkeypatch.setattr(bundle_mod.os, "replace", dying_replace)
    try:
        fitted.save(path)
        died = False
    except OSError:
        died = True
    monkeypatch.setattr(bundle_mod.os, "replace", real)
    state = _state(path)
    assert state in ({"old", "refused"} if died else {"new"}), (fail_at, state)
    # never a mixed bundle: what loads verifies completely
    if state != "refused":
        verify_bundle(path)
    fitted.save(path)  # the next write succeeds and leaves no staging folder
    assert _state(path) == "new"
    assert not [p for p in path.iterdir() if p.name.startswith(".bundle.")]


KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {src!r})
    import torch
    torch.set_num_threads(1)
    from prismrec import Recommender, make_synthetic
    import prismrec.bundle as b
    ds = make_synthetic(300, 120, 10, modalities={{"image": 24, "text": 16}}, seed=1, name="tiny")
    rec = Recommender("bpr", epochs=1, batch_size=256).fit(ds, show_progress=False)
    rec.metrics = {{"tag": "old"}}
    rec.save({path!r})
    real, n = os.replace, [0]
    def replace(a, c):
        n[0] += 1
        if n[0] == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(a, c)
    b.os.replace = replace
    rec.metrics = {{"tag": "new"}}
    rec.save({path!r})
""")


@pytest.mark.parametrize("kill_at", [2, 5])
def test_sigkill_between_renames(tmp_path, kill_at):
    """A writer process killed (SIGKILL) in the middle of the renames: the folder is refused as
    incomplete; the next write cleans the dead writer's staging folder."""
    path = tmp_path / "b"
    code = KILLER.format(src=str(ROOT / "src"), path=str(path), kill_at=kill_at)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PRISMREC_CACHE": "off", "OMP_NUM_THREADS": "1"})
    assert p.returncode == -9, p.stderr[-2000:]
    assert [q for q in path.iterdir() if q.name.startswith(".bundle.")]  # what the kill left
    assert _state(path) == "refused"
    with pytest.raises(BundleError, match="incomplete bundle"):
        read_manifest(path)


def test_stale_staging_and_temporary_files_are_cleaned(tmp_path, fitted):
    path = tmp_path / "b"
    fitted.save(path)
    dead = 2 ** 22 + 12345  # above pid_max's default: no such process
    (path / f".bundle.{dead}.abc").mkdir()
    (path / f".bundle.{dead}.abc" / "weights.safetensors").write_bytes(b"x" * 100)
    (path / ".bundle.oldstyle").mkdir()  # written by prismrec before staging folders carried a pid
    (path / f"checkpoint.safetensors.tmp{dead}").write_bytes(b"x")
    live = path / f".bundle.{os.getppid()}.xyz"  # a writer that is still running: left alone
    live.mkdir()
    Recommender.load(path)  # leftovers are ignored by readers
    fitted.save(path)
    names = {p.name for p in path.iterdir()}
    assert live.name in names
    assert not {f".bundle.{dead}.abc", ".bundle.oldstyle", f"checkpoint.safetensors.tmp{dead}"} & names


def test_files_the_new_bundle_lacks_are_removed(tmp_path, fitted, monkeypatch):
    path = tmp_path / "b"
    fitted.save(path)
    assert (path / "embeddings.safetensors").is_file()
    # the next bundle comes from a model without embeddings (as ld4mrec is)
    monkeypatch.setattr(type(fitted.model), "is_dot_product", property(lambda self: False))
    fitted.save(path)
    monkeypatch.undo()
    assert "embeddings.safetensors" not in read_manifest(path)["files"]
    assert not (path / "embeddings.safetensors").exists()
    Recommender.load(path)


def test_hashing_a_100_mb_bundle_is_fast(tmp_path):
    """Acceptance (issue 22): verifying 100 MB of bundle files takes well under a second."""
    import time
    path = tmp_path / "big"
    path.mkdir()
    data = np.random.default_rng(0).standard_normal(25 * 2 ** 20).astype(np.float32)  # 100 MiB
    (path / "weights.safetensors").write_bytes(data.tobytes())
    m = {"format": 1, "files": {}}
    for name in ("config.json", "features.safetensors", "interactions.safetensors", "users.json", "items.json"):
        (path / name).write_bytes(b"{}")
    for name in ("config.json", "weights.safetensors", "features.safetensors", "interactions.safetensors",
                 "users.json", "items.json"):
        digest, size = bundle_mod.sha256_file(path / name)
        m["files"][name] = {"sha256": digest, "bytes": size}
    (path / MANIFEST).write_text(json.dumps(m))
    t0 = time.perf_counter()
    verify_bundle(path)
    seconds = time.perf_counter() - t0
    assert seconds < 2.0, seconds  # ~0.15 s on an idle core; generous for a loaded CI machine


def test_save_bundle_refuses_unknown_extra_files(tmp_path, fitted):
    with pytest.raises(ValueError, match="extra bundle file"):
        save_bundle(tmp_path / "b", model=fitted.model, dataset=fitted.dataset, config={"model": "vbpr"},
                    extra_json={"../evil.json": {}})


def test_non_finite_weights_are_not_written(tmp_path, fitted):
    sd = {k: v.clone() for k, v in fitted.model.state_dict().items()}
    k = next(iter(sd))
    sd[k].view(-1)[0] = float("nan")
    with pytest.raises(BundleError, match=f"tensor '{k}' holds NaN"):
        save_bundle(tmp_path / "b", model=fitted.model, dataset=fitted.dataset, config={"model": "vbpr"},
                    state_dict=sd)
    assert not (tmp_path / "b" / MANIFEST).exists()
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".bundle.")]
