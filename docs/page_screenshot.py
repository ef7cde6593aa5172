"""docs/page.png: i2i-serve's page after translating a sample picture, as README shows it.

    python docs/page_screenshot.py [--export exports/additive] [--out docs/page.png]

Starts `i2i-serve --export DIR` on a free port, opens its page in headless chromium (selenium,
chromium and chromedriver as the browser tests use them), picks a sample picture, moves the
strength slider, waits for the translation and saves the window. `make demo` writes the export.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.browser import chromium, until  # noqa: E402  (the browser the page's tests drive)


def wait(condition, what: str, timeout: float = 60.0):
    try:
        return until(condition, what, timeout, interval=0.1)
    except TimeoutError as err:
        raise SystemExit(f"page_screenshot: {err}") from None


def serve(export: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "i2i.runtime.cli", "--export", str(export),
                               "--port", str(port)], cwd=ROOT)
    wait(lambda: _ready(port), "start i2i-serve")
    return server


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def shoot(url: str, out: Path) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select
    driver = chromium(1100, 880, "--hide-scrollbars")
    try:
        driver.get(url)
        state = lambda: driver.execute_script("return document.body.dataset.state")  # noqa: E731
        wait(lambda: state() == "ready", "load")
        wait(lambda: driver.execute_script(
            "return document.querySelector('#sample-1 img').naturalWidth"), "load the samples")
        Select(driver.find_element("id", "zoom")).select_by_value("4")
        driver.find_element("id", "sample-1").click()
        wait(lambda: state() == "done", "translate")
        driver.find_element("id", "knob-strength").send_keys(Keys.ARROW_RIGHT * 10)
        wait(lambda: state() == "done" and "strength=1.5" in driver.execute_script(
            "return document.getElementById('panels').dataset.query"), "translate again")
        driver.execute_script("document.activeElement.blur()")
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, default=ROOT / "exports" / "additive")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "page.png")
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()
    if not (args.export / "manifest.json").exists():
        raise SystemExit(f"page_screenshot: no export at {args.export}; run `make demo` first "
                         "or pass --export DIR")
    server = serve(args.export, args.port)
    try:
        shoot(f"http://127.0.0.1:{args.port}/", args.out)
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
