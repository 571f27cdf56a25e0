"""The web page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
against uvicorn on 127.0.0.1. Skipped when Chromium, its driver or selenium is missing.

Screenshots are written to ``$PRISMREC_TEST_ARTIFACTS`` (or pytest's temporary directory).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from tests.browser import artifacts_dir, chromium, needs_chromium

pytestmark = needs_chromium
pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def _serve(state):
    """uvicorn serving ``state`` on 127.0.0.1 (ephemeral port) in a thread: yields its base URL."""
    import uvicorn

    from prismrec.serve.app import create_app
    from prismrec.serve.settings import ServeSettings
    from prismrec.serve.state import StateHolder

    app = create_app(holder=StateHolder(ServeSettings(bundle=state.bundle), state))
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


@pytest.fixture(scope="module")
def live_server(vbpr_state):
    """The VBPR bundle (no item metadata); explanations from a stand-in attribution."""
    def contributions(users, items):  # a stand-in attribution, so the page draws its bars
        return {"image": torch.full((len(users),), 0.7), "text": torch.full((len(users),), 0.3)}

    patch = pytest.MonkeyPatch()
    patch.setattr(vbpr_state.rec.model, "modality_contributions", contributions)
    yield from _serve(vbpr_state)
    patch.undo()


@pytest.fixture(scope="module")
def meta_server(meta_state):
    """A VBPR bundle with item metadata (titles, local and data-URL thumbnails), its own explanations."""
    yield from _serve(meta_state)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def artifacts(tmp_path) -> Path:
    return artifacts_dir(tmp_path)


def test_page_picks_user_and_shows_recommendations(live_server, browser, artifacts, vbpr_state):
    browser.get(live_server + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert "vbpr" in browser.find_element(By.ID, "model-info").text
    user = str(vbpr_state.user_map.ids[7])
    Select(browser.find_element(By.ID, "user-select")).select_by_value(user)
    wait.until(lambda d: d.find_element(By.ID, "recommendations").get_attribute("data-user") == user)
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


# -- issue 23 item 8 ---------------------------------------------------------------------------------
def _ready(browser, url):
    browser.get(url)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    return wait


def _titles(browser, list_id):
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, f"#{list_id} li .title")]


def _loaded_thumbnails(browser, list_id) -> int:
    return browser.execute_script(
        f"return [...document.querySelectorAll('#{list_id} img.thumb')].filter(i => i.naturalWidth > 0).length")


def test_page_before_a_user_shows_popular_items_with_titles(meta_server, browser, artifacts, meta_state):
    """Not empty until a user is typed: the most popular items, with titles and thumbnails, and a prompt."""
    from prismrec.serve.catalog import popular
    wait = _ready(browser, meta_server + "/")
    assert browser.find_element(By.ID, "recommendations").get_attribute("data-mode") == "popular"
    items = popular(meta_state, 10)[0]
    assert [li.get_attribute("data-item") for li in browser.find_elements(By.CSS_SELECTOR, "#recommendations li")] \
        == [str(i) for i in items]
    assert _titles(browser, "recommendations") == [f"Product {i}" for i in items]
    assert "Most popular" in browser.find_element(By.ID, "recommendations-title").text
    assert "/?user=ID" in browser.find_element(By.ID, "prompt").text
    with_image = sum(1 for i in items if i % 2 == 0 or i % 5 == 1)
    wait.until(lambda d: _loaded_thumbnails(d, "recommendations") == with_image)
    shot = artifacts / "serve_page_popular.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_page_user_param_shows_titles_and_score_parts(meta_server, browser, artifacts, meta_state):
    user = str(meta_state.user_map.ids[11])
    wait = _ready(browser, f"{meta_server}/?user={user}")
    rec = browser.find_element(By.ID, "recommendations")
    assert (rec.get_attribute("data-mode"), rec.get_attribute("data-user")) == ("user", user)
    items = meta_state.recommend(user, 10)[0]
    assert _titles(browser, "recommendations") == [f"Product {i}" for i in items]
    assert _titles(browser, "history") == [f"Product {i}" for i in meta_state.history(user)]
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recommendations .bar")) == 10)
    parts = [s.get_attribute("data-part") for s in browser.find_elements(By.CSS_SELECTOR, "#recommendations .bar")[0]
             .find_elements(By.TAG_NAME, "span")]
    assert parts == ["id", "image", "text"]  # the ID/behaviour part is drawn too
    assert "id (behaviour)" in browser.find_element(By.ID, "legend").text
    wait.until(lambda d: _loaded_thumbnails(d, "recommendations") > 0)
    shot = artifacts / "serve_page_user.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_page_liked_items_box(meta_server, browser, artifacts, meta_state):
    """A cold-start user: items added with "+" or typed, recommendations from POST /recommend."""
    wait = _ready(browser, meta_server + "/")
    first = browser.find_elements(By.CSS_SELECTOR, "#recommendations li")[0]
    liked = [first.get_attribute("data-item")]
    first.find_element(By.CSS_SELECTOR, "button.like").click()
    assert browser.find_element(By.ID, "liked-input").get_attribute("value") == liked[0]
    browser.find_element(By.ID, "liked-input").send_keys(", 8")
    liked.append("8")
    browser.find_element(By.ID, "liked-go").click()
    wait.until(lambda d: d.find_element(By.ID, "recommendations").get_attribute("data-mode") == "liked")
    expected = meta_state.recommend_for_items(liked, 10)[0]
    assert [li.get_attribute("data-item") for li in browser.find_elements(By.CSS_SELECTOR, "#recommendations li")] \
        == [str(i) for i in expected]
    assert _titles(browser, "history") == [f"Product {i}" for i in liked]
    assert _titles(browser, "recommendations") == [f"Product {i}" for i in expected]
    browser.save_screenshot(str(artifacts / "serve_page_liked.png"))


def test_page_random_user(meta_server, browser, meta_state):
    wait = _ready(browser, meta_server + "/")
    browser.find_element(By.ID, "random-user").click()
    wait.until(lambda d: d.find_element(By.ID, "recommendations").get_attribute("data-mode") == "user")
    user = browser.find_element(By.ID, "recommendations").get_attribute("data-user")
    assert user in meta_state.user_map and browser.find_element(By.ID, "user-input").get_attribute("value") == user
    assert f"?user={user}" in browser.current_url


def test_page_unknown_user_falls_back_to_popular(meta_server, browser, meta_state):
    _ready(browser, meta_server + "/?user=nobody")
    assert "unknown user 'nobody'" in browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "recommendations").get_attribute("data-mode") == "popular"
