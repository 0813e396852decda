"""The Lua scripts of UserService: each multi-key write atomic (one script each), and a page of
users read in one round trip.

Every key a write script touches arrives in KEYS; nothing is derived inside them. The page
script only reads (``flags=no-writes``) and builds ``user:{email}`` from the emails it finds in
the index, with the prefix in ARGV.
"""

from __future__ import annotations

from typing import Final

from services.common.outbox import OUTBOX_LUA

# The document and its index entry are written together or not at all.
CREATE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
"""

# Removes both, if the document is still the one read (ARGV[2]), with the account's sign-in
# back-off and known clients (KEYS[4], KEYS[5]: a later account of the email starts afresh),
# and records the deleted account in the outbox (KEYS[3]) so the other services erase its data.
# The ZREM also repairs an index entry left without its document.
DELETE: Final = (
    OUTBOX_LUA
    + """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if current ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[2], ARGV[1])
outbox_xadd(KEYS[3], ARGV, 3)
return 1
"""
)

# Compare-and-set on the whole document, so a concurrent change or deletion is never overwritten.
REPLACE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


# Sign-in admission, checked and reserved atomically so parallel guesses cannot exceed a limit.
# KEYS: 1 login_clients:{client}, 2 login_failures:{email}:{client}, 3 login_account:{email},
#       4 login_known:{email}.
# ARGV: 1 client limit, 2 client window s, 3 pair limit, 4 pair window s, 5 free account
#       failures, 6 base delay ms, 7 max delay ms, 8 account window s, 9 client host.
# Each admitted attempt is counted as a failure in advance; LOGIN_SUCCEEDED takes it back.
# Returns {1} (admitted) or {0, retry_after_seconds, scope}.
LOGIN_ADMIT: Final = """
local function remaining(key)
  local ttl = redis.call('TTL', key)
  if ttl < 1 then return 1 end
  return ttl
end
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  return {0, remaining(KEYS[1]), 'client'}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[3]) then
  return {0, remaining(KEYS[2]), 'pair'}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local known = redis.call('SISMEMBER', KEYS[4], ARGV[9]) == 1
local failures = tonumber(redis.call('HGET', KEYS[3], 'failures') or '0')
if not known then
  local untl = tonumber(redis.call('HGET', KEYS[3], 'until_ms') or '0')
  if untl > now then
    return {0, math.ceil((untl - now) / 1000), 'account'}
  end
end
local free = tonumber(ARGV[5])
if failures >= free then
  local delay = tonumber(ARGV[6]) * (2 ^ math.min(failures - free, 30))
  delay = math.min(delay, tonumber(ARGV[7]))
  redis.call('HSET', KEYS[3], 'until_ms', now + delay)
end
redis.call('HINCRBY', KEYS[3], 'failures', 1)
redis.call('EXPIRE', KEYS[3], ARGV[8])
for _, spec in ipairs({{KEYS[1], ARGV[2]}, {KEYS[2], ARGV[4]}}) do
  redis.call('INCR', spec[1])
  if redis.call('TTL', spec[1]) < 0 then
    redis.call('EXPIRE', spec[1], spec[2])
  end
end
return {1}
"""

# A verified password: the attempt was not a failure after all.
# KEYS: 1 login_clients:{client}, 2 login_failures:{email}:{client}, 3 login_account:{email},
#       4 login_known:{email}. ARGV: 1 client host, 2 most known clients, 3 known-client TTL s.
LOGIN_SUCCEEDED: Final = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SADD', KEYS[4], ARGV[1])
if redis.call('SCARD', KEYS[4]) > tonumber(ARGV[2]) then
  for _, other in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    if other ~= ARGV[1] and redis.call('SCARD', KEYS[4]) > tonumber(ARGV[2]) then
      redis.call('SREM', KEYS[4], other)
    end
  end
end
redis.call('EXPIRE', KEYS[4], ARGV[3])
return 1
"""

# One page of users in email order. KEYS: 1 the users index. ARGV: 1 first rank, 2 last rank,
# 3 the user key prefix. Returns {how many users the index holds, the document of each email
# at those ranks (false for an index entry without its document)}.
LIST_PAGE: Final = """#!lua flags=no-writes
local emails = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2])
local documents = {}
for i, email in ipairs(emails) do
  documents[i] = redis.call('GET', ARGV[3] .. email)
end
return {redis.call('ZCARD', KEYS[1]), documents}
"""


# The cluster layout's sign-in admission and success, split by slot (see services.user.keys):
# the client's counter is in the client's slot, the account's keys in the email's bucket.

# Reserves one failure of the client host first. KEYS: 1 u:login_clients:{client}.
# ARGV: 1 client limit, 2 client window s. Returns {1} (reserved) or {0, retry_after, 'client'}.
CLIENT_ADMIT: Final = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return {0, ttl, 'client'}
end
redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {1}
"""

# Gives back one failure of the client host: the account refused the attempt it reserved, or
# its password matched. KEYS: 1 u:login_clients:{client}.
CLIENT_REFUND: Final = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 1
"""

# LOGIN_ADMIT's account part, once the client's failure is reserved.
# KEYS: 1 login_failures, 2 login_account, 3 login_known (all of the email's bucket).
# ARGV: 1 pair limit, 2 pair window s, 3 free account failures, 4 base delay ms, 5 max delay
#       ms, 6 account window s, 7 client host.
# Returns {1} (admitted) or {0, retry_after_seconds, scope}.
ACCOUNT_ADMIT: Final = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return {0, ttl, 'pair'}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local known = redis.call('SISMEMBER', KEYS[3], ARGV[7]) == 1
local failures = tonumber(redis.call('HGET', KEYS[2], 'failures') or '0')
if not known then
  local untl = tonumber(redis.call('HGET', KEYS[2], 'until_ms') or '0')
  if untl > now then
    return {0, math.ceil((untl - now) / 1000), 'account'}
  end
end
local free = tonumber(ARGV[3])
if failures >= free then
  local delay = tonumber(ARGV[4]) * (2 ^ math.min(failures - free, 30))
  delay = math.min(delay, tonumber(ARGV[5]))
  redis.call('HSET', KEYS[2], 'until_ms', now + delay)
end
redis.call('HINCRBY', KEYS[2], 'failures', 1)
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {1}
"""

# LOGIN_SUCCEEDED's account part. KEYS: 1 login_failures, 2 login_account, 3 login_known.
# ARGV: 1 client host, 2 most known clients, 3 known-client TTL s.
ACCOUNT_SUCCEEDED: Final = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
if redis.call('SCARD', KEYS[3]) > tonumber(ARGV[2]) then
  for _, other in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if other ~= ARGV[1] and redis.call('SCARD', KEYS[3]) > tonumber(ARGV[2]) then
      redis.call('SREM', KEYS[3], other)
    end
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""
