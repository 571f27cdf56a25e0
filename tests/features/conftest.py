"""Fixtures of the feature-extraction tests: a small items table of generated media (see mediagen.py)."""
from __future__ import annotations

import pytest

from tests.features.mediagen import make_media, write_table


@pytest.fixture
def media_items(tmp_path):
    """``items.csv`` of 24 items with images, titles and audio; item b5's image is missing,
    b6's image is not an image, b7 has no text."""
    rows = make_media(tmp_path, [f"b{k}" for k in range(24)])
    rows[5]["image"] = "media/nowhere.png"
    (tmp_path / "media" / "broken.png").write_bytes(b"not an image at all")
    rows[6]["image"] = "media/broken.png"
    rows[7]["title"] = rows[7]["description"] = ""
    return write_table(tmp_path / "items.csv", rows)
