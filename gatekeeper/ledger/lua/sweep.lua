-- sweep.lua: close a pool's reservations left unsettled longer than the timeout, as counted
-- (abandon_stale in _window.lua; take.lua does the same whenever it touches the pool).
--
-- KEYS[1]  the pool's index of open reservations
-- KEYS[2]  the pool's audit stream (a 'share.abandoned' record per reservation closed)
-- KEYS[3]  its chain head
-- KEYS[4]  the pool's share key with an empty id ('gk:{e:ROOT}:share:'), for the prefix
--          (never touched)
-- KEYS[5..] the share records of the reservations to close; when one is missing the answer
--          is {status: 'undeclared', keys} and nothing is changed
-- ARGV[1]  now in ms, or '' for the Redis clock
-- ARGV[2]  ms after which an unsettled reservation is closed
-- Returns JSON {status: 'ok', abandoned: n, open: reservations still open}

local now = now_ms(ARGV[1])
local prefix = string.sub(KEYS[4], 1, #KEYS[4] - #'share:')
local missing = undeclared_stale(KEYS[1], prefix, now, tonumber(ARGV[2]))
if #missing > 0 then return undeclared(missing) end
local abandoned = abandon_stale(KEYS[1], KEYS[2], KEYS[3], prefix, now, tonumber(ARGV[2]))
return cjson.encode({status = 'ok', abandoned = abandoned, open = redis.call('ZCARD', KEYS[1])})
