"""``missive admin``: operator commands, signed with the operator's service credential.

The admin RPCs accept only the ``admin`` credential: an EdDSA (Ed25519) JWT signed with
``KEYS_DIR/service/admin.key`` - the key pair the services create next to their own - with
issuer ``missive-service:admin`` and the target service as audience, sent in the
``x-missive-service-token`` metadata (as the services do between themselves).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import click
import grpc

from missive_client._config import ClientConfig
from missive_client._errors import Unauthenticated
from missive_client._generated.grpc.missive.message import v1 as message_pb
from missive_client._generated.grpc.missive.notification import v1 as notification_pb
from missive_client._generated.grpc.missive.user import v1 as user_pb
from missive_client._sync_transport import _CallDetails, grpc_error
from missive_client._wire import GRPC_OPTIONS
from missive_client.cli._common import json_option, state_of

__all__ = ["admin", "mint_admin_token"]

AdminService = Literal["user", "message", "notification"]
OUTBOXES: dict[AdminService, str] = {
    "user": "outbox:accounts (UserService's account erasures to MessageService and "
    "NotificationService)",
    "message": "outbox:notifications (MessageService to NotificationService)",
    "notification": "outbox:frontend (NotificationService to FrontendService)",
}
_MODULES: dict[AdminService, tuple[Any, str]] = {
    "user": (user_pb, "UserServiceStub"),
    "message": (message_pb, "MessageServiceStub"),
    "notification": (notification_pb, "NotificationServiceStub"),
}
OPERATOR = "admin"
TOKEN_TTL_SECONDS = 300
SERVICE_TOKEN_HEADER = "x-missive-service-token"
_PAGE = 100


def keys_dir(option: str | None) -> Path:
    """``--keys-dir``, else ``KEYS_DIR``, else ``.data/keys`` (as the services resolve it)."""
    return Path(option or os.environ.get("KEYS_DIR") or ".data/keys")


def mint_admin_token(directory: Path, target: str, now: float | None = None) -> str:
    """A short-lived credential of the operator for calling ``target`` (a service name)."""
    import jwt  # the operator's commands only: the rest of the SDK does not need it
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = directory / "service" / f"{OPERATOR}.key"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise Unauthenticated(
            f"no operator key at {path}: set KEYS_DIR or --keys-dir to the services' key "
            "directory (`make up` and KEYS_CREATE=1 create service/admin.key with the other keys)"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise Unauthenticated(f"cannot read the operator key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise Unauthenticated(f"{path} is not an Ed25519 private key")
    issued = int(time.time() if now is None else now)
    prefix = "missive-service:"
    token: str = jwt.encode(
        {
            "iss": prefix + OPERATOR,
            "aud": prefix + target,
            "sub": OPERATOR,
            "iat": issued,
            "exp": issued + TOKEN_TTL_SECONDS,
        },
        key,
        algorithm="EdDSA",
        headers={"kid": OPERATOR},
    )
    return token


class _Credential(grpc.UnaryUnaryClientInterceptor):
    """Adds the operator's credential and the call timeout to every call."""

    def __init__(self, token: str, timeout: float) -> None:
        self._token = token
        self._timeout = timeout

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = (*tuple(details.metadata or ()), (SERVICE_TOKEN_HEADER, self._token))
        return continuation(_CallDetails(details, self._timeout, metadata), request)


@dataclass(frozen=True)
class DeadLetterRow:
    """One dead letter as the CLI prints it."""

    service: str
    id: str
    original_id: str
    reason: str
    attempts: int
    consumer: str
    dead_lettered_at: datetime | None
    fields: dict[str, str]


class AdminClient:
    """The admin RPCs of one service over a blocking channel, errors as MissiveError."""

    def __init__(self, service: AdminService, directory: Path, config: ClientConfig) -> None:
        self.service: AdminService = service
        self.address = str(getattr(config, f"{service}_grpc"))
        token = mint_admin_token(directory, service)
        self._raw = grpc.insecure_channel(self.address, options=GRPC_OPTIONS)
        channel = grpc.intercept_channel(self._raw, _Credential(token, config.timeout))
        pb, stub_name = _MODULES[service]
        self._pb = pb
        self._stub = getattr(pb, stub_name)(channel)

    def close(self) -> None:
        self._raw.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request)
        except grpc.RpcError as exc:
            raise grpc_error(exc, self.service, self.address) from exc

    def list_all(self, limit: int | None) -> tuple[list[DeadLetterRow], int]:
        rows: list[DeadLetterRow] = []
        token = ""
        total = 0
        while True:
            reply = self._call(
                "list_dead_letters",
                self._pb.ListDeadLettersRequest(page_size=_PAGE, page_token=token),
            )
            total = reply.total
            rows.extend(
                DeadLetterRow(
                    self.service,
                    item.id,
                    item.original_id,
                    item.reason,
                    item.attempts,
                    item.consumer,
                    item.dead_lettered_at,
                    dict(item.fields),
                )
                for item in reply.dead_letters
            )
            token = reply.next_page_token
            if not token or (limit is not None and len(rows) >= limit):
                return (rows if limit is None else rows[:limit]), total

    def replay(self, ids: list[str], everything: bool) -> tuple[int, list[str]]:
        request = self._pb.ReplayDeadLettersRequest(ids=ids, all=everything)
        reply = self._call("replay_dead_letters", request)
        return int(reply.replayed), list(reply.not_found)

    def drop(self, ids: list[str], everything: bool) -> tuple[int, list[str]]:
        request = self._pb.DropDeadLettersRequest(ids=ids, all=everything)
        reply = self._call("drop_dead_letters", request)
        return int(reply.dropped), list(reply.not_found)


def _client(ctx: click.Context, service: AdminService, keys: str | None) -> AdminClient:
    state = state_of(ctx)
    config = ClientConfig.resolve(profile=state.profile, timeout=state.timeout)
    client = AdminClient(service, keys_dir(keys), config)
    ctx.call_on_close(client.close)
    return client


_SERVICE_CHOICE = click.Choice(list(OUTBOXES))


def _keys_option(command: Any) -> Any:
    return click.option(
        "--keys-dir",
        "keys",
        metavar="DIR",
        help="Directory of the services' keys, holding service/admin.key "
        "[env KEYS_DIR; default .data/keys].",
    )(command)


@click.group()
def admin() -> None:
    """Operator commands (they sign with KEYS_DIR/service/admin.key, not a user token)."""


@admin.group("dead-letters")
def dead_letters() -> None:
    """Events the relays gave up on: list them, replay them, or drop them.

    UserService (--service user) holds those of outbox:accounts (account erasures for
    MessageService and NotificationService); MessageService (--service message) those of
    outbox:notifications (notification events for NotificationService); NotificationService
    (--service notification) those of outbox:frontend (pushes to FrontendService).
    """


@dead_letters.command("list")
@click.option(
    "--service", type=_SERVICE_CHOICE, help="Only this outbox's dead letters (default: all three)."
)
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many (0: all).")
@_keys_option
@json_option
@click.pass_context
def dead_letters_list(
    ctx: click.Context, /, service: str | None, limit: int, keys: str | None, **_: Any
) -> None:
    """List dead letters, oldest first, with the reason and the original event."""
    state = state_of(ctx)
    out = state.output(ctx)
    services = [cast("AdminService", service)] if service else list(OUTBOXES)
    rows: list[DeadLetterRow] = []
    totals: dict[str, int] = {}
    with out.spinner("Loading…"):
        for name in services:
            found, totals[name] = _client(ctx, name, keys).list_all(limit or None)
            rows.extend(found)
    if out.as_json:
        out.json(rows)
        return
    for name in services:
        out.note(f"{name}: {totals[name]} dead letter(s) in {OUTBOXES[name]}")
    for row in rows:
        when = f"{row.dead_lettered_at:%Y-%m-%d %H:%M:%S}" if row.dead_lettered_at else "?"
        event = " ".join(f"{k}={v}" for k, v in sorted(row.fields.items()))
        out.say(f"{row.service} {row.id}  {when}  attempts={row.attempts}  {row.reason}")
        out.say(f"    {event}", style="dim")


def _acting(
    ctx: click.Context,
    verb: str,
    service: AdminService,
    ids: tuple[str, ...],
    everything: bool,
    keys: str | None,
) -> tuple[int, list[str]]:
    if everything and ids:
        raise click.UsageError("give dead-letter ids or --all, not both")
    if not everything and not ids:
        raise click.UsageError("give the ids of the dead letters (see `list`), or --all")
    client = _client(ctx, service, keys)
    if verb == "replay":
        return client.replay(list(ids), everything)
    return client.drop(list(ids), everything)


def _report(ctx: click.Context, verb: str, service: str, count: int, not_found: list[str]) -> None:
    out = state_of(ctx).output(ctx)
    if out.as_json:
        out.json({"service": service, verb: count, "not_found": not_found})
        return
    out.say(f"{verb.capitalize()} {count} dead letter(s) of {service}.")
    if not_found:
        out.note(f"not dead-lettered (any more): {', '.join(not_found)}")


@dead_letters.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--service", type=_SERVICE_CHOICE, required=True, help="Whose outbox.")
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@_keys_option
@json_option
@click.pass_context
def dead_letters_replay(
    ctx: click.Context,
    /,
    ids: tuple[str, ...],
    service: AdminService,
    everything: bool,
    keys: str | None,
    **_: Any,
) -> None:
    """Deliver dead letters again (each at most once; receivers ignore an event seen before)."""
    out = state_of(ctx).output(ctx)
    with out.spinner("Replaying…"):
        count, missing = _acting(ctx, "replay", service, ids, everything, keys)
    _report(ctx, "replayed", service, count, missing)


@dead_letters.command("drop")
@click.argument("ids", nargs=-1)
@click.option("--service", type=_SERVICE_CHOICE, required=True, help="Whose outbox.")
@click.option("--all", "everything", is_flag=True, help="Drop every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --all.")
@_keys_option
@json_option
@click.pass_context
def dead_letters_drop(
    ctx: click.Context,
    /,
    ids: tuple[str, ...],
    service: AdminService,
    everything: bool,
    yes: bool,
    keys: str | None,
    **_: Any,
) -> None:
    """Delete dead letters for good: their events are never delivered."""
    out = state_of(ctx).output(ctx)
    if everything and not ids and not yes:
        click.confirm(f"Drop every dead letter of {service}? They are lost for good", abort=True)
    with out.spinner("Dropping…"):
        count, missing = _acting(ctx, "drop", service, ids, everything, keys)
    _report(ctx, "dropped", service, count, missing)
