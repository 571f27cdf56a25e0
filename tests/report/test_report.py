"""The HTML report: self-contained, its tables and plots; rendered in headless Chromium."""
import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from prismrec import Recommender
from prismrec.cli import app
from prismrec.errors import PrismrecError
from prismrec.report import build_report, load_run, modality_signals
from tests.browser import artifacts_dir, chromium, needs_chromium


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name in ("vbpr", "bpr"):
        Recommender(name, epochs=3, batch_size=512).fit(tiny, run_dir=root / name, show_progress=False)
    # a run that logs a per-modality training signal (as a rebalancing plug-in would)
    shutil.copytree(root / "vbpr", root / "vbpr-signal")
    lines = [json.loads(x) for x in (root / "vbpr-signal" / "log.jsonl").read_text().splitlines()]
    for r in lines:
        r["modality_signal"] = {"image": 0.5 + 0.1 * r["epoch"], "text": 0.5 - 0.1 * r["epoch"]}
    (root / "vbpr-signal" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    return build_report([runs / "vbpr", runs / "bpr", runs / "vbpr-signal"], out, attribution_users=100,
                        dimension_users=3)


def test_report_is_self_contained_with_tables_and_plots(report):
    doc = report.read_text()
    assert doc.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="(https?:)?//', doc), "no external resources"
    imgs = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
    alts = [a for a, _ in imgs]
    assert "training curves" in alts
    assert sum("modality attribution" in a for a in alts) == 2            # the two VBPR runs
    assert sum("feature-dimension attribution" in a for a in alts) == 2
    assert "modality_signal" in alts
    assert all(len(b) > 2000 for _, b in imgs)
    assert '<table class="metrics">' in doc and doc.count("<tr>") == 4  # header + 3 runs
    assert "reads no modality features" in doc                             # BPR: said, not crashed


def test_modality_signal_is_read_from_the_log(runs):
    assert modality_signals(load_run(runs / "vbpr")) == {}
    sig = modality_signals(load_run(runs / "vbpr-signal"))
    assert set(sig["modality_signal"]) == {"image", "text"} and len(sig["modality_signal"]["image"]) == 3


def test_partial_and_bad_run_directories(runs, tmp_path):
    partial = tmp_path / "only-metrics"
    partial.mkdir()
    shutil.copy(runs / "bpr" / "metrics.json", partial / "metrics.json")
    doc = build_report([partial], tmp_path / "r.html").read_text()
    assert "No per-epoch log" in doc and "could not be loaded" in doc
    with pytest.raises(PrismrecError, match="not a run directory"):
        build_report([tmp_path / "missing"], tmp_path / "x.html")
    with pytest.raises(PrismrecError, match="metrics.json nor log.jsonl"):
        (tmp_path / "empty").mkdir()
        build_report([tmp_path / "empty"], tmp_path / "x.html")


def test_cli(runs, tmp_path):
    out = tmp_path / "cli.html"
    res = CliRunner().invoke(app, ["report", str(runs / "bpr"), "--out", str(out), "--no-attribution"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "training curves" in out.read_text()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a run directory" in res.output


@needs_chromium
def test_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image
    with chromium(tmp_path / "profile", window="1280,1600") as driver:
        driver.get(report.resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])")
        assert len(widths) == 6
        assert all(done and natural > 100 and shown > 100 for done, natural, shown in widths), widths
        shot = artifacts_dir(tmp_path) / "report.png"
        driver.save_screenshot(str(shot))
    img = Image.open(shot).convert("L")
    hist = img.histogram()
    non_white = 1 - sum(hist[245:]) / sum(hist)
    assert img.size[0] >= 1000 and non_white > 0.05, "the screenshot is blank"
    assert sum(1 for c in img.resize((64, 64)).histogram() if c) > 20, "the screenshot has no content"


# ---- issue 23, item 4 -------------------------------------------------------------------------
def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_labels_follow_the_runs_valid_metric(tiny, tmp_path):
    Recommender("bpr", epochs=2, batch_size=512, valid_metric="ndcg@10").fit(
        tiny, run_dir=tmp_path / "ndcg", show_progress=False)
    doc = build_report([tmp_path / "ndcg"], tmp_path / "r.html", attribution=False).read_text()
    assert "valid ndcg@10" in doc and "best validation ndcg@10" in doc
    assert "recall@20</th>" not in doc.split("test recall@10")[0]  # no validation Recall@20 column


def test_report_of_a_compare_folder(tmp_path, mmrec_dir):
    from prismrec.cli import app as cli_app
    res = CliRunner().invoke(cli_app, ["compare", "--data", str(mmrec_dir), "--models", "pop,bpr", "--set",
                                       "epochs=2", "--set", "batch_size=512", "--out", str(tmp_path / "cmp"),
                                       "--quiet"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli_app, ["report", str(tmp_path / "cmp"), "--out", str(tmp_path / "c.html"),
                                       "--no-attribution"])
    assert res.exit_code == 0, res.output
    doc = (tmp_path / "c.html").read_text()
    assert doc.count("<tr>") == 3 and "cmp/pop" in doc and "cmp/bpr" in doc  # header + the 2 runs, in order
    assert doc.index("cmp/pop") < doc.index("cmp/bpr")


def test_no_empty_sections(runs, tmp_path):
    doc = build_report([runs / "bpr"], tmp_path / "r.html").read_text()
    assert "Per-modality training signal" not in doc  # no run logs one
    assert "Modality attribution" not in doc          # BPR has none; said in a note instead
    assert "reads no modality features" in doc


def test_most_popular_reference(tiny, tmp_path, mmrec_dir):
    from prismrec import load_dataset
    from prismrec.report import popularity_references
    ds = load_dataset(mmrec_dir)
    Recommender("bpr", epochs=2, batch_size=512).fit(ds, run_dir=tmp_path / "bpr", show_progress=False,
                                                     data_path=str(mmrec_dir))
    pop = Recommender("pop").fit(ds, show_progress=False)
    refs = popularity_references([load_run(tmp_path / "bpr")])
    assert refs == {"most popular": pytest.approx(pop.metrics["valid"]["recall@20"])}
    doc = build_report([tmp_path / "bpr"], tmp_path / "r.html", attribution=False).read_text()
    assert "most-popular baseline" in doc


def test_one_loss_panel_per_objective():
    from prismrec.report import plots
    run = lambda label, obj: {"label": label, "objective": obj, "epochs": [0, 1, 2], "loss": [0.7, 0.5, 0.4],  # noqa: E731
                              "valid": [0.1, 0.2, 0.25], "best_epoch": 2}
    one = plots.training_curves([run("a", "bpr"), run("b", "bpr")])              # 1 loss panel + valid
    three = plots.training_curves([run("a", "bpr"), run("b", "vbpr"), run("c", "bm3")])  # 3 + valid: 2 rows
    assert _png_size(three)[1] > 1.5 * _png_size(one)[1]


def test_epoch_ticks_are_integers():
    from prismrec.report import plots
    plt = plots._plt()
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1, 2, 3])
    plots._integer_epochs(ax)
    ticks = ax.get_xticks()
    plt.close(fig)
    assert all(float(t).is_integer() for t in ticks)
