"""MessageService domain logic: validation, authorisation, idempotency and paging over a store.

Paging is by cursor, not offset: the opaque token (services.common.paging's format) carries the
position after which the next page starts - a message id, or for conversations the id of the
last message sent in them. New messages arriving between two page requests then neither repeat
nor hide items of the following pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, Protocol

from services.common.auth import ACCOUNT_ID
from services.common.domain import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Principal,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from services.common.paging import Page, encode_offset, parse_page
from services.common.sessions import GONE, AccountState
from services.message import validation
from services.message.models import (
    Conversation,
    ConversationPage,
    IdempotencyRecord,
    Message,
    MessagePage,
    MessageSender,
    SendOutcome,
    content_digest,
)
from services.message.settings import SendLimits

logger = logging.getLogger(__name__)

# A send runs again after erasing an earlier account's data (the sender's, then the receiver's).
_SEND_ATTEMPTS: Final = 3


class MessageStore(MessageSender, Protocol):
    """What the service needs from storage (RedisMessageStore on a standalone Redis,
    ClusterMessageStore on a Redis Cluster)."""

    async def idempotency_record(
        self, sender: str, request_id: str
    ) -> IdempotencyRecord | None: ...

    async def claim(self, email: str, account_id: str) -> bool: ...

    async def erase_account(self, email: str, account_id: str) -> int: ...

    async def get(self, message_id: int) -> Message | None: ...

    async def message_page(
        self, email: str, peer: str | None, before: int | None, size: int
    ) -> tuple[list[Message], int | None]: ...

    async def conversation_page(
        self, email: str, before: int | None, size: int
    ) -> tuple[list[Conversation], int | None]: ...

    async def owned_message_page(
        self, email: str, account_id: str, peer: str | None, before: int | None, size: int
    ) -> tuple[list[Message], int | None] | None: ...

    async def owned_conversation_page(
        self, email: str, account_id: str, before: int | None, size: int
    ) -> tuple[list[Conversation], int | None] | None: ...

    async def mark_read(self, email: str, peer: str) -> Conversation | None: ...

    async def delete(self, message: Message) -> bool: ...


class KnownUsers(Protocol):
    """Who is registered, possibly a few seconds late (UserService CheckUsersExist behind the
    account cache of services.common.sessions.Sessions in production)."""

    async def accounts(self, emails: Sequence[str]) -> Mapping[str, AccountState | None]:
        """The account registered under each of ``emails`` (None where there is none);
        Unavailable if that cannot be found out now."""
        ...


class UserDirectory(KnownUsers, Protocol):
    """Who is registered now (UserService CheckUserExists and CheckUsersExist in production)."""

    async def account(self, email: str) -> AccountState | None:
        """The account registered under ``email``, or None; Unavailable if that cannot be
        found out now. An account from before ids existed has an empty account_id."""
        ...


def _cursor(page: Page) -> int | None:
    return page.offset or None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MessageService:
    """The operations of the contract, independent of gRPC and REST.

    ``user_field`` names the caller's email parameter in error messages (``user_email`` on gRPC,
    ``email`` on REST).
    """

    def __init__(
        self,
        store: MessageStore,
        users: UserDirectory,
        *,
        clock: Callable[[], datetime] = _utc_now,
        limits: SendLimits | None = None,
        known_users: KnownUsers | None = None,
    ) -> None:
        """``limits`` None sends without a rate limit (trusted in-process use only).

        ``known_users`` answers the sender and receiver checks of a send (``users`` if None);
        ``users`` answers erasure, which must see the account as it is now."""
        self._store = store
        self._users = users
        self._known = users if known_users is None else known_users
        self._clock = clock
        self._limits = limits

    @staticmethod
    def _owner(principal: Principal, raw_email: str, field: str) -> str:
        """The normalised email, if ``principal`` may act on it."""
        email = validation.email(raw_email, field)
        principal.require_self(email)
        return email

    async def _claim(self, principal: Principal, email: str) -> None:
        """Once the input is valid: the data stored under ``email`` must belong to the caller's
        account. Data of an earlier, deleted account of the same email is erased first; a
        deleted account is refused."""
        if principal.account_id and not await self._store.claim(email, principal.account_id):
            raise Unauthenticated(GONE)

    async def erase_account(self, principal: Principal, email: str, account_id: str) -> int:
        """Erase the data of a deleted account (UserService's erasure relay); idempotent."""
        if not principal.is_service:  # the edge allows only UserService; belt and braces
            raise PermissionDenied("EraseAccount is internal to Missive's services")
        address = validation.email(email, "email")
        if account_id and not ACCOUNT_ID.fullmatch(account_id):
            raise InvalidArgument("account_id must be 32 lower-case hex digits or empty")
        current = await self._users.account(address)
        if current is not None and current.account_id <= account_id:
            raise FailedPrecondition(
                f"account {account_id or '(without id)'} of {address} is still registered"
            )
        erased = await self._store.erase_account(address, account_id)
        logger.info("erased %d messages of deleted account %s of %s", erased, account_id, address)
        return erased

    # -- sending ------------------------------------------------------------------------------

    async def send(
        self,
        principal: Principal,
        *,
        sender_email: str,
        receiver_email: str,
        content: str,
        client_request_id: str | None = None,
    ) -> Message:
        """Store a message from the caller, once per client_request_id, with its outbox event."""
        sender = self._owner(principal, sender_email, "sender_email")
        # The receiver may be the sender: a note to self.
        receiver = validation.email(receiver_email, "receiver_email")
        validation.check_content(content)
        request_id = validation.request_id(client_request_id)
        if request_id is not None and principal.account_id:
            request_id = f"{principal.account_id}:{request_id}"  # one namespace per account
        digest = content_digest(content) if request_id is not None else ""
        if request_id is not None:  # a repeat is answered before asking UserService
            record = await self._store.idempotency_record(sender, request_id)
            if record is not None:
                return await self._replay(record, request_id, receiver, digest)
        receiver_account, sender_name = await self._check_registered(sender, receiver)
        limit = (self._limits.messages, self._limits.window_seconds) if self._limits else None
        timestamp = self._clock()
        for _ in range(_SEND_ATTEMPTS):
            # One round trip: the claims (the receiver's data must be theirs before the
            # message joins it), one hit on the rate limit (counted once both users are known
            # and the sender's data is the caller's account's, so a refused send stores no
            # message), a new id, the quota and the writes.
            outcome = await self._store.send_message(
                sender,
                receiver,
                content,
                timestamp,
                request_id=request_id,
                content_sha256=digest,
                sender_account_id=principal.account_id,
                receiver_account_id=receiver_account,
                claim_receiver=bool(receiver_account) and receiver != sender,
                sender_name=sender_name,
                rate_limit=limit,
            )
            if outcome.message is not None:
                message = outcome.message
                logger.debug("message %d stored from %s to %s", message.id, sender, receiver)
                return message
            if outcome.existing is not None and request_id is not None:
                return await self._replay(outcome.existing, request_id, receiver, digest)
            if outcome.outcome != "erase":
                raise self._refusal(sender, outcome)
            # Data of an earlier, deleted account of the email: erased (slow path), then the
            # send runs again. The sender's own account being gone is refused.
            email = outcome.erase_email
            account = principal.account_id if email == sender else receiver_account
            if not await self._store.claim(email, account) and email == sender:
                raise Unauthenticated(GONE)
        raise Unavailable(
            f"the data of {sender} or {receiver} is being changed concurrently; retry"
        )

    def _refusal(self, sender: str, outcome: SendOutcome) -> Exception:
        """The error of a send the store refused (stale account, rate, quota, no free id)."""
        if outcome.outcome == "stale":
            return Unauthenticated(GONE)
        if outcome.outcome == "rate" and self._limits is not None:
            logger.warning("sending throttled for %s", sender)
            return RateLimited(
                f"at most {self._limits.messages} messages may be sent per "
                f"{self._limits.window_seconds} seconds; retry in {outcome.retry_after} seconds",
                outcome.retry_after,
            )
        if outcome.outcome == "quota":
            return self._over_quota(sender, outcome.quota_used)
        logger.error("send refused by the store (%s): the id counter went back", outcome.outcome)
        return Unavailable("could not allocate a message id; retry")

    def _over_quota(self, sender: str, used: int) -> RateLimited:
        logger.warning("sender %s reached the storage quota (%d bytes stored)", sender, used)
        return RateLimited(
            f"storage quota reached: the messages you sent take {used} bytes; "
            "delete some of them to send more",
            self._limits.window_seconds if self._limits else 60,
        )

    async def _replay(
        self, record: IdempotencyRecord, request_id: str, receiver: str, digest: str
    ) -> Message:
        """The message a repeated client_request_id stored, if the repeat is the same message."""
        if not record.matches(receiver, digest):
            raise AlreadyExists(
                f"client_request_id {request_id} was already used for a different message"
            )
        message = await self._store.get(record.message_id)
        if message is None:
            raise AlreadyExists(
                f"client_request_id {request_id} was already used for message "
                f"{record.message_id}, which has since been deleted"
            )
        logger.debug("client_request_id %s repeated: message %d", request_id, message.id)
        return message

    async def _check_registered(self, sender: str, receiver: str) -> tuple[str, str]:
        """The receiver's account id ("" if it has none yet) and the sender's display name ("" if
        unknown); NotFound naming each unregistered user; Unavailable if UserService cannot
        tell. Both are asked about together (one UserService call at most)."""
        accounts = await self._known.accounts([sender, receiver])
        emails = {"sender_email": sender, "receiver_email": receiver}
        missing = [
            f"{field}: no user is registered under {email}"
            for field, email in emails.items()
            if accounts.get(email) is None
        ]
        if missing:
            raise NotFound("; ".join(missing))
        sender_account, receiver_account = accounts[sender], accounts[receiver]
        return (
            receiver_account.account_id if receiver_account is not None else "",
            sender_account.name if sender_account is not None else "",
        )

    # -- reading ------------------------------------------------------------------------------

    async def get_messages(
        self,
        principal: Principal,
        user_email: str,
        peer_email: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        *,
        user_field: str = "user_email",
    ) -> MessagePage:
        """One page of the user's messages (with ``peer_email`` only, if given), newest first."""
        user = self._owner(principal, user_email, user_field)
        peer = (
            validation.email(peer_email, "peer_email")
            if peer_email and peer_email.strip()
            else None
        )
        page = parse_page(page_size, page_token)
        if principal.account_id:  # the claim rides with the page read (one round trip)
            owned = await self._store.owned_message_page(
                user, principal.account_id, peer, _cursor(page), page.size
            )
            if owned is None:
                raise Unauthenticated(GONE)
            messages, after = owned
        else:
            messages, after = await self._store.message_page(user, peer, _cursor(page), page.size)
        return MessagePage(messages, encode_offset(after) if after is not None else "")

    async def get_message(
        self,
        principal: Principal,
        user_email: str,
        message_id: int,
        *,
        user_field: str = "user_email",
    ) -> Message:
        """A message of which the user is the sender or the receiver."""
        user = self._owner(principal, user_email, user_field)
        validation.check_id(message_id)
        await self._claim(principal, user)
        message = await self._store.get(message_id)
        if message is None or not message.involves(user):
            raise NotFound(f"message {message_id} does not exist")
        return message

    async def list_conversations(
        self,
        principal: Principal,
        user_email: str,
        page_size: int | None = None,
        page_token: str | None = None,
        *,
        user_field: str = "user_email",
    ) -> ConversationPage:
        """One page of the user's conversations, most recent first."""
        user = self._owner(principal, user_email, user_field)
        page = parse_page(page_size, page_token)
        if principal.account_id:  # the claim rides with the page read (one round trip)
            owned = await self._store.owned_conversation_page(
                user, principal.account_id, _cursor(page), page.size
            )
            if owned is None:
                raise Unauthenticated(GONE)
            conversations, after = owned
        else:
            conversations, after = await self._store.conversation_page(
                user, _cursor(page), page.size
            )
        return ConversationPage(conversations, encode_offset(after) if after is not None else "")

    # -- changing -----------------------------------------------------------------------------

    async def mark_read(
        self,
        principal: Principal,
        user_email: str,
        peer_email: str,
        *,
        user_field: str = "user_email",
    ) -> Conversation:
        """Mark every message the peer sent to the user read; the updated conversation."""
        user = self._owner(principal, user_email, user_field)
        peer = validation.email(peer_email, "peer_email")
        await self._claim(principal, user)
        conversation = await self._store.mark_read(user, peer)
        if conversation is None:
            raise NotFound(f"{user} has no conversation with {peer}")
        return conversation

    async def delete(
        self,
        principal: Principal,
        user_email: str,
        message_id: int,
        *,
        user_field: str = "user_email",
    ) -> None:
        """Delete a message the user sent, for both participants."""
        user = self._owner(principal, user_email, user_field)
        validation.check_id(message_id)
        await self._claim(principal, user)
        message = await self._store.get(message_id)
        if message is None or not message.involves(user):
            raise NotFound(f"message {message_id} does not exist")
        if message.sender_email != user:
            raise PermissionDenied(f"only the sender of message {message_id} may delete it")
        if not await self._store.delete(message):
            raise NotFound(f"message {message_id} does not exist")
        logger.debug("message %d deleted by %s", message_id, user)
