-- append.lua: one audit record appended through the chain (append_audit in _window.lua), for
-- the records a Python transaction writes (deletion ingests and lifts, dataset removals): run
-- inside their MULTI, so the record still commits with the change it records.
--
-- KEYS[1]  the audit stream
-- KEYS[2]  its chain head (keys.chain_of: the same hash tag)
-- ARGV[1]  the instant a fixed clock holds (the record's ID is then at it), or '' (the
--          server's clock: ledger/clock.py)
-- ARGV     then field, value, field, value, ...
-- Returns the record's ID.

now_ms(ARGV[1])
local args = {'XADD', KEYS[1], '*'}
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
return append_audit(args, KEYS[2])
