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
``unread:{email}`` counts the received messages above it. Because ids are taken (INCR) before
the store script runs, a send may commit after a MarkConversationRead that already covers its
id: it is then stored as read and not counted, which keeps the flag and the count consistent.
"""

from __future__ import annotations

from typing import Final

from services.common.outbox import OUTBOX_LUA

# KEYS: 1 message:{id}, 2 conversation hash, 3 conversation message ids,
#       4/5 sender's/receiver's conversation set, 6/7 sender's/receiver's conversations_by_time,
#       8/9 sender's/receiver's message ids, 10 outbox stream, 11 sender's stored bytes,
#       [12 idempotency key].
# ARGV: 1 id, 2 message JSON, 3 receiver, 4 timestamp, 5 conversation key, 6 participants JSON,
#       7 idempotency record JSON, 8 idempotency TTL (s), 9 outbox field count, 10.. fields,
#       last: the sender's quota in bytes.
# Returns {'duplicate', record} (the key was used meanwhile; nothing written), {'taken'} (the id
# already holds a message; nothing written), {'quota', stored bytes} (the message would take the
# sender over the quota; nothing written) or {'stored', read (0/1)}.
SEND: Final = (
    OUTBOX_LUA
    + """
if KEYS[12] then
  local existing = redis.call('GET', KEYS[12])
  if existing then
    return {'duplicate', existing}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'taken'}
end
local used = tonumber(redis.call('GET', KEYS[11]) or '0')
if used + string.len(ARGV[2]) > tonumber(ARGV[#ARGV]) then
  return {'quota', used}
end
redis.call('INCRBY', KEYS[11], string.len(ARGV[2]))
local id, receiver, conv = ARGV[1], ARGV[3], KEYS[2]
local nid = tonumber(id)
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[3], id, id)
redis.call('HSETNX', conv, 'participants', ARGV[6])
if nid > tonumber(redis.call('HGET', conv, 'last_sent_id') or '0') then
  redis.call('HSET', conv, 'last_sent_id', id, 'updated_at', ARGV[4])
end
redis.call('HSET', conv,
  'last_message_id', redis.call('ZREVRANGE', KEYS[3], 0, 0)[1],
  'message_count', redis.call('ZCARD', KEYS[3]))
local read = 1
if nid > tonumber(redis.call('HGET', conv, 'read_upto:' .. receiver) or '0') then
  redis.call('HINCRBY', conv, 'unread:' .. receiver, 1)
  read = 0
end
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('SADD', KEYS[5], ARGV[5])
redis.call('ZADD', KEYS[6], 'GT', id, ARGV[5])
redis.call('ZADD', KEYS[7], 'GT', id, ARGV[5])
redis.call('ZADD', KEYS[8], id, id)
redis.call('ZADD', KEYS[9], id, id)
if KEYS[12] then
  redis.call('SET', KEYS[12], ARGV[7], 'EX', tonumber(ARGV[8]))
end
outbox_xadd(KEYS[10], ARGV, 9)
return {'stored', read}
"""
)

# KEYS: 1 message:{id}, 2 conversation hash, 3 conversation message ids,
#       4/5 sender's/receiver's message ids, 6/7 sender's/receiver's conversation set,
#       8/9 sender's/receiver's conversations_by_time, 10 sender's stored bytes.
# ARGV: 1 id, 2 receiver, 3 conversation key.
# Returns 0 if the message no longer exists, else 1. The last message of a conversation takes
# the conversation with it (hash deleted, removed from both users' lists); updated_at and the
# list order are kept otherwise.
DELETE: Final = """
local document = redis.call('GET', KEYS[1])
if not document then
  return 0
end
redis.call('DEL', KEYS[1])
local used = tonumber(redis.call('GET', KEYS[10]) or '0')
if used > string.len(document) then
  redis.call('DECRBY', KEYS[10], string.len(document))
else
  redis.call('DEL', KEYS[10])
end
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
redis.call('HSET', conv,
  'last_message_id', redis.call('ZREVRANGE', KEYS[3], 0, 0)[1],
  'message_count', left)
if tonumber(id) > tonumber(redis.call('HGET', conv, 'read_upto:' .. receiver) or '0') then
  if tonumber(redis.call('HGET', conv, 'unread:' .. receiver) or '0') > 0 then
    redis.call('HINCRBY', conv, 'unread:' .. receiver, -1)
  end
end
return 1
"""

_READ_ONLY: Final = "#!lua flags=no-writes\n"

# load_conversation(key, message prefix): {the hash (HGETALL, flat), the JSON of its last
# message}; {{}, false} once the conversation is gone, {fields, false} if the last message is.
_LOAD_CONVERSATION: Final = """
local function load_conversation(conversation, message_prefix)
  local fields = redis.call('HGETALL', conversation)
  local last = false
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'last_message_id' then
      last = redis.call('GET', message_prefix .. fields[i + 1])
    end
  end
  return {fields, last}
end
"""

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
# message key prefix. Returns false if the conversation has no message, else
# load_conversation's reply after marking.
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
return load_conversation(KEYS[1], ARGV[2])
"""
)

# One page of a message index, newest first. KEYS: 1 the index (a conversation's or a user's
# message ids). ARGV: 1 upper score bound ('+inf' or '(' .. id), 2 page size, 3 message key
# prefix, 4 conversation key prefix. Returns {up to size + 1 ids below the bound (one more
# than the page says whether another follows), load_messages of the first size}.
MESSAGE_PAGE: Final = (
    _READ_ONLY
    + _LOAD_MESSAGES
    + """
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
# conversations_by_time. ARGV: 1 upper score bound ('+inf' or '(' .. position), 2 page size,
# 3 message key prefix. Returns {up to size + 1 (conversation key, position) pairs below the
# bound, flat; load_conversation of each of the first size}.
CONVERSATION_PAGE: Final = (
    _READ_ONLY
    + _LOAD_CONVERSATION
    + """
local size = tonumber(ARGV[2])
local entries = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'WITHSCORES',
  'LIMIT', 0, size + 1)
local loaded = {}
for i = 1, math.min(#entries / 2, size) do
  loaded[i] = load_conversation(entries[2 * i - 1], ARGV[3])
end
return {entries, loaded}
"""
)

# KEYS: conversation hashes. ARGV: 1 message key prefix.
# Returns load_conversation of each, in order.
CONVERSATIONS: Final = (
    _READ_ONLY
    + _LOAD_CONVERSATION
    + """
local loaded = {}
for i, conversation in ipairs(KEYS) do
  loaded[i] = load_conversation(conversation, ARGV[1])
end
return loaded
"""
)

# Account ownership of the data keyed by one email (shared by CLAIM and NotificationService).
# KEYS: 1 account:{email}. ARGV: 1 the caller's account id (32 hex digits).
# Returns {'ok'} (owned by this account, or now claimed for it), {'stale'} (the caller's
# account was deleted: its data is erased or a later account owns the email) or
# {'erase', marker} (an earlier, deleted account's data is still here: erase it, then
# TAKE_OVER from `marker`). Ids sort by creation, so a later account never loses to an
# earlier one.
CLAIM: Final = """
local marker = redis.call('GET', KEYS[1])
if not marker then
  redis.call('SET', KEYS[1], ARGV[1])
  return {'ok'}
end
local owner, erased = marker, false
if string.sub(marker, -7) == ':erased' then
  owner, erased = string.sub(marker, 1, -8), true
end
if owner == ARGV[1] then
  if erased then
    return {'stale'}
  end
  return {'ok'}
end
if owner > ARGV[1] then
  return {'stale'}
end
return {'erase', marker}
"""

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
