"""Headless chromium for the page's browser tests and docs/page_screenshot.py: what is missing
to start it, starting it, and waiting on the page."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable


def missing() -> str | None:
    """What is missing to drive chromium (selenium, chromium, chromedriver), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'i2i[dev]')"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


def chromium(width: int, height: int, *flags: str):
    """A selenium driver of headless chromium with a window of width x height."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", *flags):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def until(condition: Callable[[], object], what: str, timeout: float, interval: float = 0.05
          ) -> object:
    """condition()'s first truthy value within `timeout` seconds; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"the page did not {what} within {timeout:g} s")
