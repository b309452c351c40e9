-- take.lua: check a request against every counter it charges and reserve it, atomically.
-- A refusal changes no counter; every answer appends one audit record (R11).
--
-- KEYS[1]   the pool's audit stream
-- KEYS[2]   its chain head
-- KEYS[3]   idempotency record, or the pool's placeholder key when there is no key
-- KEYS[4]   share record to create (status 'reserved' until settle.lua)
-- KEYS[5]   the pool's index of active counters (sorted set: counter key -> ms at which its
--           newest bucket leaves the window), so that readers skip idle counters
-- KEYS[6]   the pool's moved marker: set when the pool joined another (R10, move.lua)
-- KEYS[7]   the pool's refusal index (refused and conflict answers are copied there)
-- KEYS[8]   the pool's index of open reservations (share id -> ms reserved)
-- KEYS[9]   the pool's index of its keys (every key created here is entered)
-- KEYS[10..9+3N] per counter: its bucket list, its running total, its usage per day
-- KEYS[10+3N]   the pool's summary of its counters (keys.summary; summarise in _window.lua)
-- KEYS[11+3N..]  share records of earlier requests this call may read or close (a stale
--                reservation, the first request of an idempotency key); when one is missing
--                the answer is {status: 'undeclared', keys} and nothing is changed
-- ARGV[1]   now in ms, or '' for the Redis clock (only tests pass a value)
-- ARGV[2]   '1': grant exactly the remaining allowance when the whole does not fit
-- ARGV[3]   request fingerprint, '' when there is no idempotency key
-- ARGV[4]   idempotency record TTL (s)
-- ARGV[5]   share record TTL (s)
-- ARGV[6]   requested units (rows or IDs)
-- ARGV[7]   share id
-- ARGV[8]   N, the number of counters
-- ARGV[9]   ms after which an unsettled reservation is closed as counted (abandoned)
-- ARGV[10 .. 10+9N-1] per counter: amount, base limit, permit limit, permit from, permit until,
--                     window ms, bucket width ms, calendar boundaries ('' = rolling), rule
-- ARGV[10+9N ..]      audit field/value pairs
-- Returns JSON: {status, now, requested, granted, share_id, rule, refusing (1-based counter,
--   0 if none), available_at (-1: never), counters:[{limit, used, remaining, rule}], audit_id}
--   status: granted | partial | refused | replay | conflict   (numbers as decimal strings)
--   or {status: 'moved', root} when the pool has joined the pool `root` (nothing changed)
--   or {status: 'resent', share_id} when this share's record exists: the call ran before and
--   its answer was lost (nothing changed now; the first run's reservation is settled or
--   abandoned, and so counted, as any other)
--   or {status: 'in_progress', share_id, retry_after_ms, closes_at} when the key's first request is still
--   reserved: it may yet be refunded, so a retry may deliver nothing until it is settled (R2)
-- A replay is answered only for a first request that is counted for good (delivered, or
-- abandoned and so counted); one that was refunded, or whose record is gone, is forgotten and
-- the retry is counted as a new request. Before anything, stale reservations of the pool are
-- closed as counted (abandon_stale).

local now = now_ms(ARGV[1])
local partial = ARGV[2] == '1'
local fingerprint = ARGV[3]
local requested = tonumber(ARGV[6])
local share_id = ARGV[7]
local n = tonumber(ARGV[8])
local timeout = tonumber(ARGV[9])
local audit_from = 10 + 9 * n
-- Counter c's bucket list, running total and days.
local function ctr(c) return KEYS[7 + 3 * c], KEYS[8 + 3 * c], KEYS[9 + 3 * c] end
-- The pool's key prefix, from the share key keys.py built ('gk:{e:ROOT}:share:ID').
local prefix = string.sub(KEYS[4], 1, #KEYS[4] - #share_id - #'share:')

-- A pool that joined another (R10) takes nothing more: its keys live in the new pool now.
-- The same call run again (its answer was lost and the client sent it again: redis-py's retry
-- after a timeout): the first run's reservation stands, and this one changes nothing.
-- Neither is there in almost every take: one EXISTS asks for both, a call less per grant.
if redis.call('EXISTS', KEYS[6], KEYS[4]) > 0 then
  local moved = redis.call('GET', KEYS[6])
  if moved then return cjson.encode({status = 'moved', root = moved, now = fmt(now)}) end
  return cjson.encode({status = 'resent', share_id = share_id, now = fmt(now)})
end

local function audit(fields)
  local args = {'XADD', KEYS[1], '*', 'time', fmt(now)}
  for i = audit_from, #ARGV do args[#args + 1] = ARGV[i] end
  for k, v in pairs(fields) do
    args[#args + 1] = k
    args[#args + 1] = v
  end
  local id = append_audit(args, KEYS[2])
  if REFUSED[fields.outcome] then index_refusal(KEYS[7], id, args) end
  return id
end

-- The share records this call may touch must have been declared.
local missing = undeclared_stale(KEYS[8], prefix, now, timeout)
if fingerprint ~= '' then
  local prior = redis.call('HMGET', KEYS[3], 'fingerprint', 'result')
  if prior[1] and prior[1] == fingerprint then
    local first = prefix .. 'share:' .. cjson.decode(prior[2]).share_id
    if not DECLARED[first] then missing[#missing + 1] = first end
  end
end
if #missing > 0 then return undeclared(missing) end

abandon_stale(KEYS[8], KEYS[1], KEYS[2], prefix, now, timeout)

if fingerprint ~= '' then
  local prior = redis.call('HMGET', KEYS[3], 'fingerprint', 'result')
  if prior[1] and prior[1] == fingerprint then
    local first = cjson.decode(prior[2])
    local state = redis.call('HMGET', prefix .. 'share:' .. first.share_id, 'status', 'created')
    if state[1] == 'reserved' then
      audit({outcome = 'in_progress', requested = fmt(requested), granted = '0',
             share_id = first.share_id, rule = 'R2'})
      -- Most deliveries settle in seconds; one whose process died is closed at `closes_at`.
      local closes = tonumber(state[2] or fmt(now)) + timeout
      return cjson.encode({status = 'in_progress', share_id = first.share_id, now = fmt(now),
                           retry_after_ms = fmt(math.min(2000, math.max(closes - now, 1))),
                           closes_at = fmt(closes)})
    end
    if state[1] ~= 'delivered' and state[1] ~= 'abandoned' then
      -- Refunded, or its record is gone: nothing vouches that it was counted. Forget it and
      -- count this request as new (counting twice is the safe side, R2).
      redis.call('DEL', KEYS[3])
      prior = {false, false}
    end
  end
  if prior[1] then
    if prior[1] ~= fingerprint then
      audit({outcome = 'conflict', requested = fmt(requested), granted = '0',
             share_id = share_id})
      return cjson.encode({status = 'conflict', now = fmt(now)})
    end
    local result = cjson.decode(prior[2])
    audit({outcome = 'replayed', requested = fmt(requested), granted = '0',
           share_id = result.share_id, rule = result.rule})
    result.status = 'replay'
    return cjson.encode(result)
  end
end

-- Expire old buckets (amortised O(1)), then read each counter's usage.
local specs = {}
for c = 1, n do
  local key, sum_key, daily_key = ctr(c)
  local spec = read_spec(10 + 9 * (c - 1), now)
  if spec.err then return spec end
  local had_sum = redis.call('GET', sum_key)
  local total = tonumber(had_sum or '0')
  local head = redis.call('LINDEX', key, 0)  -- none: there is no list (a list is never empty)
  if total ~= 0 and not head then
    -- The bucket list expired with its last bucket: nothing of it is in the window any more.
    redis.call('DEL', sum_key)
    total = 0
  end
  local popped = false
  while head do
    local start, sum = parse_bucket(head)
    if not expired(spec, now, start) then break end
    redis.call('LPOP', key)
    total = total - sum
    popped = true
    head = redis.call('LINDEX', key, 0)
  end
  if popped then
    if not head then
      redis.call('DEL', sum_key)
      total = 0
    else
      redis.call('SET', sum_key, fmt(total), 'KEEPTTL')
    end
  end
  spec.key = key
  spec.sum_key = sum_key
  spec.daily_key = daily_key
  spec.used = total
  spec.had_sum = had_sum ~= false and total ~= 0
  spec.touched = popped  -- its summary entry is rewritten below
  if head then spec.first = parse_bucket(head) end  -- its oldest bucket left in the window
  specs[c] = spec
end

-- Decide: the whole request, or (partial) exactly what every counter still allows.
local granted = requested
local refusing = nil
local refusing_index = 0
for c = 1, n do
  local s = specs[c]
  if s.limit >= 0 and s.used + s.amount > s.limit then
    if partial then
      local r = remaining(s, s.used)
      if r < granted then granted = r end
    end
    if refusing == nil then
      refusing = s
      refusing_index = c
    end
  end
end
if not partial and refusing ~= nil then granted = 0 end
local status = 'granted'
if refusing ~= nil then
  if granted > 0 then status = 'partial' else status = 'refused' end
end
if requested == 0 then status = 'granted' end

local out = {status = status, now = fmt(now), requested = fmt(requested), granted = fmt(granted),
             share_id = share_id, rule = '', available_at = '', refusing = fmt(refusing_index),
             counters = {}}
if refusing ~= nil then out.rule = refusing.rule end

if status == 'refused' then
  -- The earliest time the whole request fits: per counter, the earliest time its buckets and
  -- its limit (which an R4 permission may change) allow; the request fits when all do.
  local at = now
  for c = 1, n do
    local s = specs[c]
    local when = earliest_fit(s, now, s.used, redis.call('LRANGE', s.key, 0, -1))
    if when < 0 then
      at = -1
      break
    end
    if when > at then at = when end
  end
  out.available_at = fmt(at)
else
  -- Reserve: charge every counter; remember which bucket took what, so a refund is exact.
  local charges = {}
  local opened = false
  for c = 1, n do
    local s = specs[c]
    local amount = s.amount
    if partial then amount = granted end
    local start = math.floor(now / s.width) * s.width
    if s.calendar and start < s.day_start then start = s.day_start end
    if amount > 0 then
      local tail = redis.call('LINDEX', s.key, -1)
      local merged = false
      if tail then
        local ts, tsum = parse_bucket(tail)
        -- Merge into the newest bucket when it is the same one (or the clock stepped back:
        -- a later bucket only releases later, which is the conservative side).
        if ts >= start then
          redis.call('LSET', s.key, -1, fmt(ts) .. ':' .. fmt(tsum + amount))
          start = ts
          merged = true
        end
      end
      if not merged then redis.call('RPUSH', s.key, fmt(start) .. ':' .. fmt(amount)) end
      s.last = start  -- its newest bucket: the one charged (the summary needs no read)
      if s.first == nil then s.first = start end
      redis.call('INCRBY', s.sum_key, amount)
      -- Usage per UTC day, for charts and the monthly report; kept for 400 days.
      redis.call('HINCRBY', s.daily_key, fmt(math.floor(start / DAY)), amount)
      -- An idle counter vanishes once its newest bucket has left the window.
      local ttl = release_at(s, start) - now + 1000
      -- A charge merged into the newest bucket leaves its expiry (an instant: the bucket's
      -- release), its place in the active index and its key index entries as the take or
      -- move that opened it set them; rewriting them cost five calls and three PEXPIREATs
      -- (a sixth of a take's AOF bytes). A bucket opened otherwise (a settle counting a
      -- delivery again) may have left the list a shorter life or none: PTTL tells.
      if not (merged and s.had_sum and redis.call('PTTL', s.key) >= ttl - 1000) then
        opened = true
        redis.call('PEXPIRE', s.key, ttl)
        redis.call('PEXPIRE', s.sum_key, ttl)
        redis.call('ZADD', KEYS[5], fmt(release_at(s, start)), s.key)
        redis.call('PEXPIRE', s.daily_key, 400 * DAY)
        index_counter(KEYS[9], s.key, s.sum_key, s.daily_key, ttl)
      end
      s.used = s.used + amount
      s.touched = true
    end
    charges[c] = fmt(start) .. ':' .. fmt(amount)
  end
  -- Readers skip entries whose time has passed; pruning them waits for a bucket to open.
  if opened then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', fmt(now)) end
  local record = {'HSET', KEYS[4], 'status', 'reserved', 'created', fmt(now),
                  'requested', fmt(requested), 'granted', fmt(granted),
                  'charges', table.concat(charges, ',')}
  -- Whose it is, for the record abandon_stale writes if it is never settled.
  for i = audit_from, #ARGV - 1, 2 do
    for _, field in ipairs(SHARE_OWNER) do
      if ARGV[i] == field then
        record[#record + 1] = field
        record[#record + 1] = ARGV[i + 1]
      end
    end
  end
  redis.call(unpack(record))
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5]))
  redis.call('ZADD', KEYS[8], fmt(now), share_id)
  -- The key index forgets keys that expired when a bucket opens (as the active index above:
  -- at most once per bucket width and counter), not on every take into the open bucket. An
  -- entry kept a few minutes past its key names a key move.lua finds gone and skips.
  if opened then prune_index(KEYS[9]) end
  index_new(KEYS[9], KEYS[4], tonumber(ARGV[5]) * 1000)
end

for c = 1, n do
  local s = specs[c]
  if s.last then
    summary_entry(KEYS[10 + 3 * n], s, s.key, fmt(s.used), s.first, s.last)
  elseif s.touched then
    summarise(KEYS[10 + 3 * n], s, s.key, s.sum_key)
  end
end

for c = 1, n do
  local s = specs[c]
  out.counters[c] = {limit = fmt(s.limit), used = fmt(s.used), remaining = fmt(remaining(s, s.used)),
                     rule = s.rule}
end

local audit_fields = {outcome = status, requested = fmt(requested), granted = fmt(granted),
                      share_id = share_id}
if out.rule ~= '' then audit_fields.rule = out.rule end
if out.available_at ~= '' then audit_fields.available_at = out.available_at end
-- Never fits whole: how many of it fit now (what a partial take grants), for the record's reader.
if out.available_at == '-1' then
  local now_fits = requested
  for c = 1, n do
    local r = remaining(specs[c], specs[c].used)
    if r >= 0 and r < now_fits then now_fits = r end
  end
  audit_fields.fits_now = fmt(now_fits)
end
out.audit_id = audit(audit_fields)

if status ~= 'refused' and fingerprint ~= '' then
  out.first_status = status
  redis.call('HSET', KEYS[3], 'fingerprint', fingerprint, 'result', cjson.encode(out))
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
  index_new(KEYS[9], KEYS[3], tonumber(ARGV[4]) * 1000)
end
return cjson.encode(out)
