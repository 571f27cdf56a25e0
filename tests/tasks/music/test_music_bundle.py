"""Music bundles are written all at once and verified on load (the protocol of prismrec.bundle)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import prismrec.bundle as bundle_mod
import prismrec.tasks.music.bundle as music_bundle
from prismrec.bundle import MANIFEST
from prismrec.errors import BundleError
from prismrec.tasks.music import fit
from prismrec.tasks.music.bundle import BUNDLE_FILES, MusicBundle, save_music_bundle, verify_music_bundle


@pytest.fixture(scope="module")
def fits(music_small):
    """Two fitted dual encoders that rank differently (another seed), to tell old from new."""
    cfg = {"epochs": 1, "hidden": "16", "embedding_dim": 8}
    return fit(music_small, "dual-encoder", {**cfg, "seed": 0}), fit(music_small, "dual-encoder", {**cfg, "seed": 1})


def _tag(path) -> str:
    """The ``metrics.json`` tag of the bundle at ``path`` ('refused' when it does not load)."""
    try:
        return MusicBundle(path).metrics["tag"]
    except BundleError:
        return "refused"


@pytest.fixture
def tagged(fits, monkeypatch):
    """``save(path, which, tag, ds)``: write fit ``which`` (0 or 1) with ``tag`` in its metrics.json."""
    def save(path, which, tag, ds):
        res = fits[which]
        base = type(res).metrics
        monkeypatch.setattr(res, "metrics", lambda: {**base(res), "tag": tag})
        return save_music_bundle(path, res, ds)
    return save


def test_bundle_has_a_manifest_of_every_file(tmp_path, tagged, music_small):
    path = tagged(tmp_path / "b", 0, "old", music_small)
    manifest = verify_music_bundle(path)
    assert set(manifest["files"]) == set(BUNDLE_FILES) and manifest["checkpoint"] is None
    assert not [p for p in path.iterdir() if p.name.startswith(".bundle.")]


def test_a_failure_while_staging_keeps_the_old_bundle_intact(tmp_path, tagged, music_small, monkeypatch):
    """The new bundle's files fail half-way (after weights and embeddings): the old one still loads,
    byte for byte, and no staging folder is left."""
    path = tagged(tmp_path / "b", 0, "old", music_small)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    real_write_json, n = music_bundle.write_json, [0]

    def failing_write_json(p, obj):
        n[0] += 1
        if n[0] == 2:  # config.json staged, videos.json not
            raise OSError(28, "No space left on device")
        return real_write_json(p, obj)

    monkeypatch.setattr(music_bundle, "write_json", failing_write_json)
    with pytest.raises(OSError, match="No space left"):
        tagged(path, 1, "new", music_small)
    monkeypatch.setattr(music_bundle, "write_json", real_write_json)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before
    assert not [p for p in path.iterdir() if p.name.startswith(".bundle.")]
    assert _tag(path) == "old"
    verify_music_bundle(path)


@pytest.mark.parametrize("fail_at", range(1, 9))
def test_a_write_that_dies_between_renames_leaves_old_new_or_refused(tmp_path, tagged, music_small, monkeypatch,
                                                                    fail_at):
    """Killed at any rename of the commit: the old bundle, the new one, or a folder MusicBundle
    refuses; never a mix that loads. The next write succeeds and cleans up."""
    path = tagged(tmp_path / "b", 0, "old", music_small)
    real, calls = os.replace, [0]

    def dying_replace(a, b):
        if Path(b).parent == path:  # one of the commit's renames (staged file -> bundle), 7 in all
            calls[0] += 1
            if calls[0] == fail_at:
                raise OSError("killed here")
        return real(a, b)

    monkeypatch.setattr(bundle_mod.os, "replace", dying_replace)
    try:
        tagged(path, 1, "new", music_small)
        died = False
    except OSError:
        died = True
    monkeypatch.setattr(bundle_mod.os, "replace", real)
    assert died == (fail_at <= len(BUNDLE_FILES) + 1)  # the manifest's rename is the last one
    state = _tag(path)
    assert state in ({"old", "refused"} if died else {"new"}), (fail_at, state)
    if state != "refused":
        verify_music_bundle(path)
    else:
        with pytest.raises(BundleError, match="incomplete bundle: no manifest.json.*prismrec music train"):
            MusicBundle(path)
    tagged(path, 1, "new", music_small)
    assert _tag(path) == "new"
    assert not [p for p in path.iterdir() if p.name.startswith(".bundle.")]


def test_load_refuses_a_changed_file_and_a_bundle_without_manifest(tmp_path, tagged, music_small):
    path = tagged(tmp_path / "b", 0, "old", music_small)
    tracks = json.loads((path / "tracks.json").read_text())
    (path / "tracks.json").write_text(json.dumps(tracks[::-1], indent=2))  # same size, other order
    with pytest.raises(BundleError, match=r"tracks.json: does not match manifest.json \(sha256 mismatch\)"):
        MusicBundle(path)
    (path / MANIFEST).unlink()  # e.g. a music bundle of a prismrec from before they had manifests
    with pytest.raises(BundleError, match="incomplete bundle: no manifest.json"):
        MusicBundle(path)


def _rewrite(path: Path, name: str, edit) -> None:
    """Change bundle file ``name`` and re-seal the manifest over it (a bundle that is consistent
    but was written wrong, e.g. by another version)."""
    f = path / name
    edit(f)
    manifest = json.loads((path / MANIFEST).read_text())
    digest, size = bundle_mod.sha256_file(f)
    manifest["files"][name] = {"sha256": digest, "bytes": size}
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("key", ["similarity", "model_config", "n_tracks"])
def test_load_names_a_missing_config_field(tmp_path, tagged, music_small, key):
    path = tagged(tmp_path / "b", 0, "old", music_small)

    def drop(f):
        cfg = json.loads(f.read_text())
        del cfg[key]
        f.write_text(json.dumps(cfg))
    _rewrite(path, "config.json", drop)
    with pytest.raises(BundleError, match=rf"config.json: field '{key}': expected .*got nothing.*prismrec music train"):
        MusicBundle(path)


@pytest.mark.parametrize("key, value", [("n_tracks", "12"), ("video_dims", [4, 4]), ("n_tracks", True)])
def test_load_names_a_config_field_of_the_wrong_type(tmp_path, tagged, music_small, key, value):
    path = tagged(tmp_path / "b", 0, "old", music_small)

    def retype(f):
        cfg = json.loads(f.read_text())
        cfg[key] = value
        f.write_text(json.dumps(cfg))
    _rewrite(path, "config.json", retype)
    with pytest.raises(BundleError, match=rf"config.json: field '{key}': expected .*got {re.escape(json.dumps(value))}"):
        MusicBundle(path)


def test_load_names_weights_that_do_not_fit_the_config(tmp_path, tagged, music_small):
    path = tagged(tmp_path / "b", 0, "old", music_small)

    def wider(f):
        cfg = json.loads(f.read_text())
        cfg["model_config"]["embedding_dim"] = 12  # the weights were trained with 8
        f.write_text(json.dumps(cfg))
    _rewrite(path, "config.json", wider)
    with pytest.raises(BundleError, match=r"weights.safetensors does not fit model 'dual-encoder'.*size mismatch"):
        MusicBundle(path)
