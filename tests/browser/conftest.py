"""Browser fixtures: headless Debian Chromium driven by Playwright, the API on a real uvicorn.

The API side (a fresh migrated database per module, the server on a free loopback port, one key
per role) is tests/api's fixtures, imported here. Chromium is the system's (`/usr/bin/chromium`,
Debian's `chromium` package); `playwright install` is never used. Without Playwright, Chromium or
the dashboard's vendor assets the tests skip, unless ARBOR_REQUIRE_SERVICES is set: then they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from api.config import ApiSettings
from api.routes.dashboard import vendor_dir
from tests.api.conftest import (  # noqa: F401 (fixtures, re-exported for tests/browser)
    api_database,
    api_settings,
    base_url,
    client_for,
    keys,
    serve,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = os.environ.get("ARBOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
DESKTOP = {"width": 1920, "height": 1080}
TABLET = {"width": 820, "height": 1180}


def _missing(what: str) -> None:
    if os.environ.get("ARBOR_REQUIRE_SERVICES"):
        pytest.fail(f"{what}; ARBOR_REQUIRE_SERVICES is set, so this fails instead of skipping")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module (pages and contexts are per test).

    Module scope, not session: Playwright's sync API keeps an asyncio loop running on the main
    thread while it is open, and every later test that calls ``asyncio.run`` would fail.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    if not (vendor_dir() / "uplot" / ".version").is_file():
        _missing(
            f"the dashboard's vendor assets are missing in {vendor_dir()} (deploy/web-assets.sh)"
        )
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class PageWatch:
    """Collects a page's console errors and uncaught exceptions."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = str(message.location.get("url", ""))
        self.errors.append(f"{message.text} at {where}")


def sign_in(page: Page, base: str, key: str) -> None:
    """Sign in through the form, as a person does, and wait for the status board."""
    page.goto(f"{base}/#/signin")
    page.fill("#key", key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("body[data-board-ready]", timeout=20_000)


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def new_page(browser: Browser, viewport: dict[str, int] | None = None) -> tuple[Page, PageWatch]:
    context: Any = browser.new_context(viewport=viewport or DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page, PageWatch(page)


@contextlib.contextmanager
def serve_on(settings: ApiSettings, port: int) -> Iterator[str]:
    """The API on a given loopback `port` (a restart, as an open page sees it), with the longer
    start deadline a loaded machine needs while Chromium runs. Yields the base URL."""
    with serve(settings, port, start_timeout_s=60, stop_timeout_s=30) as url:
        yield url
