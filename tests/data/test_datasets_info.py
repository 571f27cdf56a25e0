"""`prismrec datasets info` on the formats the loaders detect: dtype on disk, format, item metadata."""
import numpy as np
from typer.testing import CliRunner

from prismrec.cli import app
from tests.conftest import small_mmrec
from tests.data.test_movielens import _ml
from tests.data.test_recbole import _sequential

runner = CliRunner()


def test_float16_features_are_reported(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    np.save(folder / "image_feat.npy", np.ones((5, 3), np.float16))
    r = runner.invoke(app, ["datasets", "info", str(folder)])
    assert r.exit_code == 0, r.output
    assert "image (3-d, float16 on disk → float32)" in r.output
    assert "text (2-d)" in r.output and "format       mmrec" in r.output


def test_recbole_and_movielens_are_detected(tmp_path):
    r = runner.invoke(app, ["datasets", "info", str(_sequential(tmp_path / "sci" / "raw").parent)])
    assert r.exit_code == 0, r.output
    assert "recbole (sequential, pre-split)" in r.output and "item meta    text" in r.output
    r = runner.invoke(app, ["datasets", "info", str(_ml(tmp_path / "ml"))])
    assert r.exit_code == 0, r.output
    assert "movielens" in r.output and "title, year" in r.output and "users        3" in r.output


def test_bad_input_is_one_line(tmp_path):
    folder = small_mmrec(tmp_path / "d")
    (folder / "d.inter").write_text("")
    r = runner.invoke(app, ["datasets", "info", str(folder)])
    assert r.exit_code == 2 and "empty file" in r.output and "Traceback" not in r.output
