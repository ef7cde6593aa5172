"""The web page in a real browser: headless chromium driven by selenium against a real
i2i-serve. A picture of an odd size goes in through the file input, the strength slider moves
by keyboard, the pictures shown are compared pixel for pixel with what /v1/translate answers,
errors appear in the alert region, and the page works behind an API key.

Skipped when chromium, chromedriver or selenium is missing, unless I2I_REQUIRE_BROWSER=1
(.ci/run sets it after installing them), where a missing browser fails."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable

import numpy as np
import pytest

from .browser import chromium, missing
from .browser import until as browser_until
from .server_utils import (
    decoded,
    multipart,
    pixels,
    png_bytes,
    post,
    running,
    tiny_checkpoint,
    tiny_lomit_checkpoint,
    tiny_maskcyclegan_checkpoint,
)

KEY = "browser-key"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def browser():
    why = missing()
    if why:
        if os.environ.get("I2I_REQUIRE_BROWSER") == "1":
            pytest.fail(f"I2I_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    driver = chromium(1200, 1000)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def until(condition: Callable[[], object], what: str) -> object:
    """condition()'s first truthy value within WAIT_S; fails naming `what`."""
    return browser_until(condition, what, WAIT_S)


def page_state(driver) -> str:
    return driver.execute_script("return document.body.dataset.state")


def open_page(driver, url: str, state: str = "ready") -> None:
    driver.get(url + "/")
    until(lambda: page_state(driver) == state, f"reach state {state!r}")


def settled(driver, query_has: str = "") -> str:
    """Wait for a translation to be shown (whose query contains `query_has`); its query."""
    def shown():
        query = driver.execute_script("return document.getElementById('panels').dataset.query")
        return (page_state(driver) == "done" and query and query_has in query) and query
    return until(shown, f"show a translation with {query_has!r}")


def shown_pixels(driver, element_id: str) -> np.ndarray:
    """The pixels of an <img> the page shows (a PNG data URL)."""
    src = driver.find_element("id", element_id).get_attribute("src")
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    return decoded(base64.b64decode(src[len(prefix):]))


def natural_size(driver, element_id: str) -> tuple[int, int]:
    return tuple(driver.execute_script(
        "const i = document.getElementById(arguments[0]); return [i.naturalWidth, "
        "i.naturalHeight];", element_id))


def server_answer(url: str, files: dict[str, bytes], query: str, key: str | None = None
                  ) -> np.ndarray:
    body, headers = multipart(files)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    status, content = post(f"{url}/v1/translate?{query}", body, headers)
    assert status == 200, content
    return decoded(content)


def upload(driver, path) -> None:
    driver.find_element("id", "file").send_keys(str(path))


def test_a_photo_translates_and_the_slider_retranslates_live(browser, checkpoint, tmp_path):
    from selenium.webdriver.common.keys import Keys
    photo = png_bytes(pixels(37, 23, seed=11))
    (tmp_path / "photo.png").write_bytes(photo)
    with running(["--checkpoint", str(checkpoint), "--engine", "eager",
                  "--max-delay-ms", "1"]) as server:
        open_page(browser, server.url)
        assert not browser.find_element("id", "engine-field").is_displayed()    # one engine
        upload(browser, tmp_path / "photo.png")
        query = settled(browser)
        for shown in ("img-input", "img-mask", "img-translation"):
            assert natural_size(browser, shown) == (37, 23), shown
        first = shown_pixels(browser, "img-translation")
        assert np.array_equal(first, server_answer(server.url, {"image": photo}, query))
        assert "strength=1&" in query + "&"
        assert np.array_equal(shown_pixels(browser, "img-mask"), server_answer(
            server.url, {"image": photo}, query + "&output=mask"))
        facts = browser.find_element("id", "facts").text
        assert "eager (fp32, cpu)" in facts and "1 batch: 1 row" in facts

        slider = browser.find_element("id", "knob-strength")
        slider.send_keys(Keys.ARROW_RIGHT * 4)                  # 4 steps of 0.05
        assert slider.get_attribute("value") == "1.2"
        assert browser.find_element("id", "value-strength").text == "1.2"
        query = settled(browser, "strength=1.2&")
        moved = shown_pixels(browser, "img-translation")
        assert not np.array_equal(moved, first)
        assert np.array_equal(moved, server_answer(server.url, {"image": photo}, query))
        link = browser.find_element("id", "download-translation")
        assert link.get_attribute("download") == "translation.png"
        assert link.get_attribute("href").startswith("blob:")

        # a file that is no picture: the server's 4xx message in the alert, not a blank panel
        (tmp_path / "notes.png").write_bytes(b"these are notes, not a picture")
        upload(browser, tmp_path / "notes.png")
        until(lambda: page_state(browser) == "error", "show the error")
        status, content = post(f"{server.url}/v1/translate", b"these are notes, not a picture")
        assert status == 415
        alert = browser.find_element("css selector", "[role=alert]").text
        assert json.loads(content)["error"] in alert and "415" in alert


def test_the_page_asks_for_the_key_and_offers_the_engines(browser, checkpoint):
    from selenium.webdriver.support.select import Select
    with running(["--checkpoint", str(checkpoint), "--engine", "eager,fused", "--api-key", KEY,
                  "--max-delay-ms", "1"]) as server:
        open_page(browser, server.url, state="error")
        alert = browser.find_element("css selector", "[role=alert]").text
        assert "401" in alert and "missing or wrong API key" in alert
        key = browser.find_element("id", "key")
        assert key.is_displayed()                        # the key box opened by itself
        key.send_keys("wrong")
        browser.execute_script("document.getElementById('error').textContent = ''")
        browser.find_element("id", "key-use").click()
        until(lambda: "missing or wrong API key" in browser.find_element(
            "css selector", "[role=alert]").text, "refuse the wrong key")
        key.clear()
        key.send_keys(KEY)
        browser.find_element("id", "key-use").click()
        until(lambda: page_state(browser) == "ready", "accept the key")
        assert browser.find_element("css selector", "[role=alert]").text == ""
        until(lambda: browser.execute_script(
            "return document.querySelector('#sample-2 img').naturalWidth"), "load the samples")
        browser.find_element("id", "sample-2").click()
        query = settled(browser)
        status, sample = _get(f"{server.url}/v1/samples/2.png", KEY)
        assert status == 200
        assert "engine=eager" in query
        assert np.array_equal(shown_pixels(browser, "img-translation"),
                              server_answer(server.url, {"image": sample}, query, KEY))
        assert browser.find_element("id", "engine-field").is_displayed()   # two engines
        Select(browser.find_element("id", "engine")).select_by_value("fused")
        query = settled(browser, "engine=fused")
        assert browser.find_element("id", "fact-engine").text.startswith("fused (fp32")
        assert np.array_equal(shown_pixels(browser, "img-translation"),
                              server_answer(server.url, {"image": sample}, query, KEY))
        browser.execute_script("sessionStorage.clear()")


def _get(url: str, key: str) -> tuple[int, bytes]:
    import urllib.request
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.status, r.read()


def test_a_mask_model_offers_schemes_and_a_painted_mask(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.select import Select
    checkpoint = tiny_maskcyclegan_checkpoint(tmp_path)
    photo = png_bytes(pixels(37, 23, seed=12))
    (tmp_path / "photo.png").write_bytes(photo)
    with running(["--checkpoint", str(checkpoint), "--engine", "eager",
                  "--max-delay-ms", "1"]) as server:
        open_page(browser, server.url)
        mode = Select(browser.find_element("id", "mask-mode"))
        values = [o.get_attribute("value") for o in mode.options]
        assert values == ["scheme:center", "scheme:rects", "painted"]   # required: no "own"
        assert browser.find_elements("id", "knob-strength") == []
        mode.select_by_value("scheme:rects")
        seed = browser.find_element("id", "seed")
        seed.clear()
        seed.send_keys("3")
        upload(browser, tmp_path / "photo.png")
        query = settled(browser, "seed=3")
        assert "mask=rects" in query
        assert np.array_equal(shown_pixels(browser, "img-mask"), server_answer(
            server.url, {"image": photo}, query + "&output=mask"))
        assert np.array_equal(shown_pixels(browser, "img-translation"),
                              server_answer(server.url, {"image": photo}, query))

        mode.select_by_value("painted")
        canvas = browser.find_element("id", "paint")
        assert canvas.is_displayed()
        Select(browser.find_element("id", "zoom")).select_by_value("4")   # easier to paint
        until(lambda: page_state(browser) in ("done", "error"), "answer the empty painting")
        before = int(browser.execute_script("return document.body.dataset.ticket"))
        ActionChains(browser).move_to_element_with_offset(canvas, -40, -20).click_and_hold() \
            .move_by_offset(30, 10).release().perform()
        until(lambda: page_state(browser) == "done" and int(browser.execute_script(
            "return document.getElementById('panels').dataset.ticket")) > before,
            "translate with the painted mask")
        query = settled(browser)
        assert "mask=" not in query
        mask = shown_pixels(browser, "img-mask")
        assert mask.shape == (23, 37)
        assert mask.max() == 255 and mask.min() == 0             # painted somewhere, not all
        assert mask[:, -1].max() == 0                            # the right edge left alone
        used = png_bytes(mask.astype(np.uint8))
        assert np.array_equal(shown_pixels(browser, "img-translation"), server_answer(
            server.url, {"image": photo, "mask": used}, query))


def test_an_exemplar_model_takes_its_exemplar_as_a_picture(browser, tmp_path):
    """LOMIT: the exemplar is a file field, a sample of domain B until one is chosen; each
    translation equals the server's answer for the same photo and exemplar."""
    checkpoint = tiny_lomit_checkpoint(tmp_path)
    photo = png_bytes(pixels(37, 23, seed=13))
    exemplar = png_bytes(pixels(37, 23, seed=14))
    (tmp_path / "photo.png").write_bytes(photo)
    (tmp_path / "exemplar.png").write_bytes(exemplar)
    with running(["--checkpoint", str(checkpoint), "--engine", "eager",
                  "--max-delay-ms", "1"]) as server:
        open_page(browser, server.url)
        assert browser.find_element("id", "note-exemplar").text == "using sample B1"
        assert browser.find_elements("id", "knob-strength") == []
        upload(browser, tmp_path / "photo.png")
        query = settled(browser)
        status, sample = _get(f"{server.url}/v1/samples/0.png?domain=B", "")
        assert status == 200
        with_sample = shown_pixels(browser, "img-translation")
        assert with_sample.shape == (23, 37, 3)
        assert np.array_equal(with_sample, server_answer(
            server.url, {"image": photo, "exemplar": sample}, query))

        before = int(browser.execute_script("return document.body.dataset.ticket"))
        browser.find_element("id", "input-exemplar").send_keys(str(tmp_path / "exemplar.png"))
        until(lambda: page_state(browser) == "done" and int(browser.execute_script(
            "return document.getElementById('panels').dataset.ticket")) > before,
            "translate with the chosen exemplar")
        assert browser.find_element("id", "note-exemplar").text == "using exemplar.png"
        query = settled(browser)
        chosen = shown_pixels(browser, "img-translation")
        assert not np.array_equal(chosen, with_sample)
        assert np.array_equal(chosen, server_answer(
            server.url, {"image": photo, "exemplar": exemplar}, query))
