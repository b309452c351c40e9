-- append.lua: one audit record appended through the chain (append_audit in _window.lua), for
-- the records a Python transaction writes (deletion ingests and lifts, dataset removals): run
-- inside their MULTI, so the record still commits with the change it records.
--
-- KEYS[1]  the audit stream
-- KEYS[2]  its chain head (keys.chain_of: the same hash tag)
-- ARGV     field, value, field, value, ...
-- Returns the record's ID.

local args = {'XADD', KEYS[1], '*'}
for i = 1, #ARGV do args[#args + 1] = ARGV[i] end
return append_audit(args, KEYS[2])
