"""The web inbox in a real browser: the whole system from its entry points, and Chromium.

Playwright drives Debian's Chromium (``make browser`` installs it; Playwright downloads no
browser of its own). Screenshots go to ``test-artifacts/web/`` (not committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from services.common.auth import KeyRing, UserTokenIssuer
from tests.helpers.system import ROOT, System

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "web"
PASSWORD = "correct-horse-battery"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass
class Site:
    """The running system with its web inbox, and helpers acting as a user would."""

    system: System
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.system.rest_url("web")

    def register(self, name: str) -> str:
        """Register ``name`` through UserService's REST API; their email."""
        email = f"{name}@example.com"
        reply = httpx.post(
            f"{self.system.rest_url('user')}/users",
            json={"name": name.title(), "email": email, "password": PASSWORD},
            timeout=10,
            trust_env=False,
        )
        assert reply.status_code in (201, 409), reply.text
        return email

    def context(self, viewport: ViewportSize | None = None) -> BrowserContext:
        context = self.browser.new_context(viewport=viewport or DESKTOP, base_url=self.url)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        return context

    def close_contexts(self) -> None:
        """Close what a test opened (also when it failed), ending its live streams."""
        while self.contexts:
            with contextlib.suppress(Exception):
                self.contexts.pop().close()

    def sign_in(self, context: BrowserContext, email: str) -> Page:
        """A page of ``context`` signed in as ``email`` through the sign-in form, on the inbox."""
        page = context.new_page()
        page.goto("/signin")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"/inbox$"))
        return page

    def wait_live(self, page: Page) -> None:
        """Until the page's live channel is open."""
        page.locator("body[data-live-state=open]").wait_for(state="attached", timeout=10_000)

    def live_streams(self) -> int:
        reply = httpx.get(f"{self.url}/health", timeout=5, trust_env=False)
        return int(reply.json()["live_streams"])

    def token(self, email: str, ttl_seconds: int) -> str:
        """A user token of ``email``'s current account (its id and token version, as
        UserService stores them) signed with the system's key (negative ttl: already expired)."""
        db = redis.Redis.from_url(self.system.valkey.url, db=0, decode_responses=True)
        try:
            document = json.loads(str(db.get(f"user:{email}") or "{}"))
        finally:
            db.close()
        keys = KeyRing.load(self.system.keys_dir, "user", sign_user_tokens=True)
        issuer = UserTokenIssuer(keys, ttl_seconds)
        return issuer.issue(email, str(document["id"]), int(document["token_version"]))[0]

    def restart(self, name: str) -> None:
        self.system.stop(name)
        self.system.start(name)
        _run(self.system.wait_healthy(name))


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to the end from sync code (Playwright's sync API owns this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, playwright: Playwright) -> Iterator[Site]:
    system = System.create(tmp_path_factory.mktemp("web-system"), web=True)
    try:
        system.start()
        _run(system.wait_healthy())
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield Site(system, browser)
        finally:
            browser.close()
    finally:
        system.close()


@pytest.fixture(autouse=True)
def _close_contexts(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "site" in request.fixturenames:
        site: Site = request.getfixturevalue("site")
        site.close_contexts()


def wait_until(check: object, within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(AssertionError):
            if callable(check) and check():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        time.sleep(0.05)
