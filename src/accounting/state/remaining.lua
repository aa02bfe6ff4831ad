-- What is left of each budget window: drops lapsed reservations, then returns spent and
-- reserved (integer nano-USD) of each (see src/accounting/state/mod.rs). Prepended: common.lua.
-- KEYS: n pairs (window hash, its lapse zset). Returns {spent1, reserved1, spent2, ...}.
local now = now_ms()
local out = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  lapse(h, z, now)
  local w = redis.call('HMGET', h, 'spent', 'reserved')
  table.insert(out, tonumber(w[1]) or 0)
  table.insert(out, tonumber(w[2]) or 0)
end
return out
