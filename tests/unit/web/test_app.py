"""The web inbox's security rules, in process: headers, cookies, CSRF, signed-out redirects.

These paths answer before any service is called; the flows through the services run in a
real browser in tests/web/.
"""

from __future__ import annotations

import re
import time

import httpx
import jwt
import pytest

from services.common.settings import ConfigError
from services.web.app import create_asgi
from services.web.security import CONTENT_SECURITY_POLICY, Sessions, seconds_left
from services.web.settings import Settings

SECRET = "s" * 40


def _settings(**environ: str) -> Settings:
    # Nothing listens on port 9: any call to a service would fail loudly.
    base = {
        "WEB_SECRET": SECRET,
        "USER_SERVICE_URL": "http://127.0.0.1:9",
        "USER_SERVICE_ADDR": "127.0.0.1:9",
        "MESSAGE_SERVICE_ADDR": "127.0.0.1:9",
        "NOTIFICATION_SERVICE_ADDR": "127.0.0.1:9",
        "FRONTEND_SERVICE_ADDR": "127.0.0.1:9",
    }
    return Settings.from_env({**base, **environ})


def _client(base_url: str = "http://testserver", **environ: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_asgi(_settings(**environ)))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


def _token(exp_in: int, sub: str = "ada@example.com") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + exp_in}, "k" * 32, algorithm="HS256")


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, html
    return found.group(1)


async def test_pages_carry_a_strict_policy_and_a_csrf_cookie() -> None:
    async with _client() as client:
        page = await client.get("/signin")
    assert page.status_code == 200
    headers = page.headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    cookie = headers["set-cookie"]
    assert cookie.startswith("missive_csrf=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert "<script>" not in page.text and 'src="/static/app.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text, "no external asset"


async def test_cookies_are_secure_over_tls() -> None:
    async with _client("https://testserver") as client:
        page = await client.get("/signin")
    assert "Secure" in page.headers["set-cookie"]


async def test_static_assets_are_served_locally() -> None:
    async with _client() as client:
        for path in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
            reply = await client.get(path)
            assert reply.status_code == 200, path
            assert "content-security-policy" in reply.headers


@pytest.mark.parametrize("path", ["/signin", "/register", "/signout", "/send", "/c/b@x.io/read"])
async def test_a_post_without_a_valid_csrf_token_is_refused(path: str) -> None:
    async with _client() as client:
        page = await client.get("/signin")
        token = _csrf(page.text)
        client.cookies.set("missive_session", _token(600))
        altered = token[:-1] + ("1" if token.endswith("0") else "0")
        for data in ({}, {"csrf_token": "0" * 64}, {"csrf_token": altered}):
            reply = await client.post(path, data={"email": "a@b.io", **data})
            assert reply.status_code == 403, (path, data)
        cross = await client.post(
            path, data={"csrf_token": token}, headers={"origin": "http://evil.example"}
        )
        assert cross.status_code == 403
        header = await client.post(path, headers={"x-csrf-token": "0" * 64})
        assert header.status_code == 403


async def test_a_token_from_another_server_secret_is_refused() -> None:
    other = Sessions(b"x" * 40)
    async with _client() as client:
        await client.get("/signin")
        value = client.cookies["missive_csrf"]
        reply = await client.post("/signin", data={"csrf_token": other.csrf_token(value)})
    assert reply.status_code == 403


async def test_without_a_session_pages_go_to_sign_in() -> None:
    async with _client() as client:
        for path in ("/", "/inbox", "/c/bob@example.com"):
            reply = await client.get(path)
            assert reply.status_code == 303, path
            assert reply.headers["location"] == "/signin"


async def test_an_expired_session_goes_to_sign_in_with_a_reason_and_is_deleted() -> None:
    async with _client() as client:
        client.cookies.set("missive_session", _token(-5))
        reply = await client.get("/inbox")
        assert reply.status_code == 303
        assert reply.headers["location"] == "/signin?reason=expired"
        assert 'missive_session=""' in reply.headers["set-cookie"]
        page = await client.get("/signin?reason=expired")
        assert "Your session has expired. Please sign in again." in page.text
        unknown = await client.get("/signin?reason=<script>")
        assert "<script>" not in unknown.text


async def test_the_live_channel_of_a_signed_out_browser_says_so() -> None:
    async with _client() as client:
        client.cookies.set("missive_session", _token(-5))
        reply = await client.get("/events")
    assert reply.status_code == 200
    assert "event: signed-out" in reply.text


async def test_health() -> None:
    async with _client() as client:
        reply = await client.get("/health")
    assert reply.json() == {"status": "SERVING", "live_streams": 0}


def test_settings_refuse_a_short_secret_and_a_bad_url() -> None:
    with pytest.raises(ConfigError, match="WEB_SECRET"):
        Settings.from_env({"WEB_SECRET": "short"})
    with pytest.raises(ConfigError, match="USER_SERVICE_URL"):
        Settings.from_env({"USER_SERVICE_URL": "ftp://x"})
    with pytest.raises(ConfigError, match="WEB_PORT"):
        Settings.from_env({"WEB_PORT": "http"})
    generated = Settings.from_env({})
    assert generated.secret_generated and len(generated.secret) == 32
    assert generated.port == 8083


def test_seconds_left_reads_the_expiry() -> None:
    assert 590 <= (seconds_left(_token(600)) or 0) <= 600
    assert (seconds_left(_token(-5)) or 0) < 0
    assert seconds_left("not a token") is None
