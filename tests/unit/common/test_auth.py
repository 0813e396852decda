"""User tokens and service credentials: what verifies, and each forged or stale token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.auth import (
    USER_AUDIENCE,
    USER_ISSUER,
    KeyRing,
    ServiceCredentials,
    TokenVerifier,
    UserTokenIssuer,
    ensure_keys,
    rotate_user_key,
)
from services.common.domain import Principal, Unauthenticated


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    ensure_keys(tmp_path)
    return tmp_path


def _issuer(keys_dir: Path) -> UserTokenIssuer:
    return UserTokenIssuer(KeyRing.load(keys_dir, "user", sign_user_tokens=True), ttl_seconds=900)


def _verifier(keys_dir: Path, service: str = "message") -> TokenVerifier:
    return TokenVerifier(KeyRing.load(keys_dir, service))


def _signing_key(keys_dir: Path) -> tuple[str, Ed25519PrivateKey]:
    keys = KeyRing.load(keys_dir, "user", sign_user_tokens=True)
    assert keys.user_signing is not None
    return keys.user_signing


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": USER_ISSUER,
        "aud": USER_AUDIENCE,
        "sub": "ada@example.com",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _sign(keys_dir: Path, claims: dict[str, object], **headers: object) -> str:
    kid, key = _signing_key(keys_dir)
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, **headers})


def test_a_valid_user_token_names_the_user(keys_dir: Path) -> None:
    token, expires = _issuer(keys_dir).issue("ada@example.com")
    assert _verifier(keys_dir).verify_user(token) == Principal("user", "ada@example.com")
    assert 850 < expires.timestamp() - time.time() <= 900


def test_private_key_files_are_private(keys_dir: Path) -> None:
    for key in [*keys_dir.glob("*/*.key")]:
        assert key.stat().st_mode & 0o077 == 0, key


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "attack",
    [
        "alg_none",
        "hs256_with_public_key",
        "expired",
        "missing_exp",
        "missing_sub",
        "wrong_audience",
        "wrong_issuer",
        "partial_issuer",
        "tampered_payload",
        "unknown_kid",
        "not_a_jwt",
        "crit_header",
    ],
)
def test_forged_or_stale_user_tokens_are_rejected(keys_dir: Path, attack: str) -> None:
    token = _forged_token(keys_dir, attack)
    with pytest.raises(Unauthenticated):
        _verifier(keys_dir).verify_user(token)


_BAD_CLAIMS: dict[str, Callable[[], dict[str, object]]] = {
    "expired": lambda: _claims(iat=int(time.time()) - 1000, exp=int(time.time()) - 61),
    "missing_exp": lambda: _claims(exp=None),
    "missing_sub": lambda: _claims(sub=None),
    "wrong_audience": lambda: _claims(aud="missive-service:message"),
    "wrong_issuer": lambda: _claims(iss="someone-else"),
    "partial_issuer": lambda: _claims(iss="missive"),
}
"""Attacks that are a properly signed token with the wrong claims."""


def _forged_token(keys_dir: Path, attack: str) -> str:
    kid, _ = _signing_key(keys_dir)
    if attack in _BAD_CLAIMS:
        return _sign(keys_dir, _BAD_CLAIMS[attack]())
    if attack == "alg_none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(_claims())}."
    if attack == "hs256_with_public_key":
        public = (keys_dir / "user-token" / f"{kid}.pub").read_bytes()
        header = _b64({"alg": "HS256", "typ": "JWT", "kid": kid})
        body = f"{header}.{_b64(_claims())}"
        mac = hmac.new(public, body.encode(), hashlib.sha256).digest()
        return f"{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    if attack == "tampered_payload":
        head, _, tail = _sign(keys_dir, _claims()).split(".")
        return f"{head}.{_b64(_claims(sub='eve@example.com'))}.{tail}"
    if attack == "unknown_kid":
        return _sign(keys_dir, _claims(), kid="nope")
    if attack == "not_a_jwt":
        return "definitely-not-a-token"
    assert attack == "crit_header", attack
    return _sign(keys_dir, _claims(), crit=["x-unknown"])


def test_rotation_keeps_old_tokens_valid_until_their_key_is_removed(keys_dir: Path) -> None:
    old_token, _ = _issuer(keys_dir).issue("ada@example.com")
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = rotate_user_key(keys_dir)
    new_token, _ = _issuer(keys_dir).issue("ada@example.com")
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid
    verifier = _verifier(keys_dir)
    assert verifier.verify_user(old_token).name == verifier.verify_user(new_token).name
    (keys_dir / "user-token" / f"{old_kid}.pub").unlink()
    verifier = _verifier(keys_dir)
    verifier.verify_user(new_token)
    with pytest.raises(Unauthenticated):
        verifier.verify_user(old_token)


def test_service_credentials_identify_the_calling_service(keys_dir: Path) -> None:
    token = ServiceCredentials(KeyRing.load(keys_dir, "message")).token_for("notification")
    assert _verifier(keys_dir, "notification").verify_service(token) == Principal(
        "service", "message"
    )
    # addressed to another service: not valid here
    with pytest.raises(Unauthenticated):
        _verifier(keys_dir, "frontend").verify_service(token)


def test_a_user_token_is_never_a_service_credential_and_vice_versa(keys_dir: Path) -> None:
    user_token, _ = _issuer(keys_dir).issue("message")
    with pytest.raises(Unauthenticated):
        _verifier(keys_dir, "notification").verify_service(user_token)
    service_token = ServiceCredentials(KeyRing.load(keys_dir, "message")).token_for("notification")
    with pytest.raises(Unauthenticated):
        _verifier(keys_dir, "notification").verify_user(service_token)


def test_a_service_cannot_sign_as_another_service(keys_dir: Path) -> None:
    keys = KeyRing.load(keys_dir, "user")
    forged = jwt.encode(
        {
            "iss": "missive-service:message",
            "aud": "missive-service:notification",
            "sub": "message",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        keys.own_private,
        algorithm="EdDSA",
        headers={"kid": "message"},
    )
    with pytest.raises(Unauthenticated):
        _verifier(keys_dir, "notification").verify_service(forged)


def test_public_key_files_cannot_sign(keys_dir: Path) -> None:
    kid, _ = _signing_key(keys_dir)
    public = serialization.load_pem_public_key(
        (keys_dir / "user-token" / f"{kid}.pub").read_bytes()
    )
    with pytest.raises(Exception):  # noqa: B017 - any failure: a public key cannot sign
        jwt.encode(_claims(), public, algorithm="EdDSA")  # type: ignore[arg-type]
