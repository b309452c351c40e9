-- settle.lua: end a reservation made by take.lua — delivered (it stays counted) or refunded
-- (the delivery failed before anything left: give back exactly what was charged).
--
-- KEYS[1]   share record
-- KEYS[2]   the pool's audit stream
-- KEYS[3]   its chain head
-- KEYS[4]   idempotency record, or the pool's placeholder key (a refund frees a retry)
-- KEYS[5]   the pool's index of open reservations (the share leaves it)
-- KEYS[6]   the pool's index of its keys (a counter charged again may be created anew)
-- KEYS[7..6+3N] per counter charged, in the order take.lua was given them: its bucket list,
--           running total and usage per day
-- KEYS[7+3N] the pool's summary of its counters (keys.summary)
-- KEYS[8+3N] the pool's index of active counters (keys.active: a counter charged again is in it
--           until the bucket charged leaves the window)
-- ARGV[1]   now in ms, or '' for the Redis clock
-- ARGV[2]   'commit' or 'refund'
-- ARGV[3]   N, the number of counters; then per counter: amount charged, bucket width ms
--           (used only to count again a delivery whose reservation is gone, see below), and
--           how long after its start a bucket surely counts no more (window + width; a day
--           more for calendar days, as ledger/layout.py reckons a release)
-- ARGV[4+3N..] audit field/value pairs
-- Returns JSON {status}:
--   delivered | refunded                  the reservation was open and is now settled
--   recounted                             a commit found the reservation refunded or gone:
--                                         what was delivered is charged again (R2: IDs
--                                         delivered always count), audited
--   already_<status>                      a refund found it settled before (delivered,
--                                         abandoned: it stays counted; refunded): no change
--   missing                               a refund found no reservation: no change

local now = now_ms(ARGV[1])
local action = ARGV[2]
local n = tonumber(ARGV[3])
local audit_from = 4 + 3 * n
-- Counter c's bucket list (its running total and days follow it in KEYS).
local function ctr(c) return 4 + 3 * c end
local record = redis.call('HMGET', KEYS[1], 'status', 'charges', 'granted', 'requested')
local share_id = string.match(KEYS[1], 'share:(.*)$')

-- A counter charged again in the bucket starting at `start` must live until that bucket
-- leaves the window. Its list's lifetime was set for the buckets it held — perhaps older,
-- or none at all when the list had expired and is created anew here — and a list that
-- expired early would drop the IDs counted again: R2 under-counted, granted twice.
local function keep_alive(c, start)
  local key, sum_key, daily_key = KEYS[ctr(c)], KEYS[ctr(c) + 1], KEYS[ctr(c) + 2]
  local release = start + tonumber(ARGV[6 + 3 * (c - 1)])
  local ttl = release - now + 1000
  if redis.call('PTTL', key) < ttl - 1000 then  -- also -1 (none) and -2 (gone)
    redis.call('PEXPIRE', key, ttl)
    redis.call('PEXPIRE', sum_key, ttl)
  end
  local listed = redis.call('ZSCORE', KEYS[8 + 3 * n], key)
  if not listed or tonumber(listed) < release then
    redis.call('ZADD', KEYS[8 + 3 * n], fmt(release), key)
  end
  if redis.call('PTTL', daily_key) < 0 then redis.call('PEXPIRE', daily_key, 400 * DAY) end
end

-- Add `amount` to (sign 1) or take it from (sign -1) the bucket starting at `start`; a
-- bucket already out of the window left the counts by itself. Charging back inserts the
-- bucket in order when it is gone (a refund leaves buckets at 0, so that is rare).
local function change_bucket(c, start, amount, sign)
  local key, sum_key, daily_key = KEYS[ctr(c)], KEYS[ctr(c) + 1], KEYS[ctr(c) + 2]
  local len = redis.call('LLEN', key)
  local i = -1
  while -i <= len do
    local bstart, bsum = parse_bucket(redis.call('LINDEX', key, i))
    if bstart == start then
      local delta = amount
      if sign < 0 then delta = -math.min(amount, bsum) end
      redis.call('LSET', key, i, fmt(bstart) .. ':' .. fmt(bsum + delta))
      redis.call('INCRBY', sum_key, delta)
      redis.call('HINCRBY', daily_key, fmt(math.floor(bstart / DAY)), delta)
      resummarise(KEYS[7 + 3 * n], key, sum_key, false)
      return
    end
    if bstart < start then
      if sign > 0 then
        local pivot = redis.call('LINDEX', key, i)
        redis.call('LINSERT', key, 'AFTER', pivot, fmt(start) .. ':' .. fmt(amount))
        redis.call('INCRBY', sum_key, amount)
        redis.call('HINCRBY', daily_key, fmt(math.floor(start / DAY)), amount)
        resummarise(KEYS[7 + 3 * n], key, sum_key, true)
      end
      return
    end
    i = i - 1
  end
  if sign > 0 then
    redis.call('LPUSH', key, fmt(start) .. ':' .. fmt(amount))
    redis.call('INCRBY', sum_key, amount)
    redis.call('HINCRBY', daily_key, fmt(math.floor(start / DAY)), amount)
    resummarise(KEYS[7 + 3 * n], key, sum_key, true)
  end
end

local function adjust(c, start, amount, sign)
  change_bucket(c, start, amount, sign)
  if sign > 0 then keep_alive(c, start) end
end

local function audit(outcome, granted, extra)
  local args = {'XADD', KEYS[2], '*', 'time', fmt(now), 'outcome', outcome,
                'requested', record[4] or granted, 'granted', granted}
  for i = audit_from, #ARGV do args[#args + 1] = ARGV[i] end
  for k, v in pairs(extra or {}) do
    args[#args + 1] = k
    args[#args + 1] = v
  end
  append_audit(args, KEYS[3])
end

redis.call('ZREM', KEYS[5], share_id)

if action == 'commit' and record[1] ~= 'reserved' and record[1] ~= 'delivered'
    and record[1] ~= 'abandoned' then
  -- Delivered, but the ledger no longer holds the reservation (refunded, or the record is
  -- gone): count it again, so that no delivered ID stays uncounted.
  local total = 0
  if record[1] == 'refunded' then
    local c = 0
    for charge in string.gmatch(record[2], '[^,]+') do
      c = c + 1
      local start, amount = parse_bucket(charge)
      if amount > 0 then adjust(c, start, amount, 1) end
      if c == 1 then total = amount end
    end
  else
    for c = 1, n do
      local amount = tonumber(ARGV[4 + 3 * (c - 1)])
      local width = tonumber(ARGV[5 + 3 * (c - 1)])
      if amount > 0 then adjust(c, math.floor(now / width) * width, amount, 1) end
      if c == 1 then total = amount end
    end
  end
  for c = 1, n do
    for k = 0, 2 do index_key(KEYS[6], KEYS[ctr(c) + k]) end
  end
  redis.call('HSET', KEYS[1], 'status', 'delivered', 'settled', fmt(now), 'recounted', '1')
  index_key(KEYS[6], KEYS[1])  -- a record that was gone is written anew
  audit('recounted', fmt(total), {rule = 'R2', message = 'delivered although its reservation was '
        .. (record[1] or 'gone') .. ': counted again (R2: every ID delivered counts)'})
  return cjson.encode({status = 'recounted', was = record[1] or 'missing'})
end

if not record[1] then return cjson.encode({status = 'missing'}) end
if record[1] ~= 'reserved' then return cjson.encode({status = 'already_' .. record[1]}) end

local status = 'delivered'
if action == 'refund' then
  status = 'refunded'
  local c = 0
  for charge in string.gmatch(record[2], '[^,]+') do
    c = c + 1
    local start, amount = parse_bucket(charge)
    if amount > 0 then adjust(c, start, amount, -1) end
  end
  redis.call('DEL', KEYS[4])
end
redis.call('HSET', KEYS[1], 'status', status, 'settled', fmt(now))
audit(status, record[3])
return cjson.encode({status = status})
