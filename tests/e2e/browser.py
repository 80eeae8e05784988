"""Headless Chromium for the web page tests: the Debian `chromium` + `chromium-driver` packages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def find_browser() -> tuple[str, str]:
    """Paths of chromium and chromedriver, or skip saying what is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p]
        pytest.skip(
            f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; "
            ".ci/run does this)",
            allow_module_level=True,
        )
    return browser, driver


def start_chromium(profile: Path, width: int = 1280, height: int = 900):
    """A Selenium driver for headless Chromium with a fresh profile folder."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
