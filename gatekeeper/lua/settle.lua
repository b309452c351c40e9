-- settle.lua: end a reservation made by take.lua — delivered (it stays counted) or refunded
-- (the export failed before delivery: give back exactly what was charged).
--
-- KEYS[1]   share record
-- KEYS[2]   the pool's audit stream
-- KEYS[3]   idempotency record, or the pool's placeholder key (a refund frees a retry)
-- KEYS[4..] the counters charged, in the order take.lua was given them
-- ARGV[1]   now in ms, or '' for the Redis clock
-- ARGV[2]   'commit' or 'refund'
-- ARGV[3..] audit field/value pairs
-- Returns JSON {status}: delivered | refunded | missing (no such reservation)
--   | already_<status> (settled before; nothing changes)

local now = now_ms(ARGV[1])
local action = ARGV[2]
local record = redis.call('HMGET', KEYS[1], 'status', 'charges', 'granted', 'requested')
if not record[1] then return cjson.encode({status = 'missing'}) end
if record[1] ~= 'reserved' then return cjson.encode({status = 'already_' .. record[1]}) end

local status = 'delivered'
if action == 'refund' then
  status = 'refunded'
  local c = 0
  for charge in string.gmatch(record[2], '[^,]+') do
    c = c + 1
    local key = KEYS[3 + c]
    local start, amount = parse_bucket(charge)
    -- Buckets are sorted by start; a recent reservation sits at or near the tail.
    local len = redis.call('LLEN', key)
    local i = -1
    while amount > 0 and -i <= len do
      local bstart, bsum = parse_bucket(redis.call('LINDEX', key, i))
      if bstart == start then
        local back = math.min(amount, bsum)
        redis.call('LSET', key, i, fmt(bstart) .. ':' .. fmt(bsum - back))
        redis.call('DECRBY', key .. ':sum', back)
        redis.call('HINCRBY', key .. ':daily', fmt(math.floor(bstart / DAY)), -back)
        break
      end
      if bstart < start then break end  -- already expired: it left the counts by itself
      i = i - 1
    end
  end
  redis.call('DEL', KEYS[3])
end
redis.call('HSET', KEYS[1], 'status', status, 'settled', fmt(now))

local args = {'XADD', KEYS[2], '*', 'time', fmt(now), 'outcome', status,
              'requested', record[4], 'granted', record[3]}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
redis.call(unpack(args))
return cjson.encode({status = status})
