"""Debian's Chromium for the browser tests (the `browser` fixture is in conftest.py)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
HAVE_CHROMIUM = Path(CHROMIUM).exists()
