"""Fixtures for the browser tests of the page at `/`: Debian's Chromium (driven by Playwright), the
service on 127.0.0.1 with the committed models, and a visit to a URL in a fresh browser context."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browsing import CHROMIUM_FLAGS, Visit, stop
from playwright.sync_api import Browser, sync_playwright
from serving import start_service

if TYPE_CHECKING:
    from conftest import RequireTool


@pytest.fixture(scope="module")
def browser(require_tool: RequireTool) -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright, never a browser that Playwright downloads."""
    chromium = require_tool("chromium", "chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, process = start_service(models_dir, tmp_path_factory.mktemp("page") / "server.log")
    yield url
    stop(process)


@pytest.fixture
def visit(browser: Browser) -> Iterator[Callable[..., Visit]]:
    """`visit(url, **context_options)`: open `url` in a fresh browser context, recording as it loads."""
    contexts = []

    def open_page(url: str, **context_options: Any) -> Visit:
        context = browser.new_context(**{"viewport": {"width": 1200, "height": 900}, **context_options})
        context.set_default_timeout(60_000)
        contexts.append(context)
        page = context.new_page()
        visit = Visit(page)
        page.on("request", visit.record_request)
        page.on("console", visit.record_console)
        page.on("pageerror", lambda error: visit.errors.append(f"uncaught: {error}"))
        page.goto(url)
        page.wait_for_load_state("networkidle")
        return visit

    yield open_page
    for context in contexts:
        context.close()
