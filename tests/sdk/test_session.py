"""Token state: claims read from the JWT, expiry margin, the opt-in password never shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import missive_client as mc
from missive_client._session import Session, token_claims

from tests.sdk.fakes import fake_jwt


def test_email_and_expiry_are_read_from_a_stored_token() -> None:
    token = fake_jwt("ada@example.com", 120, 1)
    session = Session()
    session.use_token(token)
    assert session.require_email() == "ada@example.com"
    assert session.token is not None
    left = session.token.expires_at - datetime.now(UTC)
    assert timedelta(seconds=100) < left <= timedelta(seconds=120)
    assert session.authorization == f"Bearer {token}"
    assert not session.can_refresh  # no password: a stored token is never renewed


def test_an_opaque_token_still_authenticates_but_has_no_email() -> None:
    session = Session()
    session.use_token("opaque")
    assert session.authorization == "Bearer opaque" and session.token is None
    assert token_claims("opaque") == {} and token_claims("a.!!!.c") == {}


def test_needs_refresh_only_with_a_kept_password_inside_the_margin() -> None:
    session = Session()
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    token = mc.Token("ada@example.com", "t", "Bearer", expiry)
    session.signed_in(token, None)
    assert not session.needs_refresh(30, now=expiry)
    session.signed_in(token, "secret password")
    assert not session.needs_refresh(30, now=expiry - timedelta(seconds=31))
    assert session.needs_refresh(30, now=expiry - timedelta(seconds=29))
    assert session.credentials == ("ada@example.com", "secret password")
    assert "secret password" not in repr(session) and "t'" not in repr(token)
    session.clear()
    assert session.authorization is None and not session.can_refresh


def test_a_client_built_with_a_token_knows_its_user() -> None:
    token = fake_jwt("bob@example.com", 60, 7)
    with mc.Client.connect(token=token) as client:
        assert client.email == "bob@example.com"
        assert client.token is not None and client.token.access_token == token
        assert token not in repr(client) and token not in repr(client.token)
