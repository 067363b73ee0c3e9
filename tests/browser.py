"""Headless Debian Chromium for the MLflow UI tests: the DOM of a page once its React app
settled, and a screenshot of it."""
from __future__ import annotations

import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--virtual-time-budget=20000", "--window-size=1600,1000"]


def browse(url: str, screenshot, profile) -> str:
    """The DOM of ``url`` once the React app settled; also saves a screenshot."""
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run `make system-deps` (apt-get install chromium)")
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                           f"--screenshot={screenshot}", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def browse_until(url: str, wanted: str, screenshot, profile, attempts: int = 3) -> str:
    """Retry while the page has not rendered ``wanted`` yet (slow first API answers)."""
    for _ in range(attempts):
        dom = browse(url, screenshot, profile)
        if wanted in dom:
            break
    return dom
