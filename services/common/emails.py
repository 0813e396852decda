"""Email validation and normalisation: the only way an email becomes part of a Redis key."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from services.common.domain import InvalidArgument

MAX_EMAIL_BYTES = 254
# ':' separates key parts; the rest are glob metacharacters (and braces are cluster hash tags).
_FORBIDDEN = set(':*?[]\\{}"') | {chr(c) for c in range(33)} | {chr(127)}


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
    bad = sorted(set(email) & _FORBIDDEN)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidArgument(f"{field} contains characters that are not allowed: {shown}")
    try:
        validate_email(email, check_deliverability=False, allow_quoted_local=False, strict=True)
    except EmailNotValidError as exc:
        raise InvalidArgument(f"{field} is not a valid email address: {exc}") from exc
    # The contracts promise "whitespace removed, lower-cased" and nothing more: the address is
    # validated, not rewritten (no IDNA decoding or Unicode normalisation into another key).
    return email
