"""The session cookie, CSRF tokens and the security headers of every response.

* The access token lives only in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` when
  the request came over TLS or ``WEB_SECURE_COOKIES=1``): never in a page, a script or a URL.
* CSRF: a random value in its own ``HttpOnly`` cookie, and in every form (and in a ``<meta>``
  tag for ``fetch``) the HMAC of it under the server's secret. A state-changing request must
  carry that HMAC in the ``csrf_token`` field or the ``X-CSRF-Token`` header; another site can
  neither read the cookie nor compute the HMAC. A cross-origin ``Origin`` is refused as well
  (the referrer policy is ``same-origin``: with ``no-referrer`` browsers send ``Origin: null``).
* Every response gets a strict Content-Security-Policy (scripts, styles and images from this
  origin only: no inline script, no ``eval``), ``nosniff``, no framing, no referrer to other sites.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import UTC, datetime

import jwt
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

SESSION_COOKIE = "missive_session"
CSRF_COOKIE = "missive_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSRF_COOKIE_SECONDS = 7 * 24 * 3600

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class SecurityHeaders:
    """ASGI middleware adding the security headers (and no-store on pages) to every response.

    Pure ASGI rather than Starlette's BaseHTTPMiddleware, so the live event stream is passed
    through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in _HEADERS if name not in present]
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Sessions:
    """Reads and writes the session and CSRF cookies; signs and checks CSRF tokens."""

    def __init__(self, secret: bytes, *, force_secure: bool = False) -> None:
        self._secret = secret
        self._force_secure = force_secure

    def secure(self, request: Request) -> bool:
        """Whether cookies get the Secure flag: over TLS, or when configured."""
        return self._force_secure or request.url.scheme == "https"

    # -- the access token ---------------------------------------------------------------

    @staticmethod
    def token(request: Request) -> str | None:
        """The access token of the request's session cookie, if any."""
        value = request.cookies.get(SESSION_COOKIE, "")
        return value or None

    def sign_in(self, request: Request, response: Response, access_token: str) -> None:
        """Store the token in the session cookie (until it expires) and rotate the CSRF value."""
        lifetime = seconds_left(access_token)
        response.set_cookie(
            SESSION_COOKIE,
            access_token,
            max_age=max(lifetime, 1) if lifetime is not None else None,
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="strict",
        )
        self.new_csrf_cookie(request, response)

    def sign_out(self, request: Request, response: Response) -> None:
        """Delete the session cookie."""
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=self.secure(request), httponly=True, samesite="strict"
        )

    # -- CSRF ------------------------------------------------------------------------------

    def new_csrf_cookie(self, request: Request, response: Response) -> str:
        """Set a fresh CSRF cookie; its value."""
        value = secrets.token_urlsafe(32)
        self.set_csrf_cookie(request, response, value)
        return value

    def set_csrf_cookie(self, request: Request, response: Response, value: str) -> None:
        """Set the CSRF cookie to ``value``."""
        response.set_cookie(
            CSRF_COOKIE,
            value,
            max_age=CSRF_COOKIE_SECONDS,
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="strict",
        )

    def csrf_value(self, request: Request) -> str | None:
        """The request's CSRF cookie, if it has a plausible one."""
        value = request.cookies.get(CSRF_COOKIE, "")
        return value if 20 <= len(value) <= 100 else None

    def csrf_token(self, value: str) -> str:
        """The token forms must send back for the CSRF cookie ``value``."""
        return hmac.new(self._secret, b"csrf:" + value.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, request: Request, submitted: str | None) -> bool:
        """Whether ``submitted`` is the token of the request's CSRF cookie (same origin only)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != _origin(request):
            logger.warning(
                "refused a %s to %s from origin %r", request.method, request.url.path, origin
            )
            return False
        value = self.csrf_value(request)
        if value is None or not submitted:
            return False
        return hmac.compare_digest(self.csrf_token(value), submitted)


def _origin(request: Request) -> str:
    url = request.url
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = "" if url.port in (None, default) else f":{url.port}"
    return f"{url.scheme}://{url.hostname}{port}"


def token_claims(access_token: str) -> dict[str, object]:
    """The token's claims, read without verifying its signature (the services verify it)."""
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def seconds_left(access_token: str, now: datetime | None = None) -> int | None:
    """Whole seconds until the token expires (negative once expired); None without ``exp``."""
    expiry = token_claims(access_token).get("exp")
    if not isinstance(expiry, int | float) or isinstance(expiry, bool):
        return None
    current = (now or datetime.now(UTC)).timestamp()
    return int(expiry - current)


def token_email(access_token: str) -> str | None:
    """The signed-in user's email (the token's subject)."""
    subject = token_claims(access_token).get("sub")
    return subject if isinstance(subject, str) and subject else None
