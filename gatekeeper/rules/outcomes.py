"""What an audit record says happened (R11): every outcome, and which of them are refusals.

The dashboard, the monthly report, the audit log page and the ledger's refusal index all read
these; ``ledger/lua/_window.lua`` keeps its own copy of REFUSED (a script cannot import), and
tests/test_rules_once.py checks that the two agree.
"""

from __future__ import annotations

OUTCOMES = ("granted", "partial", "refused", "denied", "delivered", "refunded", "replayed",
            "in_progress", "abandoned", "recounted", "conflict", "changed", "ingested")
# Refused by a quota (refused), by policy or sign-in (denied), or an idempotency key reused
# for another request (conflict): what the dashboard and the report list as refusals.
REFUSED = ("refused", "denied", "conflict")
