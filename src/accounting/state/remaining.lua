-- What is left of each budget window: drops lapsed reservations, then returns spent and
-- reserved (integer nano-USD) of each (see src/accounting/state/mod.rs).
-- KEYS: n pairs (window hash, its lapse zset). Returns {spent1, reserved1, spent2, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  for _, r in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    local held = redis.call('HGET', h, 'r:' .. r)
    if held then
      redis.call('HINCRBY', h, 'reserved', -tonumber(held))
      redis.call('HDEL', h, 'r:' .. r)
    end
    redis.call('ZREM', z, r)
  end
  local w = redis.call('HMGET', h, 'spent', 'reserved')
  table.insert(out, tonumber(w[1]) or 0)
  table.insert(out, tonumber(w[2]) or 0)
end
return out
