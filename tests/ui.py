"""The MLflow UI in a real browser, for the tests: skipped where no browser can run. The browser
itself (headless chromium set up for the MLflow UI: `ui_page`, `show`, `show_logged_models`) is
tools/screenshots.py's, which `make screenshots` drives the same way."""

import pytest

from tools import screenshots

BROWSER_UNAVAILABLE = screenshots.browser_unavailable()
requires_browser = pytest.mark.skipif(
    BROWSER_UNAVAILABLE is not None, reason=f"no browser for the UI: {BROWSER_UNAVAILABLE}"
)
ui_page, show, show_logged_models = screenshots.ui_page, screenshots.show, screenshots.show_logged_models
