"""Headless Chromium for the web page tests: the Debian `chromium` + `chromium-driver` packages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.requirements import require_or_skip

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
    """Paths of chromium and chromedriver, or skip (fail under FCN_REQUIRE_ALL) saying what is
    missing. ``FCN_CHROMIUM`` / ``FCN_CHROMEDRIVER`` name other binaries than the ones on PATH."""
    browser = shutil.which(os.environ.get("FCN_CHROMIUM") or "chromium") or (
        None if os.environ.get("FCN_CHROMIUM") else shutil.which("chromium-browser")
    )
    driver = shutil.which(os.environ.get("FCN_CHROMEDRIVER") or "chromedriver")
    if not browser or not driver:
        missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p]
        require_or_skip(
            f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; "
            ".ci/run does this)",
            module=True,
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
