-- Admission of one request step, atomically (see src/accounting/state/mod.rs):
--   1. refill the caller's token buckets to now and check them; a bucket short of what the
--      request needs refuses it before anything is taken;
--   2. take one request and the prompt estimate from them;
--   3. drop lapsed reservations, give back this ticket's own earlier reservation, and reserve
--      the amount in every budget window, unless one cannot take it.
-- Times are the server's (TIME), in ms; money is integer nano-USD. Prepended: common.lua.
--
-- KEYS: nb pairs (window hash, its lapse zset), then nr bucket hashes.
--   window hash: spent, reserved, r:<id> = amount; lapse zset: <id> scored by its lapse time.
--   bucket hash: level, at.
-- ARGV: id, amount (0: reserve nothing), ttl_ms, nb, nr, release (1: the ticket may hold an
--   earlier reservation in these windows), then per window: limit, key_ttl_ms;
--   then per bucket: per_minute, need, take.
-- Returns {0} admitted; {1, bucket, wait_ms} a rate limit refused (nothing taken);
--   {2, window, spent, reserved} a budget refused (the rate was taken, nothing reserved).
local now = now_ms()
local id = ARGV[1]
local amount = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
local nr = tonumber(ARGV[5])
local release_own = ARGV[6] == '1'
local wa = 7
local ra = 7 + 2 * nb

local levels = {}
for i = 1, nr do
  local key = KEYS[2 * nb + i]
  local per_minute = tonumber(ARGV[ra + 3 * (i - 1)])
  local need = tonumber(ARGV[ra + 3 * (i - 1) + 1])
  local level = refill(key, per_minute, now)
  if level < need then
    return {1, i, math.ceil((need - level) * 60000 / per_minute)}
  end
  levels[i] = level
end
for i = 1, nr do
  local key = KEYS[2 * nb + i]
  local per_minute = tonumber(ARGV[ra + 3 * (i - 1)])
  local take = tonumber(ARGV[ra + 3 * (i - 1) + 2])
  store_level(key, levels[i] - take, per_minute, now)
end

for i = 1, nb do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  lapse(h, z, now)
  if release_own then
    release(h, z, id)
  end
end
if amount <= 0 then
  return {0}
end
for i = 1, nb do
  local h = KEYS[2 * i - 1]
  local w = redis.call('HMGET', h, 'spent', 'reserved')
  local spent = tonumber(w[1]) or 0
  local reserved = tonumber(w[2]) or 0
  if spent + reserved + amount > tonumber(ARGV[wa + 2 * (i - 1)]) then
    return {2, i, spent, reserved}
  end
end
for i = 1, nb do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local key_ttl = ARGV[wa + 2 * (i - 1) + 1]
  redis.call('HINCRBY', h, 'reserved', amount)
  redis.call('HSET', h, 'r:' .. id, amount)
  redis.call('ZADD', z, now + ttl, id)
  redis.call('PEXPIRE', h, key_ttl)
  redis.call('PEXPIRE', z, key_ttl)
end
return {0}
