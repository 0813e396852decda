"""A poison event in each outbox: dead-lettered with its reason, the others keep flowing (R17)."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio
from redis.typing import EncodableT, FieldT

from tests.helpers.chaos.run import NOTIFICATION_SLA_SECONDS, ChaosRun, deep
from tests.helpers.chaos.store import MESSAGE_DB, NOTIFICATION_DB, USER_DB

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos]

OUTBOXES: dict[str, tuple[int, dict[FieldT, EncodableT]]] = {
    # stream, its database, and fields no relay can decode
    "outbox:notifications": (
        MESSAGE_DB,
        {"message_id": "not-a-number", "sender_email": "x", "receiver_email": "y"},
    ),
    "outbox:frontend": (NOTIFICATION_DB, {"id": "1", "notification": "{not json"}),
    # an erasure event that names no email: the erasure relay cannot deliver it
    "outbox:accounts": (USER_DB, {"account_id": "not-an-account"}),
}


async def test_poison_event_in_each_outbox(chaos: ChaosRun) -> None:
    ops, users, rate = (400, 8, 40.0) if deep() else (120, 4, 20.0)
    await chaos.setup(users=users)
    base = chaos.workload.completed
    load = chaos.workload.start(ops, rate=rate)
    await chaos.workload.reached(base + ops // 4)
    poisons: dict[str, str] = {}
    for stream, (db, fields) in OUTBOXES.items():
        nonce = uuid.uuid4().hex
        async with redis.asyncio.Redis.from_url(chaos.system.valkey.url, db=db) as client:
            entry: dict[FieldT, EncodableT] = {**fields, "chaos_poison": nonce}
            await client.xadd(stream, entry)
        poisons[stream] = nonce
    chaos.heal()
    await load
    result = await chaos.check(dead_letters=len(poisons))
    dead = chaos.snapshot.dead_letters
    for stream, nonce in poisons.items():
        found = [d for d in dead if any(nonce in value for value in d.fields.values())]
        result.figures[f"poison in {stream}"] = (
            found[0].describe() if found else "not dead-lettered"
        )
        result.require(
            len(found) == 1 and bool(found[0].reason),
            f"the poison event of {stream} is dead-lettered once, with its reason",
        )
    result.require(
        result.drain_s is not None and result.drain_s <= NOTIFICATION_SLA_SECONDS,
        f"the other notifications keep flowing (within {NOTIFICATION_SLA_SECONDS:g} s)",
    )
    chaos.finish(result)
