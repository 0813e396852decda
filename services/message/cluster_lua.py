"""The Lua scripts of MessageService's cluster layout (services.message.cluster_keys): each one
touches the keys of a single hash slot, a conversation's bucket or one user.

A send is RESERVE (sender's slot) → STORE (bucket) → INDEX (sender's slot, receiver's slot); a
delete is DELETE (bucket) → UNINDEX (sender's and receiver's slots). The reads of messages and
conversations are the standalone scripts of services.message.lua, run once per bucket with the
bucket's key prefixes (their keys and the keys they build share the bucket's tag); the user's
index they start from is read with the ownership check of the reader's account in one script of
the user's slot (OWNED_RANGE).
"""

from __future__ import annotations

from typing import Final

from services.common.outbox import OUTBOX_LUA
from services.message.lua import CLAIM, MARK_READ, MESSAGE_PAGE, MESSAGES, TAKE_OVER
from services.message.lua_snippets import (  # the Lua snippets shared with the standalone scripts
    _CLAIM,
    _CLAIM_SENDER,
    _CONVERSATION_ADDED,
    _CONVERSATION_REMOVED,
    _EARLIER_SEND,
    _LOAD_CONVERSATION,
    _MARKER_OWNER,
    _OWNED,
    _RATE_HIT,
    _READ_ONLY,
    _RELEASE_BYTES,
)

__all__ = [
    "CLAIM",
    "CONVERSATIONS",
    "DELETE",
    "DROP_EMPTY",
    "INDEX",
    "MARK_READ",
    "MESSAGES",
    "MESSAGE_PAGE",
    "OWNED_RANGE",
    "RECEIVER",
    "REFUND",
    "RESERVE",
    "STORE",
    "TAKE_OVER",
    "UNINDEX",
]

# The sender's slot, first step of a send: the checks of the standalone SEND_MESSAGE that
# concern the sender, in the same order, and the reservation of the message's bytes.
# KEYS: 1 account marker, 2 stored bytes, 3 send-rate counter, 4 the sender's message ids,
#       [5 idempotency key].
# ARGV: 1 the sender's account id ('' = no claim), 2 messages allowed per window ('' = no
#       limit), 3 window (s), 4 quota (bytes), 5 the message's charge (bytes), 6 TTL of the
#       pending idempotency marker (s), 7 the marker (cluster_keys.PENDING).
# Returns {'pending'} (the key's first send is being stored), {'duplicate', record},
# {'stale'}, {'erase', 'sender'}, {'rate', seconds left}, {'quota', stored bytes} or
# {'reserved', the newest id in the sender's index ('0' if none)}: the charge is added to the
# stored bytes and the idempotency key holds the marker (REFUND gives both back if the send
# goes no further).
RESERVE: Final = (
    _CLAIM
    + _EARLIER_SEND
    + _CLAIM_SENDER
    + _RATE_HIT
    + """
local refused = earlier_send(KEYS[5], ARGV[7]) or claim_sender(KEYS[1], ARGV[1])
if refused then
  return refused
end
local wait = rate_hit(KEYS[3], ARGV[2], ARGV[3])
if wait then
  return {'rate', wait}
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used + tonumber(ARGV[5]) > tonumber(ARGV[4]) then
  return {'quota', used}
end
redis.call('INCRBY', KEYS[2], ARGV[5])
if KEYS[5] then
  redis.call('SET', KEYS[5], ARGV[7], 'EX', tonumber(ARGV[6]))
end
return {'reserved', redis.call('ZREVRANGE', KEYS[4], 0, 0)[1] or '0'}
"""
)

# The receiver's slot, first step of a send to someone else: the claim of the receiver's data
# (as in the standalone SEND_MESSAGE) and the newest id in the receiver's index.
# KEYS: 1 the receiver's account marker, 2 the receiver's message ids. ARGV: 1 the receiver's
# account id ('' = no claim). Returns {'erase'} (an earlier account's data is still there:
# nothing done) or {'ok', newest id ('0' if none)}.
RECEIVER: Final = (
    _CLAIM
    + """
if ARGV[1] ~= '' and claim(KEYS[1], ARGV[1]) == 'erase' then
  return {'erase'}
end
return {'ok', redis.call('ZREVRANGE', KEYS[2], 0, 0)[1] or '0'}
"""
)

# The sender's slot: a reservation given back (the send was refused after RESERVE).
# KEYS: 1 stored bytes, [2 idempotency key]. ARGV: 1 charge, 2 the pending marker.
REFUND: Final = (
    _RELEASE_BYTES
    + """
release_bytes(KEYS[1], ARGV[1])
if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return 1
"""
)

# The conversation's bucket: a new id, the message, its conversation and its outbox event.
# KEYS: 1 conversation hash, 2 conversation message ids, 3 the bucket's id sequence,
#       4 the bucket's outbox stream.
# ARGV: 1 message JSON after the id (records.message_tail), 2 receiver, 3 timestamp,
#       4 participants JSON, 5 the bucket, 6 the number of buckets, 7 the bucket's message key
#       prefix, 8 the floor: an id the new one must exceed (the newest in the sender's and the
#       receiver's indexes), 9 outbox field count, 10.. fields (the first pair is message_id;
#       its value is replaced by the id).
# The id: sequence * buckets + bucket, the sequence being the master's clock in ms, or more if
# needed to exceed the bucket's last sequence and the floor. Returns {'taken'} (three ids in a
# row held a message) or {'stored', id, read (0/1), bytes of the stored JSON}.
STORE: Final = (
    OUTBOX_LUA
    + _CONVERSATION_ADDED
    + """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local buckets, bucket = tonumber(ARGV[6]), tonumber(ARGV[5])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
last = math.max(last, math.floor(tonumber(ARGV[8]) / buckets))
local id, message_key = nil, nil
for _ = 1, 3 do
  last = math.max(ms, last + 1)
  local candidate = string.format('%.0f', last * buckets + bucket)
  if redis.call('EXISTS', ARGV[7] .. candidate) == 0 then
    id, message_key = candidate, ARGV[7] .. candidate
    break
  end
end
redis.call('SET', KEYS[3], string.format('%.0f', last))
if not id then
  return {'taken'}
end
local document = '{"id":' .. id .. ',' .. ARGV[1]
redis.call('SET', message_key, document)
redis.call('ZADD', KEYS[2], id, id)
local read = conversation_added(KEYS[1], KEYS[2], id, ARGV[2], ARGV[3], ARGV[4])
ARGV[11] = id
outbox_xadd(KEYS[4], ARGV, 9)
return {'stored', id, read, string.len(document)}
"""
)

# One user's slot: a message in that user's indexes (after STORE, and again by the relay from
# the outbox event: every write here is idempotent).
# KEYS: 1 the user's message ids, 2 the user's conversations_by_time, 3 the user's account
#       marker, [4 idempotency key].
# ARGV: 1 id, 2 the peer, 3 the user's account when the message was sent ('' = unknown),
#       4 the idempotency record JSON, 5 its TTL (s), 6 the pending marker.
# Returns 0 without writing if that account no longer owns the user's data (it was erased, or
# a later account took over: the message must go, as erasure would have deleted it), else 1.
# The record replaces the pending marker or a missing key, never another record.
INDEX: Final = (
    _MARKER_OWNER
    + """
if ARGV[3] ~= '' then
  local marker = redis.call('GET', KEYS[3])
  if marker then
    local owner, erased = marker_owner(marker)
    if owner > ARGV[3] or (owner == ARGV[3] and erased) then
      return 0
    end
  end
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[2])
if KEYS[4] then
  local existing = redis.call('GET', KEYS[4])
  if not existing or existing == ARGV[6] then
    redis.call('SET', KEYS[4], ARGV[4], 'EX', tonumber(ARGV[5]))
  end
end
return 1
"""
)

# The conversation's bucket: delete a message (after the service checked who may).
# KEYS: 1 the message, 2 conversation hash, 3 conversation message ids. ARGV: 1 id,
# 2 receiver. Returns false if the message no longer exists, else {bytes of its JSON, the
# conversation's last_sent_id if this was its last message (the conversation is deleted with
# it), else ''}. The last message of a conversation takes the conversation with it; updated_at
# and the list order are kept otherwise.
DELETE: Final = (
    _CONVERSATION_REMOVED
    + """
local document = redis.call('GET', KEYS[1])
if not document then
  return false
end
redis.call('DEL', KEYS[1])
local id, receiver, conv = ARGV[1], ARGV[2], KEYS[2]
redis.call('ZREM', KEYS[3], id)
local left = redis.call('ZCARD', KEYS[3])
if left == 0 then
  local last = redis.call('HGET', conv, 'last_sent_id') or id
  redis.call('DEL', conv)
  return {string.len(document), last}
end
conversation_removed(conv, KEYS[3], id, receiver, left)
return {string.len(document), ''}
"""
)

# One user's slot: a deleted message (or conversation) out of that user's indexes.
# KEYS: 1 the user's message ids, 2 the user's conversations_by_time, [3 stored bytes].
# ARGV: 1 id ('' = none), 2 the peer, 3 the deleted conversation's last_sent_id ('' = the
# conversation remains), 4 the charge to give back to the stored bytes (with KEYS[3]).
# The peer leaves conversations_by_time only at a position up to ARGV[3]: a conversation
# started again since (a later id) stays listed.
UNINDEX: Final = (
    _RELEASE_BYTES
    + """
if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
if ARGV[3] ~= '' then
  local position = redis.call('ZSCORE', KEYS[2], ARGV[2])
  if position and tonumber(position) <= tonumber(ARGV[3]) then
    redis.call('ZREM', KEYS[2], ARGV[2])
  end
end
if KEYS[3] then
  release_bytes(KEYS[3], ARGV[4])
end
return 1
"""
)

# The conversation's bucket (erasure): a conversation left without messages deleted.
# KEYS: 1 conversation hash, 2 conversation message ids. Returns false if it still has
# messages, else its last_sent_id ('' if the hash was already gone).
DROP_EMPTY: Final = """
if redis.call('ZCARD', KEYS[2]) > 0 then
  return false
end
local last = redis.call('HGET', KEYS[1], 'last_sent_id') or ''
redis.call('DEL', KEYS[1])
return last
"""

# The conversations' bucket: load_conversation (lua_snippets.py) of each conversation hash in
# KEYS. ARGV: 1 the bucket's message key prefix, 2 the reader's email, 3.. the peer of each key.
CONVERSATIONS: Final = (
    _READ_ONLY
    + _LOAD_CONVERSATION
    + """
local loaded = {}
for i, key in ipairs(KEYS) do
  loaded[i] = load_conversation(key, ARGV[1], ARGV[2], ARGV[i + 2])
end
return loaded
"""
)

# One user's slot: the start of a page read - a range of one of the user's indexes (message ids,
# or conversations_by_time with positions), newest first, gated on the account check of the
# standalone page scripts (lua_snippets.py's owned). KEYS: 1 the index, [2 the user's account
# marker]. ARGV: 1 upper score bound ('+inf' or '(' .. position), 2 how many (the page size +
# 1), 3 '1' for the scores too, [4 the user's account id]. Returns false if KEYS[2] is given and
# does not name ARGV[4], else {the members (flat with their scores with ARGV[3])}.
OWNED_RANGE: Final = (
    _READ_ONLY
    + _OWNED
    + """
if not owned(KEYS[2], ARGV[4]) then
  return false
end
if ARGV[3] == '1' then
  return {redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'WITHSCORES', 'LIMIT', 0,
    tonumber(ARGV[2]))}
end
return {redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'LIMIT', 0, tonumber(ARGV[2]))}
"""
)
