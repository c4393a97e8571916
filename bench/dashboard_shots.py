"""The README's pictures of the dashboard (``make screenshots``): a server on a demo log, each
page opened in headless Chromium (as the browser tests do) and saved as a PNG.

Usage: python -m bench.dashboard_shots LOG_DIR OUT_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selenium.webdriver.common.by import By

from tests.support.browser import chromium, console, wait_for
from tests.support.served import serving

PAGES = [("overview", "/", "#cards .card"), ("tasks", "/tasks", "#tasks tbody tr"),
         ("timeline", "/timeline", "#mode"), ("hubs", "/hubs", "#fed")]


def main(log: str, out: Path) -> int:
    """Save one PNG per page (and a task's) into ``out``; 1 if a page logged an error."""
    out.mkdir(parents=True, exist_ok=True)
    with serving("--log", log) as served, chromium(1280, 900) as browser:
        browser.get(served.printed)
        shots = list(PAGES)
        browser.get(served.base + "/tasks")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#tasks tbody a"))
        task = browser.find_element(By.CSS_SELECTOR, "#tasks tbody a").get_attribute("href")
        shots.append(("task", task[len(served.base):], "#story tbody tr"))
        problems = []
        for name, path, shown in shots:
            browser.get(served.base + path)
            wait_for(lambda shown=shown: any(e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, shown)))
            time.sleep(0.5)  # the charts drawn
            browser.save_screenshot(str(out / f"dashboard-{name}.png"))
            problems += console(browser)
            print(f"{out / f'dashboard-{name}.png'}")
    for line in problems:
        print(f"console: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
