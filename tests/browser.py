"""Headless Chromium for the tests that render a page: Debian's ``chromium`` and ``chromium-driver``, driven
through selenium. The tests that use it are skipped where any of the three is missing."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")


@contextmanager
def chromium(profile: Path, window: str = "1280,900"):
    """A headless Chromium driver with its profile in the folder ``profile`` and a window of ``window``
    ("width,height") pixels, pages given 30 s to load; it quits when the block ends, raised or not."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-dev-shm-usage", f"--window-size={window}", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def artifacts_dir(default: Path) -> Path:
    """The folder for screenshots: ``$PRISMREC_TEST_ARTIFACTS``, else ``default`` (created either way)."""
    out = Path(os.environ.get("PRISMREC_TEST_ARTIFACTS", default))
    out.mkdir(parents=True, exist_ok=True)
    return out
