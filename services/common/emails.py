"""Email validation and normalisation: the only way an email becomes part of a Redis key.

An address is validated and normalised where it enters, and every later hop hands on the
canonical form, which is checked again. The rules are a pure function of the input, so the
outcome of each accepted input is remembered (a bounded LRU keyed by the exact input): an
address seen before costs a dictionary lookup instead of a full RFC 5322/IDNA parse. Refusals
are not remembered (each is checked in full), so what is accepted or refused never changes.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

import email_validator
import idna
from email_validator import EmailNotValidError, EmailSyntaxError, validate_email

from services.common.domain import InvalidArgument

MAX_EMAIL_BYTES = 254
CACHED_ADDRESSES: Final = 8192
"""Accepted inputs remembered, least recently used dropped first (a few MB at most)."""
# ':' separates key parts; the rest are glob metacharacters (and braces are cluster hash tags);
# '/' cannot travel in a URL path segment (/users/{email}) through routers and proxies.
_FORBIDDEN = set(':*?[]\\{}"/') | {chr(c) for c in range(33)} | {chr(127)}
# The characters UTS #46 reads as a label separator in a domain (as email_validator does).
_LABEL_SEPARATOR = re.compile("[.\u3002\uff0e\uff61@]")


def _library_check(email: str) -> None:
    validate_email(
        email,
        check_deliverability=False,
        globally_deliverable=False,
        allow_quoted_local=False,
        strict=True,
        # Addresses are account identifiers here and Missive never sends mail, so domains
        # reserved for special use are as valid as any other: .test is allowed per call,
        # the rest of the library's list (.local, .onion, ...) by _special_use_stand_in.
        test_environment=True,
    )


def _special_use_message() -> str:
    try:
        _library_check("a@b.invalid")
    except EmailSyntaxError as exc:
        return str(exc)
    return ""  # the library reserves nothing (any more): the stand-in is never needed


_SPECIAL_USE: Final = _special_use_message()
"""The library's refusal of a special-use domain name (found by asking it, once)."""


class _Refused(Exception):
    """Why an address is refused, worded to follow the name of the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalise_email(raw: str, field: str = "email") -> str:
    """The canonical (lower-case) form of an address, or InvalidArgument naming the field."""
    try:
        return _canonical(raw)
    except _Refused as exc:
        raise InvalidArgument(f"{field} {exc.reason}") from exc.__cause__


@functools.lru_cache(maxsize=CACHED_ADDRESSES)
def _canonical(raw: str) -> str:
    """The canonical form of ``raw`` (remembered), or _Refused (never remembered)."""
    email = raw.strip().lower()
    _check_shape(raw, email)
    try:
        _validate(email)
    except EmailNotValidError as exc:
        raise _Refused(f"is not a valid email address: {exc}") from exc
    if "." not in email.rpartition("@")[2]:
        raise _Refused("is not a valid email address: the domain has no dot")
    # The contracts promise "whitespace removed, lower-cased" and nothing more: the address is
    # validated, not rewritten (no IDNA decoding or Unicode normalisation into another key).
    return email


def _check_shape(raw: str, email: str) -> None:
    """What the contracts' email pattern refuses before the address is parsed."""
    if not email:
        raise _Refused("is required")
    try:
        size = len(email.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates from JSON \ud800 escapes
        raise _Refused("is not valid Unicode") from exc
    if size > MAX_EMAIL_BYTES:
        raise _Refused(f"is longer than {MAX_EMAIL_BYTES} bytes")
    if not (
        unicodedata.is_normalized("NFC", raw.strip()) and unicodedata.is_normalized("NFC", email)
    ):
        # Two spellings of one address (josé composed, or e + U+0301) would be two accounts;
        # rewriting one into the other would merge keys, so the sender must send NFC.
        raise _Refused(
            "is not in Unicode normalization form C (NFC): "
            "compose accented characters before sending"
        )
    bad = sorted(set(email) & _FORBIDDEN)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise _Refused(f"contains characters that are not allowed: {shown}")


def _validate(email: str) -> None:
    """email_validator's syntax rules, special-use domain names (.local, .onion, ...) allowed.

    The library refuses those names through a module-level list it documents emptying;
    instead of changing that shared list, an address it refuses only for such a name is
    checked again with that last label replaced by an ordinary one of the same length, so
    every other rule (lengths, IDNA, display names) still applies exactly."""
    try:
        _library_check(email)
    except EmailSyntaxError as exc:
        if not _SPECIAL_USE or str(exc) != _SPECIAL_USE:
            raise
        stand_in = _special_use_stand_in(email)
        if stand_in is None:
            raise
        _library_check(stand_in)


def _special_use_stand_in(email: str) -> str | None:
    """``email`` with its last domain label, when that label reads as a special-use name,
    replaced by as many plain letters; None when it is not such a label."""
    separators = list(_LABEL_SEPARATOR.finditer(email))
    if not separators:
        return None
    cut = separators[-1].end()
    end = len(email) - 1 if email.endswith(">") else len(email)  # "name <address>" form
    try:
        label = idna.uts46_remap(email[cut:end], std3_rules=False, transitional=False)
    except idna.IDNAError:
        return None
    if label not in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        return None
    return email[:cut] + "x" * len(label) + email[end:]
