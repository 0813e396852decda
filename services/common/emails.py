"""Email validation and normalisation: the only way an email becomes part of a Redis key."""

from __future__ import annotations

import unicodedata

import email_validator
from email_validator import EmailNotValidError, validate_email

from services.common.domain import InvalidArgument

# Addresses are account identifiers here and Missive never sends mail, so domains reserved for
# special use (.test, .local, .onion, ...) are as valid as any other; the library documents
# emptying this list as the way to accept them. What stays rejected is written in the
# contracts' email pattern: surrounding whitespace only, no ':', '/' or glob characters, a dot in
# the domain (checked here, as the library's "globally deliverable" rules go further: its
# top-level domain must end with a letter).
email_validator.SPECIAL_USE_DOMAIN_NAMES.clear()

MAX_EMAIL_BYTES = 254
# ':' separates key parts; the rest are glob metacharacters (and braces are cluster hash tags);
# '/' cannot travel in a URL path segment (/users/{email}) through routers and proxies.
_FORBIDDEN = set(':*?[]\\{}"/') | {chr(c) for c in range(33)} | {chr(127)}


def normalise_email(raw: str, field: str = "email") -> str:
    """The canonical (lower-case) form of an address, or InvalidArgument naming the field."""
    email = raw.strip().lower()
    if not email:
        raise InvalidArgument(f"{field} is required")
    try:
        size = len(email.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates from JSON \ud800 escapes
        raise InvalidArgument(f"{field} is not valid Unicode") from exc
    if size > MAX_EMAIL_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_EMAIL_BYTES} bytes")
    if not (
        unicodedata.is_normalized("NFC", raw.strip()) and unicodedata.is_normalized("NFC", email)
    ):
        # Two spellings of one address (josé composed, or e + U+0301) would be two accounts;
        # rewriting one into the other would merge keys, so the sender must send NFC.
        raise InvalidArgument(
            f"{field} is not in Unicode normalization form C (NFC): "
            "compose accented characters before sending"
        )
    bad = sorted(set(email) & _FORBIDDEN)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidArgument(f"{field} contains characters that are not allowed: {shown}")
    try:
        validate_email(
            email,
            check_deliverability=False,
            globally_deliverable=False,
            allow_quoted_local=False,
            strict=True,
        )
    except EmailNotValidError as exc:
        raise InvalidArgument(f"{field} is not a valid email address: {exc}") from exc
    if "." not in email.rpartition("@")[2]:
        raise InvalidArgument(f"{field} is not a valid email address: the domain has no dot")
    # The contracts promise "whitespace removed, lower-cased" and nothing more: the address is
    # validated, not rewritten (no IDNA decoding or Unicode normalisation into another key).
    return email
