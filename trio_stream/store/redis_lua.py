"""The Lua scripts of the Redis store: the writes that must be atomic.

Each script touches the keys of one session only (they share its hash tag), or the
epoch's key alone, so that it runs on one master of a Redis Cluster.
"""

from typing import Final

# KEYS: meta, stream. ARGV: first offset, last offset, activity, the channel that hears
# of appends, then per chunk its id, f, n, lo, hi and body. Publishes the last offset on
# the channel once the batch is stored (hubs following the session wake up). Returns
# {0, last}, {1, last} (this very batch is stored already: a retry after a reply lost to a
# timeout), {-1} (unknown session) or {-2, last} (the batch does not follow). A gap is
# accepted only by a session holding no events (an import of a trimmed session): its
# floor moves up to it, so offsets stay dense above the floor.
APPEND: Final = """
local cur = redis.call('HMGET', KEYS[1], 'last', 'floor', 'last_activity')
if not cur[1] then return {-1} end
local last = tonumber(cur[1])
local first = tonumber(ARGV[1])
if first <= last then
  local stored = redis.call('XRANGE', KEYS[2], ARGV[#ARGV - 5], ARGV[#ARGV - 5])
  if stored[1] then
    local fields = stored[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'b' and fields[i + 1] == ARGV[#ARGV] then return {1, last} end
    end
  end
  return {-2, last}
end
if first ~= last + 1 then
  if last ~= tonumber(cur[2]) then return {-2, last} end
  redis.call('HSET', KEYS[1], 'floor', first - 1)
  redis.call('DEL', KEYS[2])
end
for i = 5, #ARGV, 6 do
  redis.call('XADD', KEYS[2], ARGV[i], 'f', ARGV[i + 1], 'n', ARGV[i + 2],
             'lo', ARGV[i + 3], 'hi', ARGV[i + 4], 'b', ARGV[i + 5])
end
redis.call('HSET', KEYS[1], 'last', ARGV[2])
if tonumber(ARGV[3]) > tonumber(cur[3]) then
  redis.call('HSET', KEYS[1], 'last_activity', ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return {0, tonumber(ARGV[2])}
"""

# KEYS: meta, stream. ARGV: field, value, ... Returns 1, or 0 when the id is taken.
CREATE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: meta. ARGV: field, value, ... Returns the hash, or nil for an unknown session.
UPDATE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], unpack(ARGV))
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: meta, stream. ARGV: events to keep (-1: none, keeping the offsets). Returns how
# many were forgotten, or -1 for an unknown session.
TRIM: Final = """
local cur = redis.call('HMGET', KEYS[1], 'last', 'floor')
if not cur[1] then return -1 end
local last, floor = tonumber(cur[1]), tonumber(cur[2])
local keep = tonumber(ARGV[1])
local new_floor = last - math.max(keep, 0)
if new_floor <= floor then return 0 end
redis.call('HSET', KEYS[1], 'floor', new_floor)
if keep <= 0 then
  redis.call('DEL', KEYS[2])
else
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', new_floor + 2))
end
return new_floor - floor
"""

# KEYS: meta, stream. Returns 1, or 0 for an unknown session.
DESTROY: Final = """
return redis.call('DEL', KEYS[1], KEYS[2]) > 0 and 1 or 0
"""

# KEYS: epoch. ARGV: a new epoch, kept if there is none. Returns the epoch.
EPOCH: Final = """
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

SCRIPTS: Final = {
    "append": APPEND,
    "create": CREATE,
    "update": UPDATE,
    "trim": TRIM,
    "destroy": DESTROY,
    "epoch": EPOCH,
}
