"""UserService's Redis key names (DB 0), built in one place from normalised emails and hosts.

    user:{email}                    string  JSON {name, email, password (Argon2id), created_at,
                                            updated_at[, id (account id), token_version][, role]}
    users                           zset    every registered email, score 0 (lexical order)
    account_id_counter              string  INCRed for the sequence part of every new account id
    outbox:accounts                 stream  deleted accounts whose data the other services still
                                            erase
    outbox:accounts:dead            stream  erasures given up on (dead letters)
    login_failures:{email}:{client} string  failed sign-ins to one account from one client; expires
                                            (kept when the account is deleted: it only expires)
    login_account:{email}           hash    failed sign-ins to one account from anywhere and the
                                            back-off they impose ({failures, until_ms}); expires
    login_known:{email}             set     client hosts that signed in to the account; expires
    login_clients:{client}          string  failed sign-ins from one client host; expires
    register_clients:{client}       string  registrations from one client host; expires

Emails are normalised before they reach this module; client hosts are bounded and cleaned.
"""

from __future__ import annotations

from typing import Final

USERS_INDEX: Final = "users"
ACCOUNT_ID_COUNTER: Final = "account_id_counter"
ACCOUNTS_OUTBOX: Final = "outbox:accounts"
ACCOUNTS_DEAD_LETTERS: Final = "outbox:accounts:dead"
MAX_CLIENT_CHARS: Final = 64
USER_PREFIX: Final = "user:"
"""The page script appends the emails it reads from the index to this prefix itself."""


def user_key(email: str) -> str:
    return f"{USER_PREFIX}{email}"


def failures_key(email: str, client: str) -> str:
    """Failures for one account from one client (an email holds no ':', so this splits)."""
    return f"login_failures:{email}:{clean_client(client)}"


def account_key(email: str) -> str:
    return f"login_account:{email}"


def known_clients_key(email: str) -> str:
    return f"login_known:{email}"


def client_key(client: str) -> str:
    return f"login_clients:{clean_client(client)}"


def register_key(client: str) -> str:
    return f"register_clients:{clean_client(client)}"


def clean_client(client: str) -> str:
    """A client host safe to use as a key part: printable ASCII without spaces, bounded."""
    cleaned = "".join(c for c in client if c.isascii() and c.isprintable() and c != " ")
    return cleaned[:MAX_CLIENT_CHARS] or "unknown"
