"""The Lua functions MessageService's scripts are built from, shared by the standalone layout's
scripts (services.message.lua) and the cluster layout's (services.message.cluster_lua).

A script is the text of the functions it calls followed by its body, so a function reads the
same in every script that uses it. Read state (``read_upto:{email}``, ``unread:{email}``) and
message ids (decimal strings, compared with tonumber) are as services.message.lua describes.
"""

from __future__ import annotations

from typing import Final

# conversation_added(conversation hash, its message ids, id, receiver, timestamp, participants
# JSON): the conversation hash after message `id` joined its message ids (participants if not
# set yet, last_sent_id and updated_at, last_message_id, message_count, the receiver's unread
# count): one HMGET of what it depends on, one HSET of every field it sets.
# Returns 1 if the message counts as read (its receiver had already read past its id), else 0.
_CONVERSATION_ADDED: Final = """
local function conversation_added(conv, ids, id, receiver, timestamp, participants)
  local nid = tonumber(id)
  local known = redis.call('HMGET', conv, 'last_sent_id', 'read_upto:' .. receiver,
    'participants')
  local fields = {'last_message_id', redis.call('ZREVRANGE', ids, 0, 0)[1],
    'message_count', redis.call('ZCARD', ids)}
  if not known[3] then
    fields[5], fields[6] = 'participants', participants
  end
  if nid > tonumber(known[1] or '0') then
    fields[#fields + 1], fields[#fields + 2] = 'last_sent_id', id
    fields[#fields + 1], fields[#fields + 2] = 'updated_at', timestamp
  end
  redis.call('HSET', conv, unpack(fields))
  if nid > tonumber(known[2] or '0') then
    redis.call('HINCRBY', conv, 'unread:' .. receiver, 1)
    return 0
  end
  return 1
end
"""

# conversation_removed(conversation hash, its message ids, id, receiver, messages left): the
# conversation hash after message `id` left its message ids and others remain
# (last_message_id, message_count, the receiver's unread count); updated_at is kept.
_CONVERSATION_REMOVED: Final = """
local function conversation_removed(conv, ids, id, receiver, left)
  redis.call('HSET', conv,
    'last_message_id', redis.call('ZREVRANGE', ids, 0, 0)[1],
    'message_count', left)
  if tonumber(id) > tonumber(redis.call('HGET', conv, 'read_upto:' .. receiver) or '0') then
    if tonumber(redis.call('HGET', conv, 'unread:' .. receiver) or '0') > 0 then
      redis.call('HINCRBY', conv, 'unread:' .. receiver, -1)
    end
  end
end
"""

# release_bytes(stored bytes key, charge): a charge given back to a user's stored bytes (the
# key goes when nothing is left).
_RELEASE_BYTES: Final = """
local function release_bytes(key, charge)
  local used = tonumber(redis.call('GET', key) or '0')
  if used > tonumber(charge) then
    redis.call('DECRBY', key, charge)
  else
    redis.call('DEL', key)
  end
end
"""

# earlier_send(idempotency key (nil = none), pending marker (nil = none)): what an earlier
# send with the key says. Returns nil (no earlier send: go on), {'pending'} (it is still being
# stored) or {'duplicate', its record}.
_EARLIER_SEND: Final = """
local function earlier_send(key, pending)
  if not key then
    return nil
  end
  local existing = redis.call('GET', key)
  if not existing then
    return nil
  elseif existing == pending then
    return {'pending'}
  end
  return {'duplicate', existing}
end
"""

# rate_hit(counter key, messages allowed per window ('' = no limit), window (s)): one hit on
# the sender's fixed-window counter (as FIXED_WINDOW_HIT_LUA, counted even when refused).
# Returns the seconds left in the window if the hit is over the limit, else nil. The first hit
# sets the expiry; the TTL is read only for a refusal (which also gives an expiry to a counter
# found without one).
_RATE_HIT: Final = """
local function rate_hit(key, allowed, window)
  if allowed == '' then
    return nil
  end
  local count = redis.call('INCR', key)
  if count == 1 then
    redis.call('EXPIRE', key, window)
  end
  if count > tonumber(allowed) then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then
      redis.call('EXPIRE', key, window)
      ttl = tonumber(window)
    end
    return ttl
  end
  return nil
end
"""

# marker_owner(account marker): the account id it names and whether that account's data was
# erased (the marker ends in ':erased').
_MARKER_OWNER: Final = """
local function marker_owner(marker)
  if string.sub(marker, -7) == ':erased' then
    return string.sub(marker, 1, -8), true
  end
  return marker, false
end
"""

# claim(account key, account id): account ownership of the data keyed by one email (CLAIM,
# SEND_MESSAGE; NotificationService has its own). Returns 'ok' (owned by this account, or now
# claimed for it), 'stale' (the caller's account was deleted: its data is erased or a later
# account owns the email) or 'erase', marker (an earlier, deleted account's data is still
# here: erase it, then TAKE_OVER from `marker`). Ids sort by creation, so a later account
# never loses to an earlier one.
_CLAIM: Final = (
    _MARKER_OWNER
    + """
local function claim(account_key, account_id)
  local marker = redis.call('GET', account_key)
  if not marker then
    redis.call('SET', account_key, account_id)
    return 'ok'
  end
  local owner, erased = marker_owner(marker)
  if owner == account_id then
    if erased then
      return 'stale'
    end
    return 'ok'
  end
  if owner > account_id then
    return 'stale'
  end
  return 'erase', marker
end
"""
)

# claim_sender(account key, the sender's account id ('' = no claim)): claim for the sender of a
# send. Returns nil (go on), else the script's reply: {'stale'} (the sender's account was
# deleted) or {'erase', 'sender'} (an earlier account's data must be erased first).
_CLAIM_SENDER: Final = """
local function claim_sender(account_key, account_id)
  if account_id == '' then
    return nil
  end
  local outcome = claim(account_key, account_id)
  if outcome == 'stale' then
    return {'stale'}
  elseif outcome == 'erase' then
    return {'erase', 'sender'}
  end
  return nil
end
"""

# The first line of a script that only reads (the server refuses a write in it).
_READ_ONLY: Final = "#!lua flags=no-writes\n"

# load_conversation(key, message prefix, reader, peer): false once the conversation is gone,
# else {message_count, updated_at, unread:reader, read_upto:reader, read_upto:peer (each false
# if unset; records.CONVERSATION_STATE), the JSON of its last message (false if it is gone)}.
_LOAD_CONVERSATION: Final = """
local function load_conversation(conversation, message_prefix, reader, peer)
  local f = redis.call('HMGET', conversation, 'last_message_id', 'message_count', 'updated_at',
    'unread:' .. reader, 'read_upto:' .. reader, 'read_upto:' .. peer)
  if not (f[1] or f[2] or f[3]) then
    return false
  end
  local last = f[1] and redis.call('GET', message_prefix .. f[1]) or false
  return {f[2], f[3], f[4], f[5], f[6], last}
end
"""

# owned(account key or nil, account id): whether the caller's account owns the data the page
# is read from: true without an account key (no check: the caller claimed it, or is a
# service), else whether the marker is exactly the account id. Anything else (no marker yet,
# an earlier account's data, an erased or later account) is left to the service's claim
# (CLAIM, which may write): the page scripts stay read-only and answer false for it.
_OWNED: Final = """
local function owned(account_key, account_id)
  return not account_key or redis.call('GET', account_key) == account_id
end
"""
