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
--
-- Or, with ARGV[1] 'top' (a page needs the streams holding its newest records, not every
-- stream's answer: what crosses the wire and what the caller handles follows the page):
-- KEYS[1..N]    chain heads only (keys.chain_of), in merge order (descending stream key): of
--               records with the same ID, the lower index comes first
-- ARGV[2]       K
-- ARGV[3]       the lowest ID in range
-- ARGV[4], ARGV[5], ARGV[6]   the highest ID in range of streams 1..ARGV[6] and of the others
--               ('' : nothing in range)
-- Returns JSON {top = [index, id, ...], unknown = [index, ...]}: of the streams whose chain head
-- names a record in range, the K + 1 whose newest record comes first (newest first, then lower
-- index), in that order; every other such stream holds nothing before the last one named. A
-- stream whose head is past the range or names no record is `unknown`: the caller asks for it
-- the other way, with its stream key.

local function parse_id(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function before(a_ms, a_seq, b_ms, b_seq)  -- a < b
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

local top = ARGV[1] == 'top'
local low = ARGV[1]
if top then low = ARGV[3] end
local low_ms, low_seq = parse_id(low)
local any_low = low == '0-0'
local n = #KEYS / 2
local one = #ARGV == 2  -- one highest ID for all (a first page: usually the highest there is)

-- The newest record of stream i at or below `high` (and at or above low): its ID or ''.
local function head(i, high, high_ms, high_seq)
  local last = redis.call('HGET', KEYS[n + i], 'id')
  if last then
    local ms, seq = parse_id(last)
    if not any_low and before(ms, seq, low_ms, low_seq) then
      return ''  -- everything is older than the range
    elseif not before(high_ms, high_seq, ms, seq) then
      return last, ms, seq  -- the newest record is in range
    end
  end
  local found = redis.call('XREVRANGE', KEYS[i], high, low, 'COUNT', 1)
  return (found[1] and found[1][1]) or ''
end

if top then
  local call, byte, find, sub, tonumber = redis.call, string.byte, string.find, string.sub, tonumber
  local k = tonumber(ARGV[2]) + 1
  local split = tonumber(ARGV[6])
  local bests = {}  -- {ms, seq, index, id}, best first, at most k
  local count = 0
  local worst = nil  -- bests[k] once there are k
  -- worst's ID up to its dash: an ID with its dash at the same place that sorts before this
  -- text has an older millisecond, so it is not needed (one string comparison, no parsing).
  local cut, prefix = nil, nil
  local unknown = {}
  local highs = {}
  for j = 1, 2 do
    if ARGV[3 + j] ~= '' then highs[j] = {parse_id(ARGV[3 + j])} end
  end
  for i = 1, #KEYS do
    local bound = highs[(i <= split) and 1 or 2]
    local last = bound and call('HGET', KEYS[i], 'id')
    if not last then
      -- A head written before heads kept the ID, or none: the stream must say.
      if bound then unknown[#unknown + 1] = i end
    elseif not (cut and byte(last, cut) == 45 and last < prefix) then
      local ms, seq = parse_id(last)
      if not any_low and before(ms, seq, low_ms, low_seq) then
        seq = nil  -- everything is older than the range: not needed
      elseif before(bound[1], bound[2], ms, seq) then
        unknown[#unknown + 1] = i  -- its newest is past the range: the stream must say
      elseif not worst or before(worst[1], worst[2], ms, seq) then
        -- Later streams lose ties (a higher index), so only a strictly newer ID gets in.
        local at = count + 1
        while at > 1 and before(bests[at - 1][1], bests[at - 1][2], ms, seq) do
          bests[at] = bests[at - 1]
          at = at - 1
        end
        bests[at] = {ms, seq, i, last}
        if count < k then count = count + 1 else bests[k + 1] = nil end
        if count == k then
          worst = bests[k]
          cut = find(worst[4], '-', 1, true)
          prefix = sub(worst[4], 1, cut)
        end
      end
    end
  end
  local out = {}
  for _, b in ipairs(bests) do
    out[#out + 1] = b[3]
    out[#out + 1] = b[4]
  end
  return cjson.encode({top = out, unknown = unknown})
end

local high_ms, high_seq = parse_id(ARGV[2])
local out = {}
for i = 1, n do
  local high = ARGV[2]
  if not one then
    high = ARGV[i + 1]
    high_ms, high_seq = parse_id(high)
  end
  out[i] = head(i, high, high_ms, high_seq)
end
return cjson.encode(out)
