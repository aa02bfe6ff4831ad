-- Settlement of one request, atomically and once per id (see src/accounting/state/mod.rs):
-- give back its reservation, add what it spent to every budget window it reserved in, and
-- correct the tokens it took from its tokens bucket to the real count. A retried settlement
-- finds its marker and changes nothing.
-- Times are the server's (TIME), in ms; money is integer nano-USD. Prepended: common.lua.
--
-- KEYS: the settled marker, then nb pairs (window hash, its lapse zset), then 0 or 1 bucket.
-- ARGV: id, spent, marker_ttl_ms, nb, nbucket,
--   then per window: key_ttl_ms;
--   then for the bucket: per_minute, reserved tokens, used tokens.
-- Returns 1 when settled now, 0 when it had been settled before.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then
  return 0
end
local now = now_ms()
local id = ARGV[1]
local spent = tonumber(ARGV[2])
local nb = tonumber(ARGV[4])
local nbucket = tonumber(ARGV[5])
for i = 1, nb do
  local h, z = KEYS[2 * i], KEYS[2 * i + 1]
  release(h, z, id)
  if spent > 0 then
    redis.call('HINCRBY', h, 'spent', spent)
  end
  redis.call('PEXPIRE', h, ARGV[5 + i])
end
if nbucket == 1 then
  local key = KEYS[2 * nb + 2]
  local a = 6 + nb
  local per_minute = tonumber(ARGV[a])
  -- A bucket that refilled and lapsed since admission is full: the correction applies to it
  -- as to any (a request that used more than it reserved leaves the debt).
  local level = refill(key, per_minute, now)
  level = math.min(per_minute, level + tonumber(ARGV[a + 1]) - tonumber(ARGV[a + 2]))
  store_level(key, level, per_minute, now)
end
return 1
