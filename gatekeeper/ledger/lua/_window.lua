-- _window.lua: shared by every script (prepended when it is loaded, see ledger/scripts.py).
--
-- Every key a script touches is one of its KEYS (keys.py builds them all): a script that finds
-- it needs a key it was not given changes nothing and answers {status = 'undeclared', keys}, and
-- the ledger runs it again with those keys declared (see Ledger._run).
--
-- A counter is a list of buckets "start_ms:sum", oldest first, plus its running total at
-- KEY..':sum'. A bucket covers [start, start + width). It leaves the window only when its
-- *latest* possible member has left, so rounding can delay capacity but never grant it early.
-- Calendar-day counters instead drop every bucket that started before the current local day.

local DAY = 86400000

local DECLARED = {}
for _, k in ipairs(KEYS) do DECLARED[k] = true end

local CLOCK = nil  -- the Redis clock, read once per call
local INJECTED = nil  -- an instant the caller fixed (ledger/clock.py's FixedClock), if any
local function now_ms(override)
  if override ~= nil and override ~= '' then
    INJECTED = tonumber(override)
    return INJECTED
  end
  if CLOCK == nil then
    local t = redis.call('TIME')
    CLOCK = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return CLOCK
end

-- Integers as decimal strings: cjson would print large numbers in exponent form.
local function fmt(n) return string.format('%d', n) end

local function parse_bucket(s)
  local sep = string.find(s, ':', 1, true)
  return tonumber(string.sub(s, 1, sep - 1)), tonumber(string.sub(s, sep + 1))
end

-- Reads one counter's spec (9 ARGV values from position i) as of `now`.
local function read_spec(i, now)
  local spec = {
    amount = tonumber(ARGV[i]),
    base = tonumber(ARGV[i + 1]),          -- -1 = unlimited (still counted, never enforced)
    permit = tonumber(ARGV[i + 2]),        -- R4 written permission's limit, -1 = unlimited
    permit_from = tonumber(ARGV[i + 3]),
    permit_until = tonumber(ARGV[i + 4]),  -- exclusive; 0/0 = no permission
    window = tonumber(ARGV[i + 5]),
    width = tonumber(ARGV[i + 6]),
    rule = ARGV[i + 8],
    calendar = ARGV[i + 7] ~= '',
  }
  if spec.permit_from <= now and now < spec.permit_until then
    spec.limit = spec.permit
  else
    spec.limit = spec.base
  end
  if spec.calendar then
    -- Local midnights (epoch ms) around now, computed by the caller from the time zone;
    -- the Redis clock picks the current day among them.
    for b in string.gmatch(ARGV[i + 7], '%d+') do
      local v = tonumber(b)
      if v <= now then spec.day_start = v elseif spec.day_end == nil then spec.day_end = v end
    end
    if spec.day_start == nil or spec.day_end == nil then
      return redis.error_reply('ERR calendar boundaries do not cover the current time')
    end
  end
  return spec
end

local function expired(spec, now, start)
  if spec.calendar then return start < spec.day_start end
  return start + spec.width <= now - spec.window
end

local function release_at(spec, start)
  if spec.calendar then return spec.day_end end
  return start + spec.width + spec.window
end

-- The earliest time >= now at which `amount` more fits, given the buckets (oldest first, none
-- expired) and the limit's segments in time: the base limit, and an R4 permission's limit
-- inside [permit_from, permit_until). -1 if it never fits.
local function earliest_fit(spec, now, used, buckets)
  local segments = {}
  local function segment(a, b, limit)
    if b > a then segments[#segments + 1] = {a, b, limit} end
  end
  local huge = 2 ^ 52
  if spec.permit_until > now and spec.permit_from < spec.permit_until then
    local from = math.max(now, spec.permit_from)
    segment(now, from, spec.base)
    segment(from, spec.permit_until, spec.permit)
    segment(spec.permit_until, huge, spec.base)
  else
    segment(now, huge, spec.base)
  end
  for _, seg in ipairs(segments) do
    local a, b, limit = seg[1], seg[2], seg[3]
    local at = -1
    if limit < 0 or used + spec.amount <= limit then
      at = a
    elseif spec.amount <= limit then
      -- Walk buckets oldest first until enough has left; a release earlier than the segment
      -- counts from the segment's start.
      local need = used + spec.amount - limit
      local released = 0
      for _, b_ in ipairs(buckets) do
        local start, sum = parse_bucket(b_)
        released = released + sum
        if released >= need then
          at = math.max(a, release_at(spec, start))
          break
        end
      end
    end
    if at >= 0 and at < b then return at end
  end
  return -1
end

local function remaining(spec, used)
  if spec.limit < 0 then return -1 end
  local r = spec.limit - used
  if r < 0 then return 0 end
  return r
end

-- Tamper evidence (R11): every audit record is appended here, nowhere else. Each carries its
-- stream's sequence number `seq` (1, 2, ...) and `hash` = SHA-1 of the previous record's hash
-- (empty for seq 1) and the record's own fields and values, seq included, in stored order,
-- each after a NUL byte: prev .. '\0' .. f1 .. '\0' .. v1 .. '\0' .. ... A NUL or \1 inside
-- a value is stuffed (\1 -> \1\1, NUL -> \1\2), so the encoding is unambiguous and, for
-- ordinary text (which holds neither byte), costs a verifier no per-field work;
-- gatekeeper/ledger/chain.py recomputes exactly this. The chain's head (seq, hash, id) lives in a hash
-- beside the stream, `STREAM:chain` (keys.chain_of, passed in KEYS): the same hash tag, so the
-- same Cluster slot. `args` is the XADD argument list ('XADD', stream, '*', field, value,
-- ...); seq and hash are added to it, so a refusal-index copy made from it carries them too.
-- Returns the record's ID.
--
-- With the store's clock the record's ID is the server's ('*'). With an instant the caller
-- fixed (INJECTED), the ID is at that instant, so that a record falls in the month its `time`
-- says (reports read streams by ID range): the first ID above the stream's last one (the chain
-- head's `id`), at the fixed millisecond, or just after the last one if that is later.
local STUFF = {['\0'] = '\1\2', ['\1'] = '\1\1'}
local function fixed_id(stream, last)
  if not last then  -- a stream older than the head's `id`
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if top[1] then last = top[1][1] end
  end
  if not last then return fmt(INJECTED) .. '-0' end
  local dash = string.find(last, '-', 1, true)
  local ms, seq = tonumber(string.sub(last, 1, dash - 1)), tonumber(string.sub(last, dash + 1))
  if INJECTED > ms then return fmt(INJECTED) .. '-0' end
  return fmt(ms) .. '-' .. fmt(seq + 1)
end

local function append_audit(args, chain)
  local head = redis.call('HMGET', chain, 'seq', 'hash', 'id')
  if INJECTED then args[3] = fixed_id(args[2], head[3]) end
  local seq = fmt(tonumber(head[1] or '0') + 1)
  args[#args + 1] = 'seq'
  args[#args + 1] = seq
  local parts = {head[2] or ''}
  for i = 4, #args do
    local v = tostring(args[i])
    args[i] = v
    if string.find(v, '[%z\1]') then v = string.gsub(v, '[%z\1]', STUFF) end
    parts[#parts + 1] = v
  end
  local hash = redis.sha1hex(table.concat(parts, '\0'))
  args[#args + 1] = 'hash'
  args[#args + 1] = hash
  local id = redis.call(unpack(args))
  redis.call('HSET', chain, 'seq', seq, 'hash', hash, 'id', id)
  return id
end

-- The refusal index beside an audit stream keeps a copy of its latest refusals under the same
-- IDs, so that a dashboard finds the newest refusals without reading every record. `args` is
-- the XADD argument list of the record ('XADD', stream, '*', field, value, ...). A copy keeps
-- the original's seq and hash but is not itself a chain: the index is capped and trimmed.
local REFUSAL_INDEX_LENGTH = 100
local function index_refusal(index, id, args)
  local copy = {'XADD', index, 'MAXLEN', REFUSAL_INDEX_LENGTH, id}
  for i = 4, #args do copy[#copy + 1] = args[i] end
  redis.call(unpack(copy))
end

-- gatekeeper.rules.outcomes.REFUSED, copied (tests/test_rules_once.py checks they agree).
local REFUSED = {refused = true, denied = true, conflict = true}

-- A reservation is 'reserved' from take.lua until settle.lua commits or refunds it. One left
-- unsettled longer than `timeout` ms (the process died between counting and delivering) is
-- closed as counted: it may have been delivered, and IDs delivered must stay counted (R2,
-- conservative). `reserved` is the pool's index (share id -> ms reserved); `prefix` the pool's
-- key prefix ('gk:{e:ROOT}:'); each closing appends a 'share.abandoned' record to `audit_key`.
local SHARE_OWNER = {'actor', 'entity', 'recipient', 'channel', 'kind', 'request_id'}
local STALE = {}  -- read once per call: checked for declared keys, then closed
local function stale_reservations(reserved, now, timeout)
  local before = string.format('%d', now - timeout)
  local seen = STALE[reserved .. ' ' .. before]
  if seen == nil then
    seen = redis.call('ZRANGEBYSCORE', reserved, '-inf', before, 'LIMIT', 0, 1000)
    STALE[reserved .. ' ' .. before] = seen
  end
  return seen
end

-- The share keys abandon_stale would touch that the caller did not declare (see the top).
local function undeclared_stale(reserved, prefix, now, timeout)
  local missing = {}
  for _, id in ipairs(stale_reservations(reserved, now, timeout)) do
    local key = prefix .. 'share:' .. id
    if not DECLARED[key] then missing[#missing + 1] = key end
  end
  return missing
end

local function undeclared(missing)
  return cjson.encode({status = 'undeclared', keys = missing})
end

local function abandon_stale(reserved, audit_key, chain, prefix, now, timeout)
  local stale = stale_reservations(reserved, now, timeout)
  local closed = 0
  for _, id in ipairs(stale) do
    local key = prefix .. 'share:' .. id
    local r = redis.call('HMGET', key, 'status', 'requested', 'granted', 'created')
    if r[1] == 'reserved' then
      redis.call('HSET', key, 'status', 'abandoned', 'settled', string.format('%d', now))
      closed = closed + 1
      local args = {'XADD', audit_key, '*', 'time', string.format('%d', now),
                    'outcome', 'abandoned', 'rule', 'R2', 'share_id', id,
                    'requested', r[2] or '0', 'granted', r[3] or '0'}
      local owner = redis.call('HMGET', key, unpack(SHARE_OWNER))
      for i, field in ipairs(SHARE_OWNER) do
        if field == 'kind' then
          args[#args + 1] = 'kind'
          args[#args + 1] = 'share.abandoned'
          args[#args + 1] = 'of'
          args[#args + 1] = owner[i] or ''
        elseif owner[i] then
          args[#args + 1] = field
          args[#args + 1] = owner[i]
        end
      end
      args[#args + 1] = 'message'
      args[#args + 1] = 'reserved at ' .. (r[4] or '?') .. ' ms and never settled (the process '
        .. 'delivering it stopped): closed as counted, since it may have been delivered (R2)'
      append_audit(args, chain)
    end
    redis.call('ZREM', reserved, id)
  end
  return closed
end

-- The pool's index of its keys (keys.pool_keys: key -> ms after which it is surely gone, 'inf'
-- without expiry), so that move.lua names every key it moves instead of scanning the keyspace.
-- Called after a script wrote `key`; the score only grows, by the Redis clock (never a test's
-- `now`), so an entry is pruned only once its key has expired.
local function index_key(index, key)
  local ttl = redis.call('PTTL', key)
  if ttl == -2 then return end
  local score = 'inf'
  if ttl >= 0 then score = string.format('%d', now_ms('') + ttl) end
  local old = redis.call('ZSCORE', index, key)
  if old == 'inf' or (old and score ~= 'inf' and tonumber(old) >= tonumber(score)) then return end
  redis.call('ZADD', index, score, key)
end

-- A key just created with a lifetime of `ttl` ms.
local function index_new(index, key, ttl)
  redis.call('ZADD', index, string.format('%d', now_ms('') + ttl), key)
end

-- A counter take.lua just charged: its bucket list and running total given `ttl` ms to live,
-- its days 400 days. One ZSCORE per charge: the entries are written with room to spare (a day
-- for the days, three for the list, whose lifetime may grow by up to a day between charges on
-- a calendar day), so again only about once a day; while the days' entry reaches past
-- now + 400 days, this charge is less than a day after it was written, so the list's entry
-- reaches past now + ttl too.
local function index_counter(index, key, sum_key, daily_key, ttl)
  local now = now_ms('')
  local old = redis.call('ZSCORE', index, daily_key)
  if old and (old == 'inf' or tonumber(old) >= now + 400 * DAY) then return end
  local score = string.format('%d', now + ttl + 3 * DAY)
  redis.call('ZADD', index, score, key, score, sum_key,
             string.format('%d', now + 401 * DAY), daily_key)
end

-- Forget index entries of keys that have expired (amortised: each is removed once).
local function prune_index(index)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', string.format('(%d', now_ms('')))
end

-- The pool's summary (keys.summary): per counter 'SUM:HEAD:TAIL', its running total and the
-- ms at which its oldest and its newest bucket leave the window. Until HEAD the counter's use
-- is SUM exactly; from TAIL it is 0; in between a reader peeks it. Every script that changes a
-- counter's buckets rewrites its entry beside the change (or drops it: a reader peeks a
-- counter without one), so that a dashboard reads one hash per pool. `spec` gives the window.
local function summary_field(key) return string.match(key, ':ctr:(.*)$') end

-- The entry of a counter whose total (a decimal string) and first and last bucket starts the
-- caller knows (take.lua has just read or written them: no call to read them again).
local function summary_entry(summary, spec, key, total, first, last)
  redis.call('HSET', summary, summary_field(key), total .. ':' .. fmt(release_at(spec, first))
             .. ':' .. fmt(release_at(spec, last)))
end

local function summarise(summary, spec, key, sum_key)
  local head = redis.call('LINDEX', key, 0)
  if not head then
    redis.call('HDEL', summary, summary_field(key))
    return
  end
  local first = parse_bucket(head)
  local last = parse_bucket(redis.call('LINDEX', key, -1))
  summary_entry(summary, spec, key, redis.call('GET', sum_key) or '0', first, last)
end

-- After a change to a counter's bucket sums (settle.lua): the new total, the same HEAD and
-- TAIL. `added` (a bucket was inserted, which may move either): HEAD 0 and TAIL never, so
-- that a reader peeks the counter, whether or not it had an entry before.
local NEVER = '9007199254740991'
local function resummarise(summary, key, sum_key, added)
  local field = summary_field(key)
  local total = redis.call('GET', sum_key) or '0'
  if added then
    redis.call('HSET', summary, field, total .. ':0:' .. NEVER)
    return
  end
  local old = redis.call('HGET', summary, field)
  if old then redis.call('HSET', summary, field, total .. string.match(old, '(:.*)$')) end
end
