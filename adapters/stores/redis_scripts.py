"""The Lua scripts behind `adapters.stores.redis_store.RedisStore`: each one atomic step on Redis.

Every state change of an approval is one script, so it is atomic (the compare-and-set of
`decide`, single use of `consume`, exactly-once expiry) and publishes its wake-up in the same
step. The key layout they and the store share:

Keys (all under `prefix`, default "triplock:"; "{triplock}:" on Redis Cluster, so that every key and
the channel are in the one hash slot the scripts need: see `adapters.stores.redis_connect`):

    legs:<legs_key>        hash  leg -> expiry (unix s, or "inf"); the key expires with its last leg
    used:<first_use_key>   string "1"
    pins / pins:meta       hash  ["upstream","tool"] -> definition hash / {"by","at"}
    pins:defs              hash  definition hash -> the tool definition (JSON), what a pin approved
    susp                   hash  target id -> {"by","reason","at"}
    ap:<id>                hash  one approval, field per attribute (+ "_bind", its exact-call key
                                 [principal, upstream, tool, args hash], and "_tool", its tool key
                                 [principal, upstream, tool]; no session in either)
    ap:all, ap:st:<state>  zset  id scored by created_at: listing, newest first
    ap:due                 zset  pending and approved ids scored by expires_at: expiry sweeps
    ap:bind:<binding>      set   pending and approved ids for one exact call: find_pending/approved
    ap:tool:<tool key>     set   approved ids of scope principal_tool for one principal's tool
    health                 string: the health probe's last write
    events                 pub/sub channel: "d:<id>" decided, "s:<id>" suspended, "r:<id>" resumed,
                           "c:<instance>" legs or pins changed (other instances' caches re-read)
"""

# Shared by the approval scripts. ARGV[1] is always the prefix. `move` changes an approval's state,
# keeps the indexes in step and publishes the wake-up, all inside the calling script.
PRELUDE = """
local p = ARGV[1]
local function move(id, key, from, to)
  redis.call('ZREM', p .. 'ap:st:' .. from, id)
  redis.call('ZADD', p .. 'ap:st:' .. to, redis.call('HGET', key, 'created_at'), id)
  redis.call('HSET', key, 'state', to)
  if to ~= 'approved' then
    redis.call('ZREM', p .. 'ap:due', id)
    redis.call('SREM', p .. 'ap:bind:' .. redis.call('HGET', key, '_bind'), id)
    local tool = redis.call('HGET', key, '_tool')  -- absent on records written before scopes
    if tool then redis.call('SREM', p .. 'ap:tool:' .. tool, id) end
  end
  redis.call('PUBLISH', p .. 'events', 'd:' .. id)
end
"""

# KEYS[1] approval; ARGV prefix, id, created_at, expires_at, state, binding, field, value, ...
CREATE = PRELUDE + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('ZADD', p .. 'ap:all', ARGV[3], ARGV[2])
redis.call('ZADD', p .. 'ap:st:' .. ARGV[5], ARGV[3], ARGV[2])
if ARGV[5] == 'pending' or ARGV[5] == 'approved' then
  redis.call('ZADD', p .. 'ap:due', ARGV[4], ARGV[2])
  redis.call('SADD', p .. 'ap:bind:' .. ARGV[6], ARGV[2])
end
return 1
"""

# KEYS[1] approval; ARGV prefix, id, approve ('1'/'0'), approver, reason, now, scope, scope_until.
# Same order of checks and the same scope rule as gateway.ports.records.decide_transition (the scope
# is checked before the script runs). Returns {status, changed, fields}.
DECIDE = PRELUDE + """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'not_found', 0, {}} end
local st = redis.call('HGET', key, 'state')
if redis.call('HGET', key, 'principal') == ARGV[4] then return {'forbidden', 0, redis.call('HGETALL', key)} end
if st == 'expired' then return {'expired', 0, redis.call('HGETALL', key)} end
if st ~= 'pending' then return {'conflict', 0, redis.call('HGETALL', key)} end
if tonumber(redis.call('HGET', key, 'expires_at')) <= tonumber(ARGV[6]) then
  redis.call('HSET', key, 'decided_at', ARGV[6])
  move(ARGV[2], key, 'pending', 'expired')
  return {'expired', 1, redis.call('HGETALL', key)}
end
local to = 'denied'
if ARGV[3] == '1' then to = 'approved' end
redis.call('HSET', key, 'decided_by', ARGV[4], 'decided_at', ARGV[6], 'reason', ARGV[5])
if to == 'approved' then
  local untl = redis.call('HGET', key, 'expires_at')
  if ARGV[7] == 'principal_tool' then
    untl = ARGV[8]  -- the approver's minutes: the approval now lasts exactly that long
    redis.call('HSET', key, 'expires_at', untl)
    redis.call('ZADD', p .. 'ap:due', untl, ARGV[2])
    local tool = redis.call('HGET', key, '_tool')
    if tool then redis.call('SADD', p .. 'ap:tool:' .. tool, ARGV[2]) end
  end
  redis.call('HSET', key, 'scope', ARGV[7], 'scope_until', untl)
end
move(ARGV[2], key, 'pending', to)
return {to, 1, redis.call('HGETALL', key)}
"""

# KEYS[1] approval; ARGV at. Stamps abandoned_at on a pending approval once; returns its fields, or {}.
ABANDON = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return {} end
if redis.call('HEXISTS', KEYS[1], 'abandoned_at') == 1 then return {} end
redis.call('HSET', KEYS[1], 'abandoned_at', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] approval; ARGV prefix, id.
CONSUME = PRELUDE + """
if redis.call('HGET', KEYS[1], 'state') ~= 'approved' then return 0 end
move(ARGV[2], KEYS[1], 'approved', 'executed')
return 1
"""

# KEYS[1] the ap:due index (declared so a cluster routes the script to it; the script derives it from
# the prefix); ARGV prefix, now, batch size. Returns the ids this call expired (each id to exactly one caller).
EXPIRE = PRELUDE + """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'ap:due', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))) do
  local key = p .. 'ap:' .. id
  local st = redis.call('HGET', key, 'state')
  if st == 'pending' then
    redis.call('HSET', key, 'decided_at', ARGV[2])
    move(id, key, 'pending', 'expired')
    out[#out + 1] = id
  elseif st == 'approved' then
    move(id, key, 'approved', 'expired')
    out[#out + 1] = id
  else
    redis.call('ZREM', p .. 'ap:due', id)
  end
end
return out
"""

# The hot path in one command (a script: measurably cheaper in redis-py than a 3-command pipeline).
# KEYS legs hash, first-use key, pins hash; ARGV pin field. Returns {legs as [leg, expiry, ...], used, pin}.
CALL_STATE = """
return {redis.call('HGETALL', KEYS[1]), redis.call('EXISTS', KEYS[2]), redis.call('HGET', KEYS[3], ARGV[1])}
"""

# KEYS[1] legs hash; ARGV now, expiry ('inf' or unix s), events channel, message, leg, ... A leg's
# expiry only grows; legs that ran out are pruned, and the key lives as long as its longest-lived
# leg. The message tells other processes that legs changed (so their caches re-read).
ADD_LEGS = """
local key, now, new = KEYS[1], tonumber(ARGV[1]), ARGV[2]
redis.call('PUBLISH', ARGV[3], ARGV[4])
for i = 5, #ARGV do
  local old = redis.call('HGET', key, ARGV[i])
  local v = new
  if old == 'inf' then v = 'inf'
  elseif old and new ~= 'inf' and tonumber(old) > tonumber(new) then v = old end
  redis.call('HSET', key, ARGV[i], v)
end
local all, latest, forever = redis.call('HGETALL', key), 0, false
for i = 1, #all, 2 do
  local v = all[i + 1]
  if v == 'inf' then forever = true
  elseif tonumber(v) <= now then redis.call('HDEL', key, all[i])
  elseif tonumber(v) > latest then latest = tonumber(v) end
end
if forever then redis.call('PERSIST', key)
elseif latest > 0 then redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil(latest * 1000))) end
return 1
"""

# Writes that other processes must hear of, with their notice in the same atomic step (a script, not
# MULTI: redis-py refuses PUBLISH in a cluster pipeline).
# KEYS pins, pins:meta; ARGV field, definition hash, meta JSON, events channel, message.
SET_PIN = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS[1] susp; ARGV target id, record JSON ('' resumes: the record is deleted), events channel, message.
SUSPENSION = """
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


__all__ = ["ABANDON", "ADD_LEGS", "CALL_STATE", "CONSUME", "CREATE", "DECIDE", "EXPIRE", "SET_PIN", "SUSPENSION"]
