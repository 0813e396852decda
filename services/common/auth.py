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

Verifying an Ed25519 signature is the costly part of every call, and a client sends the same
token many times, so :class:`TokenVerifier` remembers each token it verified (the claims it
yields, in a bounded LRU keyed by the exact token string) until that token stops being
accepted: its ``exp`` plus the leeway every verification grants, never longer. Failures are
never remembered, a remembered token is refused as soon as the public key that verified it is
no longer in the key ring, and revocation is unaffected: it is checked after verification, on
every call, by :mod:`services.common.sessions`.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.types import Options

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
# exp is checked here, against the verifier's clock (the same rule PyJWT applies), so that the
# cache and a fresh verification agree on the instant a token expires.
_DECODE_OPTIONS: Options = {"require": _REQUIRED, "strict_aud": True, "verify_exp": False}
DEFAULT_CACHE_ENTRIES = 10_000
"""Verified tokens remembered per verifier (and as many service credentials)."""
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


@dataclass(frozen=True, slots=True)
class _Verified:
    """What verifying one token yielded, and until when that answer holds."""

    principal: Principal
    kid: str
    key: Ed25519PublicKey
    valid_until: float  # the first instant (epoch seconds) at which the token is refused


class _VerifiedTokens:
    """A bounded LRU of verified tokens, keyed by the token string (thread-safe)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> _Verified | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def put(self, token: str, entry: _Verified) -> None:
        if self._max == 0:
            return
        with self._lock:
            self._entries[token] = entry
            self._entries.move_to_end(token)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)


class TokenVerifier:
    """Checks user tokens and service credentials; any failure is Unauthenticated.

    A token that verified is remembered (up to ``max_entries`` user tokens and as many service
    credentials, least recently used dropped first) until ``clock()`` reaches its ``exp`` plus
    the leeway, and only while the key that verified it is still in the key ring; anything
    else is verified in full, and a failure is never remembered."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0 (0 remembers nothing)")
        self.keys = keys
        self._clock = clock
        self._users = _VerifiedTokens(max_entries)
        self._services = _VerifiedTokens(max_entries)

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens (users' and services') are remembered now."""
        return len(self._users) + len(self._services)

    def _decode(
        self, token: str, key: Ed25519PublicKey, issuer: str, audience: str
    ) -> tuple[dict[str, object], float]:
        """The verified claims and the instant the token stops being accepted."""
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options=_DECODE_OPTIONS,
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the access token is not valid") from exc
        valid_until = _valid_until(claims["exp"])
        if self._clock() >= valid_until:
            raise Unauthenticated("the access token has expired")
        return claims, valid_until

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

    def _remembered(
        self, cache: _VerifiedTokens, token: str, keys: dict[str, Ed25519PublicKey]
    ) -> Principal | None:
        entry = cache.get(token)
        if entry is None:
            return None
        if self._clock() < entry.valid_until and keys.get(entry.kid) is entry.key:
            return entry.principal
        cache.discard(token)  # expired, or its key was rotated out: verify (and refuse) in full
        return None

    def verify_user(self, token: str) -> Principal:
        remembered = self._remembered(self._users, token, self.keys.user_public)
        if remembered is not None:
            return remembered
        kid = self._kid(token)
        key = self.keys.user_public.get(kid)
        if key is None:
            raise Unauthenticated("the access token is not valid")
        claims, valid_until = self._decode(token, key, USER_ISSUER, USER_AUDIENCE)
        principal = _user_principal(claims, valid_until)
        self._users.put(token, _Verified(principal, kid, key, valid_until))
        return principal

    def verify_service(self, token: str) -> Principal:
        remembered = self._remembered(self._services, token, self.keys.service_public)
        if remembered is not None:
            return remembered
        name = self._kid(token)
        key = self.keys.service_public.get(name)
        if key is None:
            raise Unauthenticated("unknown service credential")
        claims, valid_until = self._decode(
            token, key, SERVICE_PREFIX + name, SERVICE_PREFIX + self.keys.own_service
        )
        if claims["sub"] != name:
            raise Unauthenticated("the service credential is not valid")
        principal = Principal("service", name)
        self._services.put(token, _Verified(principal, name, key, valid_until))
        return principal


def _valid_until(expires: object) -> float:
    """The first instant a token with this ``exp`` is refused (PyJWT's rule: an integer exp,
    expired once ``now - leeway >= exp``)."""
    if not isinstance(expires, int | float | str):  # JSON: no other value converts
        raise Unauthenticated("the access token is not valid")
    try:
        return int(expires) + LEEWAY_SECONDS
    except (ValueError, OverflowError):
        raise Unauthenticated("the access token is not valid") from None


def _user_principal(claims: dict[str, object], valid_until: float) -> Principal:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("the access token is not valid")
    account_id = claims.get(ACCOUNT_ID_CLAIM, "")
    version = claims.get(TOKEN_VERSION_CLAIM, 0)
    if not isinstance(account_id, str) or (account_id and not ACCOUNT_ID.fullmatch(account_id)):
        raise Unauthenticated("the access token is not valid")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise Unauthenticated("the access token is not valid")
    return Principal(
        "user",
        subject,
        account_id=account_id,
        token_version=version,
        expires_at=valid_until,
    )


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
