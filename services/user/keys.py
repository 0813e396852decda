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

Cluster layout (Valkey Cluster, database 0 shared with the other services; every key starts with
``u:``). An email belongs to one of BUCKETS buckets (a BLAKE2b hash of the email, modulo
BUCKETS); each bucket has a hash tag ``{t}`` (BUCKET_TAGS, spread evenly over the slot space:
the bucket scheme of services.common.buckets, shared by the services), and every key of an
email carries its bucket's tag, so each script of the service touches one slot:

    u:user:{t}:{email}              string  the user record (the JSON of ``user:{email}``)
    u:users:{t}                     zset    the emails of the bucket, score 0 (lexical order);
                                            a page of users merges the BUCKETS zsets by email
    u:account_ids:{t}               string  INCRed for the sequence part of a new account id of
                                            an email of the bucket (no global counter)
    u:outbox:accounts:{t}           stream  erasures of deleted accounts of the bucket's emails
    u:outbox:accounts:{t}:dead      stream  its dead letters (same slot as the stream)
    u:login_failures:{t}:{email}:{client}  string  as login_failures:{email}:{client}
    u:login_account:{t}:{email}     hash    as login_account:{email}
    u:login_known:{t}:{email}       set     as login_known:{email}
    u:login_clients:{{client}}      string  as login_clients:{client}: its own slot per client
    u:register_clients:{{client}}   string  as register_clients:{client}: its own slot per client

(``{t}`` is the literal hash tag, braces included; ``{{client}}`` is the client host inside
braces: the host is the key's hash tag.) Why each script is single-slot:

- create (record + index entry), replace (record), delete (record, index entry, back-off,
  known clients, outbox entry): every key is the email's, so under its bucket's tag;
- sign-in admission and success touch the per-client counter (the client's slot) and the
  account's keys (the email's bucket): they run as two scripts, one per slot - the client's
  counter is reserved first (refused when full), then the account's limits are checked and
  reserved, and a refusal there gives the client's reservation back (see lua.CLIENT_ADMIT);
- the registration counter and the per-client counter are single keys;
- a page of users reads windows of each bucket's zset (one key per command) and the records
  with a non-atomic MGET split by slot (reads only).
"""

from __future__ import annotations

from typing import Final

from services.common import buckets
from services.common.buckets import email_bucket, spread_tags

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


# The cluster layout (see the module docstring).
CLUSTER_PREFIX: Final = "u:"
BUCKETS: Final = buckets.BUCKETS
"""Buckets of emails (services.common.buckets): the most Cluster masters UserService's data
spreads over."""


BUCKET_TAGS: Final = spread_tags("u", BUCKETS)


def bucket(email: str) -> int:
    """The bucket of ``email`` (services.common.buckets.email_bucket)."""
    return email_bucket(email)


def tag(email: str) -> str:
    """The hash tag (braces included) of every cluster key of ``email``."""
    return "{" + BUCKET_TAGS[bucket(email)] + "}"


def cluster_user_key(email: str) -> str:
    return f"u:user:{tag(email)}:{email}"


def cluster_users_index(index: int) -> str:
    """The zset of the emails of bucket ``index``."""
    return f"u:users:{{{BUCKET_TAGS[index]}}}"


def cluster_account_ids(email: str) -> str:
    """The per-bucket counter of the account ids of ``email``'s bucket."""
    return f"u:account_ids:{tag(email)}"


def cluster_accounts_outbox(index: int) -> str:
    """The erasure outbox stream of bucket ``index``."""
    return f"u:outbox:accounts:{{{BUCKET_TAGS[index]}}}"


def cluster_accounts_dead_letters(index: int) -> str:
    """The dead letters of bucket ``index``'s erasure outbox (same slot as the stream)."""
    return f"{cluster_accounts_outbox(index)}:dead"


def cluster_failures_key(email: str, client: str) -> str:
    return f"u:login_failures:{tag(email)}:{email}:{clean_client(client)}"


def cluster_account_key(email: str) -> str:
    return f"u:login_account:{tag(email)}:{email}"


def cluster_known_clients_key(email: str) -> str:
    return f"u:login_known:{tag(email)}:{email}"


def cluster_client_key(client: str) -> str:
    return f"u:login_clients:{{{clean_client(client)}}}"


def cluster_register_key(client: str) -> str:
    return f"u:register_clients:{{{clean_client(client)}}}"
