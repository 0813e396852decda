"""Email normalisation: the remembered answers and the special-use domains, against the
library's full validation."""

from __future__ import annotations

import unicodedata

import email_validator
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.common import emails
from services.common.domain import InvalidArgument
from services.common.emails import MAX_EMAIL_BYTES, normalise_email

_FORBIDDEN = set(':*?[]\\{}"/') | {chr(c) for c in range(33)} | {chr(127)}


def _reference(raw: str, field: str = "email") -> str:
    """The full validation, as written before answers were remembered: the library with its
    special-use list emptied (here only, for the duration of the call)."""
    email = raw.strip().lower()
    if not email:
        raise InvalidArgument(f"{field} is required")
    try:
        size = len(email.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{field} is not valid Unicode") from exc
    if size > MAX_EMAIL_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_EMAIL_BYTES} bytes")
    if not (
        unicodedata.is_normalized("NFC", raw.strip()) and unicodedata.is_normalized("NFC", email)
    ):
        raise InvalidArgument(
            f"{field} is not in Unicode normalization form C (NFC): "
            "compose accented characters before sending"
        )
    bad = sorted(set(email) & _FORBIDDEN)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidArgument(f"{field} contains characters that are not allowed: {shown}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", [])
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
    return email


def _outcome(check: object, raw: str) -> tuple[str, str]:
    assert callable(check)
    try:
        return "accepted", check(raw, "receiver_email")
    except InvalidArgument as exc:
        return "refused", exc.message


LONG_LABEL = "d" * 63
CORPUS = [
    # accepted today
    "ada@example.com",
    "  Ada@Example.COM ",
    "ada@machine.local",
    "bob@example.test",
    "cy@0.0",
    "jos\u00e9@example.com",
    "ada+tag@sub.example.co.uk",
    "a@b\u00fccher.de",
    "a@xn--bcher-kva.de",
    "用户@例子.广告",
    "a@b.onion",
    "a@b.arpa",
    "a@b.invalid",
    "a@b.localhost",
    "a@b.c.local",
    "a@xn--bcher-kva.local",
    "a@b\u00fccher.onion",
    "a@b.\uff4c\uff4f\uff43\uff41\uff4c",  # fullwidth letters: UTS #46 reads them as "local"
    "a@b\uff0elocal",  # fullwidth full stop
    "a@b\u3002onion",  # ideographic full stop
    "a@b\uff61arpa",  # halfwidth ideographic full stop
    "a@b.lo\u00adcal",  # a soft hyphen, which UTS #46 drops
    "a@b.xlocal",
    "a@b.localx",
    "a@local.com",
    # refused today
    "",
    "   ",
    "no-at-sign",
    "a:b@example.com",
    "*@example.com",
    "?lice@example.com",
    "[a]@example.com",
    "a\\b@example.com",
    "{a}@example.com",
    "a/b@example.com",
    '"a b"@example.com',
    "a@localhost",
    "a@local",
    "a@onion",
    "a@test",
    "a@\uff4c\uff4f\uff43\uff41\uff4c",
    "x" * 65 + "@example.com",
    "a@" + "b" * 250 + ".com",
    "a\n@example.com",
    "a@-b.local",
    "a@b-.local",
    "a@b..local",
    "a@.local",
    "a@b.local.",
    "a@ab--c.local",
    "a@xn--invalid.local",
    "a@xn--.local",
    "x<a@b.local>",
    "x<a@b.com>",
    "<a@b.local>",
    "a@b.⒈local",
    "a@b.local\u200d",
    "a@" + LONG_LABEL + "x.local",
    "a@b.e\u0301xample.com",
    "\u212bngstrom@example.com",
    "a@\ud800.com",
    "a.@b.local",
    ".a@b.local",
    "a..b@b.local",
    "a@[127.0.0.1]",
    "a@b.com@c.local",
]
# Lengths around each limit, with a special-use last label (the label is replaced to check the
# other rules, so the replacement must keep every length).
for _total in range(250, 257):
    _domain = ".".join([LONG_LABEL, LONG_LABEL, LONG_LABEL])
    _local = "l" * max(1, _total - len(_domain) - len("@.local"))
    CORPUS.append(f"{_local}@{_domain}.local")
for _size in range(248, 256):
    _labels = [LONG_LABEL, LONG_LABEL, LONG_LABEL, "e" * (_size - 3 * 64 - len("local"))]
    CORPUS.append("a@" + ".".join([*_labels, "local"]))
    CORPUS.append("a@" + ".".join([*_labels[:-1], "\u00e9" * len(_labels[-1]), "local"]))

# Internationalised labels grow when IDNA-encoded: around the address, domain and label limits.
for _run in range(50, 60):
    for _tld in ("local", "onion", "com"):
        CORPUS.append("a@" + ".".join([*["a" * _run + "\u00fc"] * 4, _tld]))


@pytest.mark.parametrize("raw", CORPUS)
def test_every_answer_is_the_full_validations(raw: str) -> None:
    expected = _outcome(_reference, raw)
    emails._canonical.cache_clear()
    first = _outcome(normalise_email, raw)
    remembered = _outcome(normalise_email, raw)
    assert first == remembered == expected


def test_the_corpus_holds_both_answers() -> None:
    outcomes = {_outcome(_reference, raw)[0] for raw in CORPUS}
    assert outcomes == {"accepted", "refused"}
    assert _outcome(normalise_email, "a@b.\uff4c\uff4f\uff43\uff41\uff4c")[0] == "accepted"
    assert _outcome(normalise_email, "a@" + LONG_LABEL + "x.local")[0] == "refused"


_FRAGMENTS = st.sampled_from(
    [
        *'abcxyz019.-_+@ ABC\t<>":',
        *["\u00e9", "e\u0301", "\uff4c", "\uff0e", "\u3002", "\u00ad", "\u200d", "\u00df"],
        *["\u2488", "\u05d0", "xn--", "local", "ab--"],
    ]
)
_TAILS = st.sampled_from(
    [
        "",
        ".local",
        ".onion",
        ".arpa",
        ".localhost",
        ".invalid",
        ".test",
        ".com",
        ".\uff4c\uff4f\uff43\uff41\uff4c",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=30).map("".join), _TAILS)
@example("a@b", ".local")
def test_generated_addresses_get_the_full_validations_answer(body: str, tail: str) -> None:
    raw = body + tail
    expected = _outcome(_reference, raw)
    assert _outcome(normalise_email, raw) == expected
    assert _outcome(normalise_email, raw) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_gets_the_full_validations_answer(raw: str) -> None:
    assert _outcome(normalise_email, raw) == _outcome(_reference, raw)


def test_accepted_addresses_are_remembered_and_refusals_are_not() -> None:
    address = "remembered-once@example.com"
    normalise_email(address)
    before = emails._canonical.cache_info()
    assert normalise_email(address) == address
    after = emails._canonical.cache_info()
    assert after.hits == before.hits + 1
    assert after.currsize == before.currsize
    for _ in range(2):
        with pytest.raises(InvalidArgument, match=r"^sender_email is not a valid email address"):
            normalise_email("refused@localhost", "sender_email")
    with pytest.raises(InvalidArgument, match=r"^receiver_email is not a valid email address"):
        normalise_email("refused@localhost", "receiver_email")
    assert emails._canonical.cache_info().currsize == after.currsize
    assert emails._canonical.cache_info().maxsize == emails.CACHED_ADDRESSES


def test_the_librarys_special_use_list_is_left_as_it_is() -> None:
    normalise_email("ada@machine.local")
    normalise_email("bob@example.test")
    assert {"arpa", "invalid", "local", "localhost", "onion", "test"} <= set(
        email_validator.SPECIAL_USE_DOMAIN_NAMES
    )
    with pytest.raises(EmailNotValidError, match="special-use"):
        validate_email("ada@machine.local", check_deliverability=False)
