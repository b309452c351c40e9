-- pools.lua: what a dashboard reads of many pools at once, changing nothing, so that its cost
-- is one call per few hundred pools instead of a command per counter, entity and stream.
--
-- KEYS[1 .. 4P]  per pool: its summary of its counters (keys.summary), its index of active
--                counters, the refusal index beside its audit stream, and its root's R2 days
-- KEYS[4P+1 ..]  entity hashes
-- ARGV[1]   now in ms, or '' for the Redis clock
-- ARGV[2]   P, the number of pools
-- ARGV[3..] epoch days whose R2 use is summed over the pools' roots (the all-pools chart)
-- Returns JSON {now, pools: [[summary as field, value, ...], [active counter, ...], newest
--   refusal id or ''], entities: [[field, value, ...], ...], days: [sum per day]}

local now = now_ms(ARGV[1])
local p = tonumber(ARGV[2])
local days = {}
for i = 3, #ARGV do days[#days + 1] = ARGV[i] end
local sums = {}
for i = 1, #days do sums[i] = 0 end
local pools = {}
for i = 1, p do
  local base = 4 * (i - 1)
  local newest = redis.call('XREVRANGE', KEYS[base + 3], '+', '-', 'COUNT', 1)
  pools[i] = {redis.call('HGETALL', KEYS[base + 1]),
              redis.call('ZRANGEBYSCORE', KEYS[base + 2], '(' .. fmt(now), '+inf'),
              (newest[1] and newest[1][1]) or ''}
  if #days > 0 then
    local used = redis.call('HMGET', KEYS[base + 4], unpack(days))
    for d = 1, #days do sums[d] = sums[d] + tonumber(used[d] or '0') end
  end
end
local entities = {}
for i = 4 * p + 1, #KEYS do entities[#entities + 1] = redis.call('HGETALL', KEYS[i]) end
for d = 1, #days do sums[d] = fmt(sums[d]) end
return cjson.encode({now = fmt(now), pools = pools, entities = entities, days = sums})
