-- pools.lua: what a dashboard reads of many pools at once, changing nothing, so that its cost
-- is one call per few hundred pools instead of a command per counter, entity and stream.
--
-- A pool whose audit chain head (append_audit) still has the hash the caller read last time is
-- answered with that hash only: every script that changes what is read here (a counter, the
-- summary, the active index, the refusal index, the days, an entity's hash) appends an audit
-- record to the pool's stream in the same call, which moves the head. So a dashboard reads in
-- full only the pools that changed since it last looked.
--
-- KEYS[1 .. 5P]  per pool: its summary of its counters (keys.summary), its index of active
--                counters, the refusal index beside its audit stream, its root's R2 days and
--                its audit chain head (keys.chain_of)
-- KEYS[5P+1 ..]  the pools' entity hashes, pool by pool
-- ARGV[1]   now in ms, or '' for the Redis clock; or 'hashes': KEYS are chain heads only, and
--           the answer is {hashes: [hash or '', ...]} (which pools changed, read first)
-- ARGV[2]   P, the number of pools; ARGV[3] D, the number of days
-- ARGV[4 .. 3+D]          epoch days whose R2 use of the pool's root is read
-- ARGV[4+D .. 3+D+P]      per pool, the chain head hash the caller holds ('' none)
-- ARGV[4+D+P .. 3+D+2P]   per pool, how many of the entity hashes are its
-- Returns JSON {now, pools: [[hash] (unchanged) or [hash, summary as field, value, ...,
--   active counters as member, score, ..., newest refusal id or '', use per day (false:
--   none), [entity hash as field, value, ...] ...]]}

if ARGV[1] == 'hashes' then  -- KEYS: chain heads only; their hashes, nothing else read
  local out = {}
  for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, 'hash') or '' end
  return cjson.encode({hashes = out})
end

local now = now_ms(ARGV[1])
local p = tonumber(ARGV[2])
local d = tonumber(ARGV[3])
local days = {}
for i = 1, d do days[i] = ARGV[3 + i] end
local known_from = 4 + d
local count_from = known_from + p
local pools = {}
local e = 5 * p
for i = 1, p do
  local base = 5 * (i - 1)
  local count = tonumber(ARGV[count_from + i - 1])
  local hash = redis.call('HGET', KEYS[base + 5], 'hash') or ''
  if hash ~= '' and hash == ARGV[known_from + i - 1] then
    pools[i] = {hash}
  else
    local newest = redis.call('XREVRANGE', KEYS[base + 3], '+', '-', 'COUNT', 1)
    local used = {}
    if d > 0 then used = redis.call('HMGET', KEYS[base + 4], unpack(days)) end
    local entities = {}
    for j = 1, count do entities[j] = redis.call('HGETALL', KEYS[e + j]) end
    pools[i] = {hash, redis.call('HGETALL', KEYS[base + 1]),
                redis.call('ZRANGEBYSCORE', KEYS[base + 2], '(' .. fmt(now), '+inf',
                           'WITHSCORES'),
                (newest[1] and newest[1][1]) or '', used, entities}
  end
  e = e + count
end
return cjson.encode({now = fmt(now), pools = pools})
