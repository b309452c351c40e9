"""The audit trail (R11): append-only Redis streams, one per pool plus one for the system.

Records are only ever appended (XADD, inside the same script or transaction as the decision they
record); no code path edits or deletes them.
"""

from __future__ import annotations

from typing import Any

from gatekeeper import keys
from gatekeeper.errors import GatekeeperError
from gatekeeper.ledger import Ledger

FIELDS = ("time", "actor", "entity", "recipient", "channel", "kind", "requested", "granted",
          "rule", "outcome", "request_id")


def stream(root: str | None) -> str:
    """The audit stream of a pool, or the system stream for None."""
    return keys.SYS_AUDIT if root is None else keys.audit(root)


def record_denial(ledger: Ledger, root: str | None, refusal: GatekeeperError,
                  fields: dict[str, Any]) -> None:
    """Append the audit record of a policy refusal; it changes nothing else."""
    ledger.record(keys.placeholder(root), stream(root), mode="audit", fields={},
                  audit={**fields, "outcome": "denied", "rule": refusal.rule or "",
                         "granted": 0, "message": refusal.message})
