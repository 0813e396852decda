"""Signed access tokens: user tokens minted by UserService and service credentials.

Both are EdDSA (Ed25519) JWTs. Keys live in one directory (KEYS_DIR):

    user-token/<kid>.key   private, UserService only; the newest kid signs
    user-token/<kid>.pub   public, every service verifies user tokens with these
    service/<name>.key     private, only that service holds it
    service/<name>.pub     public, every service verifies service tokens with these

A user token (iss missive-user-service, aud missive, sub = email, aid = account id, tv = token
version) can never pass as a service
credential: service tokens are checked only against service keys, with the issuer and audience
naming services. Rotating user keys: add a new kid (it signs from then on), keep the old .pub
until the longest-lived token it signed has expired, then delete it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.domain import Principal, Unauthenticated
from services.common.errors import ConfigError

ALGORITHM = "EdDSA"
USER_ISSUER = "missive-user-service"
USER_AUDIENCE = "missive"
SERVICE_PREFIX = "missive-service:"
SERVICES = ("user", "message", "notification", "frontend")
# Credentials that are not a service: `admin` signs the operators' calls (missive admin ...).
OPERATORS = ("admin",)
LEEWAY_SECONDS = 30
_REQUIRED = ["exp", "iat", "iss", "aud", "sub"]
ACCOUNT_ID_CLAIM = "aid"
TOKEN_VERSION_CLAIM = "tv"
ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
"""An account id: 16 hex digits of a never-decreasing sequence, then 16 random hex digits.

Ids of later accounts sort after earlier ones (as strings), and an id is never reused."""


def _private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def _public(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def _write_pair(directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / f"{name}.key"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    (directory / f"{name}.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def ensure_keys(keys_dir: Path) -> None:
    """Create any missing key pair (first start of a local system); never overwrites."""
    if not list((keys_dir / "user-token").glob("*.key")):
        _write_pair(keys_dir / "user-token", new_kid())
    for service in (*SERVICES, *OPERATORS):
        if not (keys_dir / "service" / f"{service}.key").exists():
            _write_pair(keys_dir / "service", service)


def new_kid() -> str:
    return datetime.now(UTC).strftime("k%Y%m%dT%H%M%S%f")


def rotate_user_key(keys_dir: Path) -> str:
    """Add a new user-token signing key; returns its kid. Old public keys stay valid."""
    kid = new_kid()
    _write_pair(keys_dir / "user-token", kid)
    return kid


@dataclass(frozen=True)
class KeyRing:
    """The keys one service may use, loaded from KEYS_DIR."""

    user_public: dict[str, Ed25519PublicKey]
    service_public: dict[str, Ed25519PublicKey]
    own_service: str
    own_private: Ed25519PrivateKey = field(repr=False)
    user_signing: tuple[str, Ed25519PrivateKey] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, keys_dir: Path, service: str, *, sign_user_tokens: bool = False) -> KeyRing:
        try:
            user_public = {
                p.stem: _public(p) for p in sorted((keys_dir / "user-token").glob("*.pub"))
            }
            service_public = {
                p.stem: _public(p) for p in sorted((keys_dir / "service").glob("*.pub"))
            }
            own_private = _private(keys_dir / "service" / f"{service}.key")
            signing = None
            if sign_user_tokens:
                private_keys = sorted((keys_dir / "user-token").glob("*.key"))
                if not private_keys:
                    raise ConfigError(f"no user-token signing key in {keys_dir / 'user-token'}")
                signing = (private_keys[-1].stem, _private(private_keys[-1]))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load keys from KEYS_DIR={keys_dir}: {exc}") from exc
        if not user_public:
            raise ConfigError(f"no user-token public key in KEYS_DIR={keys_dir}")
        return cls(user_public, service_public, service, own_private, signing)


class TokenVerifier:
    """Checks user tokens and service credentials; any failure is Unauthenticated."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def _decode(
        self, token: str, key: Ed25519PublicKey, issuer: str, audience: str
    ) -> dict[str, object]:
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": _REQUIRED, "strict_aud": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the access token is not valid") from exc
        return claims

    @staticmethod
    def _kid(token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the access token is not valid") from exc
        kid = header.get("kid")
        if not isinstance(kid, str) or header.get("alg") != ALGORITHM:
            raise Unauthenticated("the access token is not valid")
        return kid

    def verify_user(self, token: str) -> Principal:
        key = self.keys.user_public.get(self._kid(token))
        if key is None:
            raise Unauthenticated("the access token is not valid")
        claims = self._decode(token, key, USER_ISSUER, USER_AUDIENCE)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the access token is not valid")
        account_id = claims.get(ACCOUNT_ID_CLAIM, "")
        version = claims.get(TOKEN_VERSION_CLAIM, 0)
        if not isinstance(account_id, str) or (account_id and not ACCOUNT_ID.fullmatch(account_id)):
            raise Unauthenticated("the access token is not valid")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise Unauthenticated("the access token is not valid")
        expires = claims["exp"]
        return Principal(
            "user",
            subject,
            account_id=account_id,
            token_version=version,
            expires_at=float(expires) + LEEWAY_SECONDS if isinstance(expires, int | float) else 0.0,
        )

    def verify_service(self, token: str) -> Principal:
        name = self._kid(token)
        key = self.keys.service_public.get(name)
        if key is None:
            raise Unauthenticated("unknown service credential")
        claims = self._decode(
            token, key, SERVICE_PREFIX + name, SERVICE_PREFIX + self.keys.own_service
        )
        if claims["sub"] != name:
            raise Unauthenticated("the service credential is not valid")
        return Principal("service", name)


class UserTokenIssuer:
    """Mints short-lived user access tokens (UserService only)."""

    def __init__(self, keys: KeyRing, ttl_seconds: int) -> None:
        if keys.user_signing is None:
            raise ConfigError("this key ring cannot sign user tokens")
        self.kid, self._key = keys.user_signing
        self.ttl = ttl_seconds

    def issue(
        self, email: str, account_id: str = "", token_version: int = 0, *, now: int | None = None
    ) -> tuple[str, datetime]:
        """A token for ``email``; ``account_id`` and ``token_version`` become its aid and tv
        claims (services that check revocation refuse a token without them)."""
        issued = int(time.time()) if now is None else now
        expires = issued + self.ttl
        claims: dict[str, object] = {
            "iss": USER_ISSUER,
            "aud": USER_AUDIENCE,
            "sub": email,
            "iat": issued,
            "exp": expires,
        }
        if account_id:
            claims[ACCOUNT_ID_CLAIM] = account_id
            claims[TOKEN_VERSION_CLAIM] = token_version
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return token, datetime.fromtimestamp(expires, UTC)


class ServiceCredentials:
    """This service's own credential for calling a peer; tokens are cached until near expiry."""

    TTL_SECONDS = 300

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._cache: dict[str, tuple[str, float]] = {}

    def token_for(self, target: str) -> str:
        cached = self._cache.get(target)
        now = time.time()
        if cached and cached[1] - now > 60:
            return cached[0]
        me = self._keys.own_service
        token = jwt.encode(
            {
                "iss": SERVICE_PREFIX + me,
                "aud": SERVICE_PREFIX + target,
                "sub": me,
                "iat": int(now),
                "exp": int(now) + self.TTL_SECONDS,
            },
            self._keys.own_private,
            algorithm=ALGORITHM,
            headers={"kid": me},
        )
        self._cache[target] = (token, now + self.TTL_SECONDS)
        return token
