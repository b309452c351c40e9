-- record.lua: write one administrative change and its audit record together (R11), so no
-- change exists without its record. Values equal to '@now' become the Redis time (ms).
--
-- KEYS[1]  the hash to change (entity, user or token hash), or a placeholder (audit only)
-- KEYS[2]  the audit stream in the same slot
-- KEYS[3]  its chain head
-- KEYS[4]  the pool's moved marker (R10, move.lua), or a placeholder that is never set
-- KEYS[5]  the stream's refusal index: a record whose outcome is refused, denied or conflict
--          is copied there
-- KEYS[6]  (a pool's hash only) the pool's index of its keys, where the hash is entered
-- ARGV[1]  now in ms, or '' for the Redis clock
-- ARGV[2]  'create' (the hash must not exist), 'update' (it must), 'set' (either way),
--          or 'audit' (record only, change nothing)
-- ARGV[3]  F, the number of field/value pairs to set; then those pairs; then audit pairs
-- Returns JSON {status: ok | exists | missing | moved, now}; moved carries the new root

local now = now_ms(ARGV[1])
local mode = ARGV[2]
local f = tonumber(ARGV[3])
local moved = redis.call('GET', KEYS[4])
if moved then return cjson.encode({status = 'moved', root = moved, now = fmt(now)}) end
local exists = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'create' and exists then return cjson.encode({status = 'exists', now = fmt(now)}) end
if mode == 'update' and not exists then
  return cjson.encode({status = 'missing', now = fmt(now)})
end

local function value(v)
  if v == '@now' then return fmt(now) end
  return v
end

if mode ~= 'audit' and f > 0 then
  local args = {'HSET', KEYS[1]}
  for i = 4, 3 + 2 * f do args[#args + 1] = value(ARGV[i]) end
  redis.call(unpack(args))
  if KEYS[6] then index_key(KEYS[6], KEYS[1]) end
end
local args = {'XADD', KEYS[2], '*', 'time', fmt(now)}
local refused = false
for i = 4 + 2 * f, #ARGV do
  args[#args + 1] = value(ARGV[i])
  if ARGV[i - 1] == 'outcome' and (i - 4 - 2 * f) % 2 == 1 and REFUSED[ARGV[i]] then
    refused = true
  end
end
local id = append_audit(args, KEYS[3])
if refused then index_refusal(KEYS[5], id, args) end
return cjson.encode({status = 'ok', now = fmt(now), audit_id = id})
