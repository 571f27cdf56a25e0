"""The web page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
against uvicorn on 127.0.0.1. Skipped when Chromium, its driver or selenium is missing.

The screenshot is written to ``$PRISMREC_TEST_ARTIFACTS`` (or pytest's temporary directory).
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def live_server(vbpr_state):
    """uvicorn serving the VBPR bundle on 127.0.0.1 (ephemeral port) in a thread; explanations on."""
    import uvicorn

    from prismrec.serve.app import create_app
    from prismrec.serve.settings import ServeSettings
    from prismrec.serve.state import StateHolder

    def contributions(users, items):  # a stand-in attribution, so the page draws its bars
        return {"image": torch.full((len(users),), 0.7), "text": torch.full((len(users),), 0.3)}

    patch = pytest.MonkeyPatch()
    patch.setattr(vbpr_state.rec.model, "modality_contributions", contributions)
    app = create_app(holder=StateHolder(ServeSettings(bundle=vbpr_state.bundle), vbpr_state))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    patch.undo()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    out = Path(os.environ.get("PRISMREC_TEST_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_page_picks_user_and_shows_recommendations(live_server, browser, artifacts, vbpr_state):
    browser.get(live_server + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert "vbpr" in browser.find_element(By.ID, "model-info").text
    user = str(vbpr_state.user_map.ids[7])
    Select(browser.find_element(By.ID, "user-select")).select_by_value(user)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recommendations li")) == 10)
    shown = [li.get_attribute("data-item") for li in browser.find_elements(By.CSS_SELECTOR, "#recommendations li")]
    assert shown == [str(i) for i in vbpr_state.recommend(user, 10)[0]]
    history = browser.find_elements(By.CSS_SELECTOR, "#history li")
    assert [h.get_attribute("data-item") for h in history] == [str(i) for i in vbpr_state.history(user)]
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recommendations .bar")) == 10)  # contributions
    browser.find_element(By.CSS_SELECTOR, "#recommendations li .item").click()  # similar items on click
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#similar li")) == 10)
    assert shown[0] in browser.find_element(By.ID, "similar-to").text
    shot = artifacts / "serve_page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_page_reports_unknown_user(live_server, browser):
    browser.get(live_server + "/?user=nobody")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "unknown user 'nobody'" in browser.find_element(By.ID, "error").text


def test_docs_render_without_internet(live_server, browser):
    """Swagger UI at /docs comes from the installed package, not a CDN."""
    browser.get(live_server + "/docs")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock")) >= 9)
    assert "prismrec" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
