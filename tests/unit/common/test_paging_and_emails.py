"""Page tokens and email normalisation: the input that becomes part of Redis keys and queries."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.domain import InvalidArgument
from services.common.emails import normalise_email
from services.common.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_OFFSET,
    Page,
    encode_offset,
    parse_page,
)


def test_page_defaults_and_bounds() -> None:
    assert parse_page(0, "") == Page(0, DEFAULT_PAGE_SIZE)
    assert parse_page(None, None) == Page(0, DEFAULT_PAGE_SIZE)
    assert parse_page(100, encode_offset(7)) == Page(7, 100)
    for bad in (-1, 101):
        with pytest.raises(InvalidArgument, match="page_size"):
            parse_page(bad, "")


@given(st.integers(min_value=0, max_value=10**12))
def test_page_tokens_round_trip(offset: int) -> None:
    assert parse_page(10, encode_offset(offset)).offset == offset


@given(st.text(max_size=600))
def test_arbitrary_page_tokens_are_rejected_cleanly_or_parsed(token: str) -> None:
    try:
        page = parse_page(10, token)
    except InvalidArgument as exc:
        assert "page_token" in str(exc)
    else:
        assert page.offset >= 0


def test_next_token_is_empty_on_the_last_page() -> None:
    page = Page(0, 10)
    assert page.next_token(10, total=25) == encode_offset(10)
    assert page.next_token(5) == ""
    assert Page(20, 10).next_token(5, total=25) == ""


def test_emails_are_normalised_case_insensitively() -> None:
    assert normalise_email("  Ada@Example.COM ") == "ada@example.com"


def test_special_use_domains_are_valid_identifiers() -> None:
    assert normalise_email("ada@machine.local") == "ada@machine.local"
    assert normalise_email("bob@example.test") == "bob@example.test"
    assert normalise_email("cy@0.0") == "cy@0.0"


@pytest.mark.parametrize(
    "raw",
    [
        "",
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
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        "a\n@example.com",
    ],
)
def test_unsafe_or_invalid_emails_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        normalise_email(raw)


@given(st.text(max_size=300))
def test_accepted_emails_are_safe_as_key_parts(raw: str) -> None:
    try:
        email = normalise_email(raw)
    except InvalidArgument:
        return
    assert email == email.lower()
    assert not set(email) & set(":/*?[]\\{} \t\r\n")
    assert len(email.encode()) <= 254


@pytest.mark.parametrize("offset", [MAX_OFFSET + 1, 2**63, 2**64, 10**100])
def test_page_tokens_beyond_the_largest_position_are_malformed(offset: int) -> None:
    # Redis answered "value is not an integer or out of range" (a 500) for o1:2**63.
    with pytest.raises(InvalidArgument, match="page_token is malformed"):
        parse_page(10, encode_offset(offset))
    assert parse_page(10, encode_offset(MAX_OFFSET)).offset == MAX_OFFSET


def test_addresses_not_in_nfc_are_rejected_not_rewritten() -> None:
    composed = unicodedata.normalize("NFC", "josé@example.com")
    decomposed = unicodedata.normalize("NFD", "josé@example.com")
    assert normalise_email(composed) == composed
    with pytest.raises(InvalidArgument, match=r"receiver_email is not in Unicode .* \(NFC\)"):
        normalise_email(decomposed, "receiver_email")
    with pytest.raises(InvalidArgument, match="NFC"):
        normalise_email("\u212bngstrom@example.com")  # ANGSTROM SIGN: NFC maps it to Å


@given(st.text(max_size=300))
def test_accepted_emails_are_in_nfc(raw: str) -> None:
    try:
        email = normalise_email(raw)
    except InvalidArgument:
        return
    assert unicodedata.is_normalized("NFC", email)
