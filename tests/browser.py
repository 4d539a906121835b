"""Render a page in Debian's headless chromium, as a user's browser would."""

import shutil
import subprocess
from pathlib import Path


def rendered_dom(page: Path, timeout: float = 120) -> str:
    """The DOM of `page` after chromium has parsed and laid it out."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is required for page tests: apt-get install chromium"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
