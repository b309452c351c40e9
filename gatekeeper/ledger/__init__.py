"""The ledger: counting in Redis, atomically, by Lua scripts; the keys, the store and
the audit chain."""
