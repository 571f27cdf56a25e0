"""`prismrec extract -q`: no progress messages, only warnings and the summary (issue 23, item 12)."""
from __future__ import annotations

import logging

from typer.testing import CliRunner

from prismrec.cli import app

FALLBACK = ["--text-encoder", "hashing", "--image-encoder", "colorstats", "--audio-encoder", "logmel"]


def _run(media_items, out, *flags, caplog):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="prismrec"):
        r = CliRunner().invoke(app, ["extract", "--items", str(media_items), "--out", str(out),
                                     "--modalities", "text,image", *flags, *FALLBACK])
    assert r.exit_code == 0, r.output
    return r, [rec for rec in caplog.records if rec.name.startswith("prismrec")]


def test_quiet_extract_keeps_warnings_and_the_summary(media_items, tmp_path, caplog):
    r, records = _run(media_items, tmp_path / "loud", caplog=caplog)
    assert any(rec.levelno == logging.INFO for rec in records)  # the progress messages -q removes
    r, records = _run(media_items, tmp_path / "quiet", "-q", caplog=caplog)
    assert not any(rec.levelno < logging.WARNING for rec in records)
    assert any(rec.levelno == logging.WARNING and "skipped item" in rec.getMessage() for rec in records)
    assert "24 items" in r.output  # the summary still prints
