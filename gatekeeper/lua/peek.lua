-- peek.lua: read counters as of now without changing anything (quota views, dashboards).
--
-- KEYS[1..N] bucket lists
-- ARGV[1]    now in ms, or '' for the Redis clock
-- ARGV[2]    N
-- ARGV[3 .. 3+9N-1] per counter, the same 9 values take.lua reads (amount ignored)
-- Returns JSON {now, counters:[{limit, used, remaining, releases:[[at, amount], ...]}]}
--   releases: when used capacity leaves the window, oldest first.

local now = now_ms(ARGV[1])
local n = tonumber(ARGV[2])
local out = {now = fmt(now), counters = {}}
for c = 1, n do
  local spec = read_spec(3 + 9 * (c - 1), now)
  if spec.err then return spec end
  local used = 0
  local releases = {}
  local last_at = nil
  for _, b in ipairs(redis.call('LRANGE', KEYS[c], 0, -1)) do
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
