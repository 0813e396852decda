"""The Lua scripts of MessageService: each multi-key write atomic (one script each), and each
page read in one round trip.

Every key a write script touches arrives in KEYS. The read scripts cannot know every key in
advance: they find ids in an index and read the documents those ids name, so they build
``message:{id}`` (and a message's ``conversation:{a}:{b}``) from the prefixes in ARGV. They only
read (``flags=no-writes``), and like the writes they need a single instance (the keys of one
page do not share a hash slot). Message ids travel as decimal strings and are compared with
tonumber (exact below 2^53).

Read state: ``read_upto:{email}`` in the conversation hash is the highest message id that
participant has read; a message is read iff its id <= read_upto of its receiver, and
``unread:{email}`` counts the received messages above it. SEND_MESSAGE takes the id inside the
script; should the id counter ever go back, a message may be stored under an id that a
MarkConversationRead already covers: it is then stored as read and not counted, which keeps the
flag and the count consistent.

The Lua functions these scripts share with the cluster layout's (conversation_added, claim,
load_conversation, owned...) are in services.message.lua_snippets; the two used only here
(store_message, load_messages) are defined next to their scripts.
"""

from __future__ import annotations

from typing import Final

from services.common.outbox import OUTBOX_LUA
from services.message.lua_snippets import (
    _CLAIM,
    _CLAIM_SENDER,
    _CONVERSATION_ADDED,
    _CONVERSATION_REMOVED,
    _EARLIER_SEND,
    _LOAD_CONVERSATION,
    _OWNED,
    _RATE_HIT,
    _READ_ONLY,
    _RELEASE_BYTES,
)

# store_message(k, id, document, receiver, timestamp, conversation key, participants JSON):
# write a message whose id is free and whose size fits the quota (SEND_MESSAGE checked both).
# k: the keys {message, conversation hash, conversation message ids, sender's/receiver's
# conversation set, sender's/receiver's conversations_by_time, sender's/receiver's message
# ids, sender's stored bytes}. Returns 1 if the message is stored as read (its receiver had
# already read past its id), else 0.
_STORE_MESSAGE: Final = """
local function store_message(k, id, document, receiver, timestamp, conversation, participants)
  redis.call('INCRBY', k[10], string.len(document))
  redis.call('SET', k[1], document)
  redis.call('ZADD', k[3], id, id)
  local read = conversation_added(k[2], k[3], id, receiver, timestamp, participants)
  redis.call('SADD', k[4], conversation)
  redis.call('SADD', k[5], conversation)
  redis.call('ZADD', k[6], 'GT', id, conversation)
  redis.call('ZADD', k[7], 'GT', id, conversation)
  redis.call('ZADD', k[8], id, id)
  redis.call('ZADD', k[9], id, id)
  return read
end
"""

# KEYS: 1 message:{id}, 2 conversation hash, 3 conversation message ids,
#       4/5 sender's/receiver's message ids, 6/7 sender's/receiver's conversation set,
#       8/9 sender's/receiver's conversations_by_time, 10 sender's stored bytes.
# ARGV: 1 id, 2 receiver, 3 conversation key.
# Returns 0 if the message no longer exists, else 1. The last message of a conversation takes
# the conversation with it (hash deleted, removed from both users' lists); updated_at and the
# list order are kept otherwise.
DELETE: Final = (
    _RELEASE_BYTES
    + _CONVERSATION_REMOVED
    + """
local document = redis.call('GET', KEYS[1])
if not document then
  return 0
end
redis.call('DEL', KEYS[1])
release_bytes(KEYS[10], string.len(document))
local id, receiver, conv = ARGV[1], ARGV[2], KEYS[2]
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
local left = redis.call('ZCARD', KEYS[3])
if left == 0 then
  redis.call('DEL', conv)
  redis.call('SREM', KEYS[6], ARGV[3])
  redis.call('SREM', KEYS[7], ARGV[3])
  redis.call('ZREM', KEYS[8], ARGV[3])
  redis.call('ZREM', KEYS[9], ARGV[3])
  return 1
end
conversation_removed(conv, KEYS[3], id, receiver, left)
return 1
"""
)

# load_messages(message keys, conversation prefix): per key, the message JSON (false if
# missing) and read_upto of its receiver in its conversation (false if unset or the JSON is not
# a message). Conversation keys hold the two emails sorted as Python sorts them (code points =
# UTF-8 bytes); Lua's own string < follows the server's locale, hence sorts_before.
_LOAD_MESSAGES: Final = """
local function sorts_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end
local function load_messages(message_keys, conversation_prefix)
  local reply, markers = {}, {}
  for _, key in ipairs(message_keys) do
    local text = redis.call('GET', key)
    local upto = false
    if text then
      local ok, message = pcall(cjson.decode, text)
      if ok and type(message) == 'table' and type(message.sender_email) == 'string'
          and type(message.receiver_email) == 'string' then
        local sender, receiver = message.sender_email, message.receiver_email
        local a, b = sender, receiver
        if sorts_before(receiver, sender) then
          a, b = receiver, sender
        end
        local conversation = conversation_prefix .. a .. ':' .. b
        markers[conversation] = markers[conversation] or {}
        upto = markers[conversation][receiver]
        if upto == nil then
          upto = redis.call('HGET', conversation, 'read_upto:' .. receiver)
          markers[conversation][receiver] = upto
        end
      end
    end
    reply[#reply + 1] = text
    reply[#reply + 1] = upto
  end
  return reply
end
"""

# KEYS: 1 conversation hash, 2 conversation message ids. ARGV: 1 the reader's email, 2 the
# message key prefix, 3 the peer's email. Returns false if the conversation has no message,
# else load_conversation's reply after marking.
MARK_READ: Final = (
    _LOAD_CONVERSATION
    + """
local last = redis.call('ZREVRANGE', KEYS[2], 0, 0)[1]
if not last then
  return false
end
local field = 'read_upto:' .. ARGV[1]
if tonumber(last) > tonumber(redis.call('HGET', KEYS[1], field) or '0') then
  redis.call('HSET', KEYS[1], field, last)
end
redis.call('HSET', KEYS[1], 'unread:' .. ARGV[1], 0)
return load_conversation(KEYS[1], ARGV[2], ARGV[1], ARGV[3])
"""
)

# One page of a message index, newest first. KEYS: 1 the index (a conversation's or a user's
# message ids), [2 the reader's account marker]. ARGV: 1 upper score bound ('+inf' or '(' ..
# id), 2 page size, 3 message key prefix, 4 conversation key prefix, [5 the reader's account
# id]. Returns false if KEYS[2] is given and does not name ARGV[5] (see owned), else {up to
# size + 1 ids below the bound (one more than the page says whether another follows),
# load_messages of the first size}.
MESSAGE_PAGE: Final = (
    _READ_ONLY
    + _OWNED
    + _LOAD_MESSAGES
    + """
if not owned(KEYS[2], ARGV[5]) then
  return false
end
local size = tonumber(ARGV[2])
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'LIMIT', 0, size + 1)
local page = {}
for i = 1, math.min(#ids, size) do
  page[i] = ARGV[3] .. ids[i]
end
return {ids, load_messages(page, ARGV[4])}
"""
)

# KEYS: message:{id} of each message wanted. ARGV: 1 conversation key prefix.
# Returns load_messages of KEYS, in order.
MESSAGES: Final = (
    _READ_ONLY
    + _LOAD_MESSAGES
    + """
return load_messages(KEYS, ARGV[1])
"""
)

# One page of a user's conversations, most recent first. KEYS: 1 the user's
# conversations_by_time, [2 the user's account marker]. ARGV: 1 upper score bound ('+inf' or
# '(' .. position), 2 page size, 3 message key prefix, 4 conversation key prefix, 5 the user's
# email, [6 the user's account id]. Returns false if KEYS[2] is given and does not name ARGV[6]
# (see owned), else {up to size + 1 (conversation key, position) pairs below the bound, flat;
# load_conversation of each of the first size}. A conversation key is the prefix and the two
# emails, sorted, joined by ':' (keys.conversation_key; emails hold no ':').
CONVERSATION_PAGE: Final = (
    _READ_ONLY
    + _OWNED
    + _LOAD_CONVERSATION
    + """
if not owned(KEYS[2], ARGV[6]) then
  return false
end
local size, me = tonumber(ARGV[2]), ARGV[5]
local entries = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'WITHSCORES',
  'LIMIT', 0, size + 1)
local loaded = {}
for i = 1, math.min(#entries / 2, size) do
  local key = entries[2 * i - 1]
  local pair = string.sub(key, #ARGV[4] + 1)
  local peer = string.sub(pair, 1, #pair - #me - 1)
  if string.sub(pair, 1, #me + 1) == me .. ':' then
    peer = string.sub(pair, #me + 2)
  end
  loaded[i] = load_conversation(key, ARGV[3], me, peer)
end
return {entries, loaded}
"""
)

# KEYS: 1 account:{email}. ARGV: 1 the caller's account id (32 hex digits).
# Returns {'ok'}, {'stale'} or {'erase', marker}: see claim (lua_snippets).
CLAIM: Final = (
    _CLAIM
    + """
local outcome, marker = claim(KEYS[1], ARGV[1])
if outcome == 'erase' then
  return {outcome, marker}
end
return {outcome}
"""
)

# A whole SendMessage in one round trip: idempotency, account ownership, rate limit, id,
# quota, the writes and the outbox event, atomically. The id is allocated here, so the
# message key is built from the prefix in ARGV (like the read scripts: a single instance).
# KEYS: 1 conversation hash, 2 conversation message ids, 3/4 sender's/receiver's conversation
#       set, 5/6 sender's/receiver's conversations_by_time, 7/8 sender's/receiver's message
#       ids, 9 outbox stream, 10 sender's stored bytes, 11 the id counter, 12/13 the sender's/
#       receiver's account marker, 14 the sender's send-rate counter, [15 idempotency key].
# ARGV: 1 message JSON after the id (records.message_tail), 2 receiver, 3 timestamp,
#       4 conversation key, 5 participants JSON, 6 idempotency record JSON after the id
#       (records.record_tail), 7 idempotency TTL (s), 8 sender's account id ('' = no claim),
#       9 receiver's account id ('' = no claim), 10 messages allowed per window ('' = no
#       limit), 11 window (s), 12 the sender's quota in bytes, 13 message key prefix, 14 outbox
#       field count, 15.. fields (the first pair is message_id; its value is replaced by the id).
# Checks in the order of the service: a used idempotency key first (free), then the sender's
# and the receiver's account (nothing counted yet), then the rate limit (a hit even when
# refused, as lua FIXED_WINDOW_HIT), then the quota. Returns {'duplicate', record},
# {'stale'} (the sender's account was deleted), {'erase', 'sender' or 'receiver'} (an earlier
# account's data must be erased first: nothing done; store.claim it, then send again),
# {'rate', seconds left}, {'taken'} (three ids in a row held a message: the counter went
# back), {'quota', stored bytes} or {'stored', id, read (0/1)}.
SEND_MESSAGE: Final = (
    OUTBOX_LUA
    + _CLAIM
    + _EARLIER_SEND
    + _CLAIM_SENDER
    + _RATE_HIT
    + _CONVERSATION_ADDED
    + _STORE_MESSAGE
    + """
local refused = earlier_send(KEYS[15], nil) or claim_sender(KEYS[12], ARGV[8])
if refused then
  return refused
end
if ARGV[9] ~= '' and claim(KEYS[13], ARGV[9]) == 'erase' then
  return {'erase', 'receiver'}
end
local wait = rate_hit(KEYS[14], ARGV[10], ARGV[11])
if wait then
  return {'rate', wait}
end
local id, message_key = nil, nil
for _ = 1, 3 do
  local next_id = string.format('%d', redis.call('INCR', KEYS[11]))
  if redis.call('EXISTS', ARGV[13] .. next_id) == 0 then
    id, message_key = next_id, ARGV[13] .. next_id
    break
  end
end
if not id then
  return {'taken'}
end
local document = '{"id":' .. id .. ',' .. ARGV[1]
local used = tonumber(redis.call('GET', KEYS[10]) or '0')
if used + string.len(document) > tonumber(ARGV[12]) then
  return {'quota', used}
end
local read = store_message({message_key, KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  KEYS[7], KEYS[8], KEYS[10]}, id, document, ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if KEYS[15] then
  redis.call('SET', KEYS[15], '{"message_id":' .. id .. ',' .. ARGV[6], 'EX', tonumber(ARGV[7]))
end
ARGV[16] = id
outbox_xadd(KEYS[9], ARGV, 14)
return {'stored', id, read}
"""
)

# KEYS: 1 account:{email}, then the email's per-account counters to reset with the new owner
# (user:{email}:stored_bytes, send_rate:{email}). ARGV: 1 the marker read before erasing, 2 the
# new marker. Returns 1 if the marker was still ARGV[1] and is now ARGV[2], else 0.
TAKE_OVER: Final = """
local marker = redis.call('GET', KEYS[1])
if (marker or '') ~= ARGV[1] then
  return 0
end
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""
