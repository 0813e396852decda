"""The Lua scripts that make each multi-key write of NotificationService atomic (one script each).

Every key a script touches arrives in KEYS. A stored notification is compact JSON with ``id``
first and ``read`` last, so the scripts find one by id and flip its ``read`` flag by comparing a
prefix and a suffix, without decoding and re-encoding JSON (Lua's cjson would round 19-digit
message ids to doubles).
"""

from __future__ import annotations

from typing import Final

from services.common.outbox import OUTBOX_LUA

# Account ownership of one email's list and subscription: claim(KEYS of account marker, list,
# subscriptions hash; the email; the account id) returns 'ok' (owned by that account, or now
# claimed for it - the data of an earlier, deleted account erased first) or 'stale' (that
# account was deleted: a later one owns the email, or its data was erased). Account ids sort
# by creation, so a later account never loses to an earlier one.
_OWNERSHIP: Final = """
local function claim(marker_key, list_key, subscriptions_key, email, account_id)
  local marker = redis.call('GET', marker_key)
  if marker then
    local owner, erased = marker, false
    if string.sub(marker, -7) == ':erased' then
      owner, erased = string.sub(marker, 1, -8), true
    end
    if owner == account_id then
      if erased then
        return 'stale'
      end
      return 'ok'
    end
    if owner > account_id then
      return 'stale'
    end
    redis.call('DEL', list_key)
    redis.call('HDEL', subscriptions_key, email)
  end
  redis.call('SET', marker_key, account_id)
  return 'ok'
end
"""

# KEYS: 1 account marker, 2 the list, 3 subscriptions hash. ARGV: 1 email, 2 account id.
CLAIM: Final = (
    _OWNERSHIP
    + """
return claim(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
"""
)

# KEYS: 1 account marker, 2 the list, 3 subscriptions hash. ARGV: 1 email, 2 the deleted
# account's id ('' for one from before ids: only unclaimed data is erased).
# Returns the number of notifications removed, or -1 if a later account owns the email.
ERASE: Final = """
local marker = redis.call('GET', KEYS[1])
if marker then
  local owner = marker
  if string.sub(marker, -7) == ':erased' then
    owner = string.sub(marker, 1, -8)
  end
  if ARGV[2] == '' or owner > ARGV[2] then
    return -1
  end
end
local erased = redis.call('LLEN', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2] .. ':erased')
end
return erased
"""

# create(k, first, argv, retention, dedupe TTL, unsubscribed value): one notification.
# k: its keys from KEYS[first] on: dedupe key, subscriptions hash, receiver's list, outbox
# stream, receiver's account marker. argv: receiver email, notification JSON, id prefix,
# notification id, the receiver's account id (or ''), then the outbox event
# (delivery.outbox_lua_args) from argv[6] on. Returns {'duplicate'[, stored item]}, {'gone'},
# {'unsubscribed'} or {'created', JSON}.
_CREATE_ONE: Final = """
local function create(k, argv, retention, dedupe_ttl, unsubscribed)
  local existing = redis.call('GET', k[1])
  if existing then
    local prefix = argv[3]
    for _, item in ipairs(redis.call('LRANGE', k[3], 0, -1)) do
      if string.sub(item, 1, #prefix) == prefix then
        return {'duplicate', item}
      end
    end
    return {'duplicate'}
  end
  if argv[5] ~= '' and claim(k[5], k[3], k[2], argv[1], argv[5]) == 'stale' then
    return {'gone'}
  end
  if redis.call('HGET', k[2], argv[1]) == unsubscribed then
    return {'unsubscribed'}
  end
  redis.call('LPUSH', k[3], argv[2])
  redis.call('LTRIM', k[3], 0, retention - 1)
  redis.call('SET', k[1], argv[4], 'EX', dedupe_ttl)
  outbox_xadd(k[4], argv, 6)
  return {'created', argv[2]}
end
"""

# KEYS: 1 dedupe key, 2 subscriptions hash, 3 receiver's list, 4 outbox stream, 5 receiver's
#       account marker.
# ARGV: 1 retention, 2 dedupe TTL (s), 3 the "unsubscribed" hash value, 4 receiver email,
#       5 notification JSON, 6 id prefix, 7 notification id, 8 the receiver's account id (or
#       ''), 9.. the outbox event (delivery.outbox_lua_args).
# Returns create's reply.
CREATE: Final = (
    OUTBOX_LUA
    + _OWNERSHIP
    + _CREATE_ONE
    + """
return create(KEYS, {unpack(ARGV, 4)}, tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
"""
)

# Several notifications in one round trip, each exactly as CREATE would store it, in order (a
# repeat within the batch is a duplicate of the first). KEYS: the five keys of CREATE per item.
# ARGV: 1 retention, 2 dedupe TTL (s), 3 the "unsubscribed" hash value, then per item the
# arguments of CREATE from its 4th on, preceded by their count. Returns create's reply per item.
CREATE_MANY: Final = (
    OUTBOX_LUA
    + _OWNERSHIP
    + _CREATE_ONE
    + """
local retention, dedupe_ttl, unsubscribed = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local replies, at = {}, 4
for item = 0, #KEYS / 5 - 1 do
  local n = tonumber(ARGV[at])
  local k = {KEYS[5 * item + 1], KEYS[5 * item + 2], KEYS[5 * item + 3], KEYS[5 * item + 4],
    KEYS[5 * item + 5]}
  replies[#replies + 1] = create(k, {unpack(ARGV, at + 1, at + n)}, retention, dedupe_ttl,
    unsubscribed)
  at = at + n + 1
end
return replies
"""
)

# KEYS: 1 the user's list. ARGV: 1 id prefix, 2 unread suffix, 3 read suffix.
# Returns the notification (now read), or false when the list has no such id.
MARK_READ: Final = """
local prefix, unread, read = ARGV[1], ARGV[2], ARGV[3]
for i, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, #prefix) == prefix then
    local keep = #item - #unread
    if keep >= 0 and string.sub(item, keep + 1) == unread then
      local updated = string.sub(item, 1, keep) .. read
      redis.call('LSET', KEYS[1], i - 1, updated)
      return updated
    end
    return item
  end
end
return false
"""

# KEYS: 1 the user's list. ARGV: 1 unread suffix, 2 read suffix. Returns how many changed.
MARK_ALL_READ: Final = """
local unread, read = ARGV[1], ARGV[2]
local marked = 0
for i, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local keep = #item - #unread
  if keep >= 0 and string.sub(item, keep + 1) == unread then
    redis.call('LSET', KEYS[1], i - 1, string.sub(item, 1, keep) .. read)
    marked = marked + 1
  end
end
return marked
"""

# One page of a user's list, newest first, in one round trip (reads only).
# KEYS: 1 the user's list, [2 the user's account marker]. ARGV: 1 unread suffix, 2 read
# suffix, 3 '1' for unread ones only, 4 offset (among the listed ones), 5 page size, 6 the
# prefix every stored item starts with, [7 the reader's account id].
# Returns false if KEYS[2] is given and does not hold exactly ARGV[7] (no marker yet, an
# earlier account's data, an erased or later account: the caller runs CLAIM, which may write,
# then reads the page without the check), else {how many are listed, how many are unread, how
# many items are not in the stored form (the caller then reads the list itself), the page's
# items}.
PAGE: Final = """#!lua flags=no-writes
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[7] then
  return false
end
local unread_suffix, read_suffix, start = ARGV[1], ARGV[2], ARGV[6]
local unread_only = ARGV[3] == '1'
local first = tonumber(ARGV[4])
local after = first + tonumber(ARGV[5])
local listed, unread, unknown, page = 0, 0, 0, {}
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local is_unread = string.sub(item, -#unread_suffix) == unread_suffix
  if string.sub(item, 1, #start) ~= start or not (is_unread
      or string.sub(item, -#read_suffix) == read_suffix) then
    unknown = unknown + 1
  else
    if is_unread then
      unread = unread + 1
    end
    if is_unread or not unread_only then
      if listed >= first and listed < after then
        page[#page + 1] = item
      end
      listed = listed + 1
    end
  end
end
return {listed, unread, unknown, page}
"""
