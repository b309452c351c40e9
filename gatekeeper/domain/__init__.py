"""The domain: entities, users, datasets, shares, exports, the audit log and the
report — what the channels ask for, over the rules and the ledger."""
