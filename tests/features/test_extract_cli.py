"""`prismrec extract` and `prismrec encoders`; sharded extraction under torchrun (slow)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from prismrec.cli import app

runner = CliRunner()
FALLBACK = ["--text-encoder", "hashing", "--image-encoder", "colorstats", "--audio-encoder", "logmel"]

TINY_NET = '''
import torch
from torch import nn

def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
'''


def test_extract_command(media_items, tmp_path, caplog):
    out = tmp_path / "out"
    r = runner.invoke(app, ["extract", "--items", str(media_items), "--out", str(out), "--modalities", "text,image",
                            "--quiet", *FALLBACK])
    assert r.exit_code == 0, r.output
    assert "24 items" in r.output and "failed 2 (filled: mean)" in r.output
    assert sorted(p.name for p in out.glob("*.npy")) == ["image_feat.npy", "text_feat.npy"]
    assert "image: skipped item 'b5'" in caplog.text and "missing file" in caplog.text


def test_extract_command_errors(tmp_path):
    r = runner.invoke(app, ["extract", "--items", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "error:" in r.output and "none.csv" in r.output
    bad = tmp_path / "items.csv"
    bad.write_text("item,image\na,nowhere.png\n")
    r = runner.invoke(app, ["extract", "--items", str(bad), "--out", str(tmp_path / "o"), "--quiet", *FALLBACK])
    assert r.exit_code == 1 and "NOT WRITTEN" in r.output
    r = runner.invoke(app, ["extract", "--items", str(bad), "--out", str(tmp_path / "o"), "--image-encoder", "nope"])
    assert r.exit_code == 2 and "unknown encoder 'nope'" in r.output
    r = runner.invoke(app, ["extract", "--items", str(bad), "--out", str(tmp_path / "o"), "--fill", "median"])
    assert r.exit_code == 2 and "--fill must be mean or zeros" in r.output


def test_image_weights_option(media_items, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file
    (tmp_path / "tinynet.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tinynet
    save_file(tinynet.tiny().state_dict(), str(tmp_path / "w.safetensors"))
    r = runner.invoke(app, ["extract", "--items", str(media_items), "--out", str(tmp_path / "out"), "--quiet",
                            "--modalities", "image", "--image-weights", str(tmp_path / "w.safetensors"),
                            "--image-arch", "tinynet:tiny"])
    assert r.exit_code == 0, r.output
    assert "image [torch-image, 4-d] encoded 22" in r.output
    assert np.load(tmp_path / "out" / "image_feat.npy").shape == (24, 4)
    assert torch.get_num_threads() >= 1


def test_encoders_command():
    r = runner.invoke(app, ["encoders"])
    assert r.exit_code == 0
    assert "colorstats" in r.output and "hashing" in r.output and "logmel" in r.output and "minilm" in r.output


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_two_ranks(media_items, tmp_path):
    """Two local ranks (gloo, CPU): each encodes half into the cache, rank 0 writes the outputs."""
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "prismrec", "extract", "--items",
           str(media_items), "--out", str(out), "--modalities", "image,audio", "--quiet", *FALLBACK]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "extract_report.json").read_text())
    assert report["modalities"]["image"]["n_encoded"] == 22 and report["modalities"]["image"]["n_failed"] == 2
    ref = tmp_path / "ref"
    assert runner.invoke(app, ["extract", "--items", str(media_items), "--out", str(ref), "--modalities",
                               "image,audio", "--quiet", *FALLBACK]).exit_code == 0
    for m in ("image", "audio"):
        np.testing.assert_allclose(np.load(out / f"{m}_feat.npy"), np.load(ref / f"{m}_feat.npy"), rtol=1e-6)
    assert sys.executable  # the torchrun on PATH runs this interpreter's prismrec (editable install)
