-- Functions shared by the state store's scripts, prepended to each of them
-- (src/accounting/state/redis_store.rs). Times are the server's, in ms; money is integer nano-USD.

-- The server's clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Gives back reservation r of the budget window hash h (with its lapse zset z), if h holds it.
local function release(h, z, r)
  local held = redis.call('HGET', h, 'r:' .. r)
  if held then
    redis.call('HINCRBY', h, 'reserved', -tonumber(held))
    redis.call('HDEL', h, 'r:' .. r)
  end
  redis.call('ZREM', z, r)
end

-- Gives back the reservations of a window that lapsed by now.
local function lapse(h, z, now)
  for _, r in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    release(h, z, r)
  end
end

-- A token bucket's level now, refilled at per_minute a minute up to per_minute (a missing
-- bucket is full), and whether the bucket existed.
local function refill(key, per_minute, now)
  local b = redis.call('HMGET', key, 'level', 'at')
  local level = tonumber(b[1]) or per_minute
  local at = tonumber(b[2]) or now
  if now > at then
    level = math.min(per_minute, level + (now - at) * per_minute / 60000)
  end
  return level, b[1] ~= false
end


-- Stores a token bucket's level at now. The key lives until the bucket would be full again
-- (a full bucket is the same as none), and a second more: a bucket in debt (a request used more
-- tokens than it reserved) keeps its debt until it is paid back.
local function store_level(key, level, per_minute, now)
  redis.call('HSET', key, 'level', level, 'at', now)
  local refill_ms = math.ceil((per_minute - level) * 60000 / per_minute)
  redis.call('PEXPIRE', key, math.max(refill_ms, 0) + 1000)
end
