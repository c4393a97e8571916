"""Debian's Chromium, headless, driven through its chromium-driver by selenium (``make test``
installs both when missing; nothing is downloaded at run time)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["chromium", "console", "wait_for"]


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver session, its console kept (quit when the block ends)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, "make test installs Debian's chromium and chromium-driver; run it through `make test`"
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(flag)
    options.binary_location = browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()


def console(session: Any) -> list[str]:
    """What the page wrote to its console since the last call, warnings and errors only."""
    return [f"{e['level']}: {e['message']}" for e in session.get_log("browser") if e["level"] in ("WARNING", "SEVERE")]


def wait_for(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true; AssertionError with its last value past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(every)
