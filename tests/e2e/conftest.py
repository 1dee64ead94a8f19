"""Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium; `playwright install`
cannot download browsers here) against pytest-django's live_server.

- The Playwright fixtures are package-scoped, not session-scoped as pytest-playwright has them:
  sync Playwright keeps an asyncio loop running while it is started, so it stops once this
  folder is done instead of living on under the rest of the suite.
- live_server makes these tests transactional: each test's data is committed (the server thread
  sees it) and the tables are emptied afterwards.
- A failed test leaves a screenshot of every open page in artifacts/e2e/<test name>.png.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import (
    Browser,
    BrowserContext,
    BrowserType,
    Page,
    Playwright,
    sync_playwright,
)

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(settings.BASE_DIR) / "artifacts" / "e2e"
TIMEOUT_MS = 10_000


# ---- Playwright on Debian's Chromium ---------------------------------------------------------


@pytest.fixture(scope="package")
def browser_type_launch_args() -> dict:
    return {
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="package")
def playwright() -> Generator[Playwright, None, None]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    return getattr(playwright, browser_name)


@pytest.fixture(scope="package")
def launch_browser(browser_type_launch_args: dict, browser_type: BrowserType) -> Callable:
    def launch(**kwargs: Any) -> Browser:
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture(scope="package")
def browser(launch_browser: Callable[..., Browser]) -> Generator[Browser, None, None]:
    browser = launch_browser()
    yield browser
    browser.close()


@pytest.fixture
def browser_context_args(live_server) -> dict:
    return {"base_url": live_server.url}


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


# ---- screenshots of failures -----------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request: pytest.FixtureRequest, browser: Browser, new_context, page):
    """Depends on the page and contexts, so it runs before they close."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    pages = [p for context in browser.contexts for p in context.pages if not p.is_closed()]
    for i, open_page in enumerate(pages):
        suffix = "" if i == 0 else f"-{i + 1}"
        try:
            open_page.screenshot(path=str(ARTIFACTS / f"{name}{suffix}.png"), full_page=True)
        except Exception as exc:
            print(f"screenshot of {open_page.url} failed: {exc}")


# ---- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def log_in(live_server) -> Callable[[BrowserContext, Any], None]:
    """Log a browser context in as a user, without the login form (a real session row)."""

    def log_in(context: BrowserContext, user) -> None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url}]
        )

    return log_in


@pytest.fixture
def api_post(live_server) -> Callable[[str, str, dict], tuple[int, dict]]:
    """POST JSON to the live server's API with an API key, as a gateway would."""

    def post(path: str, secret: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(  # noqa: S310 - our own live server
            live_server.url + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())

    return post
