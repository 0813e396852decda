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
    LEEWAY_SECONDS,
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
from services.common.sessions import AccountState, Sessions


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


# Tokens signed with the right key whose claims are wrong: overrides of the valid claims.
_BAD_CLAIMS: dict[str, Callable[[int], dict[str, object]]] = {
    "expired": lambda now: {"iat": now - 1000, "exp": now - 61},
    "exp_not_an_integer": lambda now: {"exp": "soon"},
    "exp_not_finite": lambda now: {"exp": float("inf")},
    "issued_in_the_future": lambda now: {"iat": now + 3600, "exp": now + 4000},
    "missing_exp": lambda now: {"exp": None},
    "missing_sub": lambda now: {"sub": None},
    "wrong_audience": lambda now: {"aud": "missive-service:message"},
    "wrong_issuer": lambda now: {"iss": "someone-else"},
    "partial_issuer": lambda now: {"iss": "missive"},
}


def _forged(keys_dir: Path, attack: str) -> str:
    """A token that must not verify: forged, malformed or signed over the wrong claims."""
    kid, _ = _signing_key(keys_dir)
    if attack in _BAD_CLAIMS:
        return _sign(keys_dir, _claims(**_BAD_CLAIMS[attack](int(time.time()))))
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
    assert attack == "crit_header"
    return _sign(keys_dir, _claims(), crit=["x-unknown"])


@pytest.mark.parametrize(
    "attack",
    [
        *_BAD_CLAIMS,
        "alg_none",
        "hs256_with_public_key",
        "tampered_payload",
        "unknown_kid",
        "not_a_jwt",
        "crit_header",
    ],
)
def test_forged_or_stale_user_tokens_are_rejected(keys_dir: Path, attack: str) -> None:
    token = _forged(keys_dir, attack)
    verifier = _verifier(keys_dir)
    for _ in range(2):  # and refused again: a failure is not remembered
        with pytest.raises(Unauthenticated):
            verifier.verify_user(token)
    assert verifier.cached_tokens == 0


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


# The verified-token cache: a token is verified once and its claims remembered until it expires.

ACCOUNT = "0000000000000001" + "a" * 16


class Clock:
    """A wall clock the test moves (epoch seconds)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_remembered_token_yields_the_same_claims_without_verifying_again(
    keys_dir: Path,
) -> None:
    token, _ = _issuer(keys_dir).issue("ada@example.com", ACCOUNT, 3)
    verifier = _verifier(keys_dir)
    first = verifier.verify_user(token)
    assert verifier.cached_tokens == 1
    again = verifier.verify_user(token)
    assert again is first  # the remembered answer, not a second verification
    assert (again.name, again.account_id, again.token_version, again.expires_at) == (
        "ada@example.com",
        ACCOUNT,
        3,
        first.expires_at,
    )
    fresh = _verifier(keys_dir).verify_user(token)
    assert (fresh.name, fresh.account_id, fresh.token_version, fresh.expires_at) == (
        again.name,
        again.account_id,
        again.token_version,
        again.expires_at,
    )


def test_a_remembered_token_is_refused_once_it_expires(keys_dir: Path) -> None:
    clock = Clock()
    token, expires = _issuer(keys_dir).issue("ada@example.com", ACCOUNT, 1)
    remembering = TokenVerifier(KeyRing.load(keys_dir, "message"), clock=clock)
    principal = remembering.verify_user(token)
    assert principal.expires_at == expires.timestamp() + LEEWAY_SECONDS
    # the last accepted instant: the leeway a fresh verification grants, and not a second more
    clock.now = principal.expires_at - 0.001
    assert remembering.verify_user(token) is principal
    fresh = TokenVerifier(KeyRing.load(keys_dir, "message"), clock=clock, max_entries=0)
    assert fresh.verify_user(token) == principal
    clock.now = principal.expires_at
    for verifier in (remembering, fresh):
        with pytest.raises(Unauthenticated, match="expired"):
            verifier.verify_user(token)
    assert remembering.cached_tokens == 0


def test_a_remembered_token_is_refused_after_it_expires_in_real_time(keys_dir: Path) -> None:
    # The default clock: PyJWT's rule and the cache's agree on the real instant of expiry.
    until = int(time.time()) + 2  # accepted until then (exp plus the leeway), 1-2 s from now
    token = _sign(keys_dir, _claims(sub="ada@example.com", exp=until - LEEWAY_SECONDS))
    verifier = _verifier(keys_dir)
    principal = verifier.verify_user(token)
    assert verifier.verify_user(token) is principal
    time.sleep(max(0.0, until - time.time()) + 0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify_user(token)
    assert verifier.cached_tokens == 0


def test_a_remembered_token_is_refused_once_its_key_leaves_the_key_ring(keys_dir: Path) -> None:
    old_token, _ = _issuer(keys_dir).issue("ada@example.com")
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    rotate_user_key(keys_dir)
    new_token, _ = _issuer(keys_dir).issue("ada@example.com")
    verifier = _verifier(keys_dir)
    verifier.verify_user(old_token)
    verifier.verify_user(new_token)
    assert verifier.cached_tokens == 2
    del verifier.keys.user_public[old_kid]  # the rotated-out key is dropped from this ring
    with pytest.raises(Unauthenticated):
        verifier.verify_user(old_token)
    verifier.verify_user(new_token)
    # the same kid now naming another key: the remembered answer no longer holds either
    new_kid = jwt.get_unverified_header(new_token)["kid"]
    verifier.keys.user_public[new_kid] = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(Unauthenticated):
        verifier.verify_user(new_token)
    assert verifier.cached_tokens == 0


def test_a_token_signed_by_an_unknown_key_is_refused_every_time(keys_dir: Path) -> None:
    kid, _ = _signing_key(keys_dir)
    stranger = Ed25519PrivateKey.generate()
    forged = jwt.encode(_claims(), stranger, algorithm="EdDSA", headers={"kid": kid})
    unknown = jwt.encode(_claims(), stranger, algorithm="EdDSA", headers={"kid": "k-unknown"})
    verifier = _verifier(keys_dir)
    for _ in range(2):
        for token in (forged, unknown):
            with pytest.raises(Unauthenticated):
                verifier.verify_user(token)
    assert verifier.cached_tokens == 0


def test_a_failed_verification_is_never_remembered(keys_dir: Path) -> None:
    verifier = _verifier(keys_dir)
    good = _sign(keys_dir, _claims())
    head, _, tail = good.split(".")
    tampered = f"{head}.{_b64(_claims(sub='eve@example.com'))}.{tail}"
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            verifier.verify_user(tampered)
        with pytest.raises(Unauthenticated):
            verifier.verify_service(good)  # a user token is no service credential
    assert verifier.cached_tokens == 0
    assert verifier.verify_user(good).name == "ada@example.com"
    assert verifier.cached_tokens == 1
    with pytest.raises(Unauthenticated):  # remembered as a user token, still no credential
        verifier.verify_service(good)
    with pytest.raises(Unauthenticated):
        verifier.verify_user(tampered)


def test_the_cache_is_bounded_and_drops_the_least_recently_used(keys_dir: Path) -> None:
    issuer = _issuer(keys_dir)
    tokens = [issuer.issue(f"user{i}@example.com")[0] for i in range(5)]
    verifier = TokenVerifier(KeyRing.load(keys_dir, "message"), max_entries=3)
    first = [verifier.verify_user(token) for token in tokens[:3]]
    assert verifier.verify_user(tokens[0]) is first[0]  # now the most recently used
    for token in tokens[3:]:
        verifier.verify_user(token)
    assert verifier.cached_tokens == 3
    assert verifier.verify_user(tokens[0]) is first[0]  # kept
    again = verifier.verify_user(tokens[1])  # dropped: verified afresh
    assert again == first[1] and again is not first[1]
    assert verifier.cached_tokens == 3


def test_nothing_is_remembered_with_no_room(keys_dir: Path) -> None:
    token, _ = _issuer(keys_dir).issue("ada@example.com")
    verifier = TokenVerifier(KeyRing.load(keys_dir, "message"), max_entries=0)
    assert verifier.verify_user(token) == verifier.verify_user(token)
    assert verifier.cached_tokens == 0
    with pytest.raises(ValueError, match="max_entries"):
        TokenVerifier(KeyRing.load(keys_dir, "message"), max_entries=-1)


def test_service_credentials_are_reused_and_remembered_by_the_receiver(keys_dir: Path) -> None:
    credentials = ServiceCredentials(KeyRing.load(keys_dir, "message"))
    token = credentials.token_for("notification")
    assert credentials.token_for("notification") == token  # reused until near its expiry
    receiver = _verifier(keys_dir, "notification")
    principal = receiver.verify_service(token)
    assert receiver.verify_service(token) is principal
    assert receiver.cached_tokens == 1
    with pytest.raises(Unauthenticated):  # remembered by one receiver, not valid at another
        _verifier(keys_dir, "frontend").verify_service(token)


def test_an_expired_service_credential_is_refused_though_remembered(keys_dir: Path) -> None:
    clock = Clock()
    token = ServiceCredentials(KeyRing.load(keys_dir, "message")).token_for("notification")
    receiver = TokenVerifier(KeyRing.load(keys_dir, "notification"), clock=clock)
    receiver.verify_service(token)
    clock.now += ServiceCredentials.TTL_SECONDS + LEEWAY_SECONDS + 1
    with pytest.raises(Unauthenticated, match="expired"):
        receiver.verify_service(token)


async def test_a_remembered_token_is_still_checked_for_revocation(keys_dir: Path) -> None:
    class Accounts:
        """UserService's answers (a peer of the code under test)."""

        def __init__(self) -> None:
            self.state = AccountState(ACCOUNT, 1)

        async def account(self, email: str) -> AccountState | None:
            return self.state

    accounts = Accounts()
    sessions = Sessions(accounts, ttl_seconds=0)
    token, _ = _issuer(keys_dir).issue("ada@example.com", ACCOUNT, 1)
    verifier = _verifier(keys_dir)
    await sessions.check(verifier.verify_user(token))
    accounts.state = AccountState(ACCOUNT, 2)  # every earlier token revoked
    principal = verifier.verify_user(token)
    assert verifier.cached_tokens == 1
    with pytest.raises(Unauthenticated, match="revoked"):
        await sessions.check(principal)
