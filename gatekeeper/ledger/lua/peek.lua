-- peek.lua: read counters as of now without changing anything (quota views, dashboards).
--
-- KEYS[1..2N] per counter: its bucket list and its running total
-- ARGV[1]    now in ms, or '' for the Redis clock
-- ARGV[2]    '1' to return only the next release of each counter (dashboard rows)
-- ARGV[3]    S, the number of distinct counter specs (a pool's counters share a few)
-- ARGV[4 .. 4+9S-1]        the specs: the same 9 values take.lua reads (amount ignored)
-- ARGV[4+9S .. 4+9S+N-1]   for each key, the 1-based index of its spec
-- Returns JSON {now, counters:[{limit, used, remaining, releases:[[at, amount], ...]}]}
--   releases: when used capacity leaves the window, oldest first.

local now = now_ms(ARGV[1])
local next_only = ARGV[2] == '1'
local s = tonumber(ARGV[3])
local specs = {}
for j = 1, s do
  local spec = read_spec(4 + 9 * (j - 1), now)
  if spec.err then return spec end
  specs[j] = spec
end
local index_from = 4 + 9 * s
local out = {now = fmt(now), counters = {}}
for c = 1, #KEYS / 2 do
  local key, sum_key = KEYS[2 * c - 1], KEYS[2 * c]
  local spec = specs[tonumber(ARGV[index_from + c - 1])]
  local used = 0
  local releases = {}
  local last_at = nil
  if next_only then
    -- The running total less the expired head: no need to read every bucket.
    local i = 0
    if redis.call('EXISTS', key) == 1 then
      used = tonumber(redis.call('GET', sum_key) or '0')
    else
      i = -1  -- nothing counted (most recipients on most days): skip the walk
    end
    while i >= 0 do
      local head = redis.call('LINDEX', key, i)
      if not head then break end
      local start, sum = parse_bucket(head)
      if not expired(spec, now, start) and sum > 0 then
        -- Calendar days release everything at once; rolling buckets one by one.
        releases[1] = {fmt(release_at(spec, start)), fmt(spec.calendar and used or sum)}
        break
      end
      if expired(spec, now, start) then used = used - sum end
      i = i + 1
    end
  end
  for _, b in ipairs(next_only and {} or redis.call('LRANGE', key, 0, -1)) do
    local start, sum = parse_bucket(b)
    if not expired(spec, now, start) and sum > 0 then
      used = used + sum
      local at = release_at(spec, start)
      if at == last_at then
        releases[#releases][2] = fmt(tonumber(releases[#releases][2]) + sum)
      else
        releases[#releases + 1] = {fmt(at), fmt(sum)}
        last_at = at
      end
    end
  end
  out.counters[c] = {limit = fmt(spec.limit), used = fmt(used),
                     remaining = fmt(remaining(spec, used)), releases = releases}
end
return cjson.encode(out)
