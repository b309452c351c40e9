-- move.lua: an existing entity joins another entity's pool as its child (R10), atomically.
--
-- The entity must be the root of its own pool with no children. Every key of its old pool
-- (entity, users, tokens, counters, shares, idempotency records, tickets) is renamed into the
-- new pool; its Post ID buckets are added to the new pool's counter, so everything it received
-- in the window counts against the pool at once (a merge can only lower headroom, never raise
-- it). The old pool's audit stream stays where it is (R11: no record is moved or rewritten) and
-- the old pool is marked moved, so take.lua and record.lua refuse to act there (PoolMoved).
--
-- Needs a single Redis server: the keys of two pools and the directory are in different Cluster
-- slots. Python checks the request first for clear messages; this script re-checks everything
-- it relies on, so a concurrent change can only make it refuse.
--
-- The keys to move are the old pool's index of its keys (keys.pool_keys), which every script
-- and writer that creates a pool key keeps; the caller reads it and names each key, and its
-- new name, in KEYS. No KEYS command: that scans the whole keyspace and blocks the server.
--
-- KEYS[1]  the entity directory (name -> root)
-- KEYS[2]  the old pool's moved marker
-- KEYS[3]  the old pool's audit stream (gets an entity.pool_closed record); KEYS[4] its chain
-- KEYS[5]  the new pool's audit stream; KEYS[6] its chain head
-- KEYS[7]  the new pool's moved marker (must not be set)
-- KEYS[8]  the new pool's active index; KEYS[9] the old pool's
-- KEYS[10] the old pool's index of open reservations
-- KEYS[11] the old pool's index of its keys; KEYS[12] the new pool's
-- KEYS[13] the new pool's R2 counter; KEYS[14] its running total; KEYS[15] its days
-- KEYS[16] the entity's R2 counter under its new name; KEYS[17] its days
-- KEYS[18] the entity's hash under its new name
-- KEYS[19 .. 18+M]     the old pool's keys to move (every key of its index)
-- KEYS[19+M .. 18+2M]  the same keys in the new pool, in the same order
-- KEYS[19+2M .. #KEYS-1] share records of stale reservations to close (see abandon_stale)
-- KEYS[#KEYS]          the new pool's summary of its counters (its R2 counter's entry is
--                      rewritten; a moved counter has none there, so readers peek it)
--   When the index names a key not given, or a stale reservation's record is not given, the
--   answer is {status: 'undeclared', keys} and nothing is changed: the caller reads again.
-- ARGV[1]  now in ms, or '' for the Redis clock
-- ARGV[2]  the entity; ARGV[3] its new parent; ARGV[4] the new pool's root
-- ARGV[5]  the reservation timeout in ms: an older open reservation is closed as counted
--          first (abandon_stale); a younger one is in flight (the move waits for it)
-- ARGV[6]  M, the number of keys to move
-- ARGV[7]  R2's window and ARGV[8] its bucket width, in ms (buckets already out are dropped)
-- ARGV[9..] audit field/value pairs (both records)
-- Returns JSON {status, ...}: ok {moved, merged, pool_used} | not_root {root} | has_children
--   {children} | parent_moved | in_flight {share} | exists {key} | undeclared {keys}

local now = now_ms(ARGV[1])
local name, parent, root = ARGV[2], ARGV[3], ARGV[4]
local in_flight_ms = tonumber(ARGV[5])
local r2 = {calendar = false, window = tonumber(ARGV[7]), width = tonumber(ARGV[8])}
local m = tonumber(ARGV[6])
-- The old pool's key prefix ('gk:{e:NAME}:'), from its moved marker keys.py built.
local old_prefix = string.sub(KEYS[2], 1, #KEYS[2] - #'moved')

if redis.call('GET', KEYS[2]) then return cjson.encode({status = 'not_root', root = '?'}) end
if redis.call('GET', KEYS[7]) or redis.call('HGET', KEYS[1], parent) ~= root
    or redis.call('HGET', KEYS[1], root) ~= root then
  return cjson.encode({status = 'parent_moved'})
end
local current = redis.call('HGET', KEYS[1], name)
if current ~= name then return cjson.encode({status = 'not_root', root = current or ''}) end
local directory = redis.call('HGETALL', KEYS[1])
local children = {}
for i = 1, #directory, 2 do
  if directory[i + 1] == name and directory[i] ~= name then children[#children + 1] = directory[i] end
end
if #children > 0 then return cjson.encode({status = 'has_children', children = children}) end

-- Every key the index names, and every stale reservation's record, must have been given.
local new_name = {}
for i = 1, m do new_name[KEYS[18 + i]] = KEYS[18 + m + i] end
local missing = undeclared_stale(KEYS[10], old_prefix, now, in_flight_ms)
for _, key in ipairs(redis.call('ZRANGE', KEYS[11], 0, -1)) do
  if not new_name[key] then missing[#missing + 1] = key end
end
if #missing > 0 then return undeclared(missing) end

-- A reservation left open by a crash does not block the link: it is closed, counted, first.
abandon_stale(KEYS[10], KEYS[3], KEYS[4], old_prefix, now, in_flight_ms)

-- Everything of the old pool but its audit stream, the stream's chain head and refusal index
-- (history, R11), its indexes and placeholders: the caller gives only those (keys.stays).
local moving = {}
for i = 1, m do
  local key = KEYS[18 + i]
  if redis.call('EXISTS', key) == 1 then moving[#moving + 1] = key end
end
table.sort(moving)
for _, key in ipairs(moving) do
  local suffix = string.sub(key, #old_prefix + 1)
  if string.sub(suffix, 1, 6) == 'share:' then
    local share = redis.call('HMGET', key, 'status', 'created')
    if share[1] == 'reserved' and now - tonumber(share[2] or '0') < in_flight_ms then
      return cjson.encode({status = 'in_flight', share = string.sub(suffix, 7)})
    end
  end
  if redis.call('EXISTS', new_name[key]) == 1 and string.sub(suffix, 1, 5) ~= 'idem:' then
    return cjson.encode({status = 'exists', key = new_name[key]})
  end
end

-- Rename, carrying each counter's place in the active index along. Names are global and share
-- ids random, so only an idempotency record can meet its like: the same person used the same
-- key with both pools. The pool's record stays; the moved one is left behind, so a retry of
-- the moved request is answered 'conflict' (409), never counted twice.
local left = 0
for _, key in ipairs(moving) do
  local new_key = new_name[key]
  if redis.call('EXISTS', new_key) == 1 then
    left = left + 1
  else
    redis.call('RENAME', key, new_key)
    index_key(KEYS[12], new_key)
  end
  local score = redis.call('ZSCORE', KEYS[9], key)
  if score then redis.call('ZADD', KEYS[8], score, new_key) end
end
redis.call('DEL', KEYS[9], KEYS[11])

-- The entity's Post ID buckets join the pool's counter: same widths, so equal starts add up.
local own = KEYS[16]
local pool = KEYS[13]
local merged = 0
if redis.call('EXISTS', own) == 1 then
  local sums = {}
  local starts = {}
  for _, key in ipairs({pool, own}) do
    for _, b in ipairs(redis.call('LRANGE', key, 0, -1)) do
      local start, sum = parse_bucket(b)
      if not expired(r2, now, start) and sum > 0 then
        if not sums[start] then
          sums[start] = 0
          starts[#starts + 1] = start
        end
        sums[start] = sums[start] + sum
        if key == own then merged = merged + sum end
      end
    end
  end
  table.sort(starts)
  -- The pool's list is rebuilt from the buckets still in the window, its total with it.
  redis.call('DEL', pool, KEYS[14])
  local total = 0
  for _, start in ipairs(starts) do
    redis.call('RPUSH', pool, fmt(start) .. ':' .. fmt(sums[start]))
    total = total + sums[start]
  end
  if #starts > 0 then
    local newest = starts[#starts]
    local ttl = release_at(r2, newest) - now + 1000  -- as take.lua sets it
    redis.call('SET', KEYS[14], fmt(total))
    redis.call('PEXPIRE', pool, ttl)
    redis.call('PEXPIRE', KEYS[14], ttl)
    redis.call('ZADD', KEYS[8], fmt(release_at(r2, newest)), pool)
    index_key(KEYS[12], pool)
    index_key(KEYS[12], KEYS[14])
  end
  summarise(KEYS[#KEYS], r2, pool, KEYS[14])
end
-- Usage per day is history: the pool's days before this one stay as they were charged (a
-- report for an earlier month must not change), and the entity's own days show its usage
-- while it was a pool of its own. Today's part so far joins the pool's today, so that from
-- today on the pool's days alone hold everything the pool received.
local today = fmt(math.floor(now / DAY))
local so_far = tonumber(redis.call('HGET', KEYS[17], today) or '0')
if so_far ~= 0 then
  redis.call('HINCRBY', KEYS[15], today, so_far)
  redis.call('PEXPIRE', KEYS[15], 400 * DAY)
  index_key(KEYS[12], KEYS[15])
end

local entity = KEYS[18]
redis.call('HSET', entity, 'parent', parent, 'root', root, 'former_root', name,
           'linked_at', fmt(now))
redis.call('HSET', KEYS[1], name, root)
index_key(KEYS[12], entity)
redis.call('SET', KEYS[2], root)

-- One record in the new pool's stream; in the old one, a record that closes it and says where
-- the entity's records continue.
local function audit(stream, chain, extra)
  local args = {'XADD', stream, '*', 'time', fmt(now)}
  for i = 9, #ARGV, 2 do
    if extra[ARGV[i]] == nil then
      args[#args + 1] = ARGV[i]
      args[#args + 1] = ARGV[i + 1]
    end
  end
  for k, v in pairs(extra) do
    args[#args + 1] = k
    args[#args + 1] = v
  end
  return append_audit(args, chain)
end
local facts = {moved_keys = fmt(#moving - left), merged_post_ids = fmt(merged), pool = root,
               former_pool = name}
if left > 0 then facts.idempotency_keys_left = fmt(left) end
local id = audit(KEYS[5], KEYS[6], facts)
facts.kind = 'entity.pool_closed'
facts.message = 'pool ' .. name .. ' closed: ' .. name .. ' joined the pool of ' .. root ..
                '; its records continue in that pool'
audit(KEYS[3], KEYS[4], facts)
return cjson.encode({status = 'ok', moved = fmt(#moving - left), merged = fmt(merged), audit_id = id})
