-- heads.lua: the newest record of each of many streams within an ID range, its ID only, so
-- that the audit log's first page reads on only in the few streams that hold its records
-- instead of asking every pool's stream (10,000 commands for 10,000 entities). Reads only.
-- A stream's chain head (append_audit) names its newest record: when that is in range it is
-- the answer without reading the stream; otherwise (a page further back, or a head written
-- before heads kept the ID) the stream is read.
--
-- KEYS[1..N]    audit streams; KEYS[N+1..2N] their chain heads (keys.chain_of), same order
-- ARGV[1]       the lowest ID in range
-- ARGV[2..]     per stream, the highest ID in range (inclusive); one value stands for all
-- Returns JSON [id or '' (nothing in range), ...] in the order of the streams

local function parse_id(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function before(a_ms, a_seq, b_ms, b_seq)  -- a < b
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

local low = ARGV[1]
local low_ms, low_seq = parse_id(low)
local any_low = low == '0-0'
local n = #KEYS / 2
local one = #ARGV == 2  -- one highest ID for all (a first page: usually the highest there is)
local high_ms, high_seq = parse_id(ARGV[2])
local out = {}
for i = 1, n do
  local high = ARGV[2]
  if not one then
    high = ARGV[i + 1]
    high_ms, high_seq = parse_id(high)
  end
  local last = redis.call('HGET', KEYS[n + i], 'id')
  local found = nil
  if last then
    local ms, seq = parse_id(last)
    if not any_low and before(ms, seq, low_ms, low_seq) then
      found = ''  -- everything is older than the range
    elseif not before(high_ms, high_seq, ms, seq) then
      found = last  -- the newest record is in range
    end
  end
  if found == nil then
    local top = redis.call('XREVRANGE', KEYS[i], high, low, 'COUNT', 1)
    found = (top[1] and top[1][1]) or ''
  end
  out[i] = found
end
return cjson.encode(out)
