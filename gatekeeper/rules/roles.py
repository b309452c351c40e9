"""R12, decided here and only here: who may do what.

Every channel asks the same question the same way: the web pages through
`channels.web.pages.role_required`, the API, the CLI and the library through `require_role`,
all with the tuples below. A new action gets its tuple here, never an ad-hoc one at the door.
"""

from __future__ import annotations

from gatekeeper.rules.errors import Forbidden
from gatekeeper.rules.subjects import Person

ROLES = ("analyst", "data", "compliance", "admin")

MAY_SHARE_IDS = ("data",)
MAY_EXPORT_HYDRATED = ("analyst",)
MAY_ADMINISTER = ("admin",)
MAY_RECORD_COMPLIANCE = ("compliance", "admin")
# /metrics names every entity and its usage: with server.metrics = "token", the same people
# who see the dashboard may scrape it.
MAY_READ_METRICS = MAY_RECORD_COMPLIANCE
# Quotas over the API: a data user reads the quotas of the entities it shares with (its own
# share answers show them anyway); the compliance officers read everyone's.
MAY_READ_QUOTAS = ("data", *MAY_RECORD_COMPLIANCE)
MAY_READ_OTHERS_QUOTA = MAY_RECORD_COMPLIANCE
MAY_INGEST_DELETIONS = MAY_RECORD_COMPLIANCE
# A recipient confirmed the deletion a notice asked for (issue 15): recorded by compliance.
MAY_ACK_NOTICES = MAY_RECORD_COMPLIANCE
# A notice's own recipient reads it and downloads its files: an analyst the notices of her
# exports, the data team those of its entity's ID shares (`rules.notices.addressed_to`).
MAY_RECEIVE_NOTICES = (*MAY_EXPORT_HYDRATED, *MAY_SHARE_IDS)
# Trace: which deliveries held a post, to whom (issue 15) — the compliance officer's question.
MAY_TRACE = MAY_RECORD_COMPLIANCE


def allows(user: Person, allowed: tuple[str, ...]) -> bool:
    """Whether the user's role is one of `allowed`."""
    return user.role in allowed


def require_role(user: Person, allowed: tuple[str, ...], action: str) -> None:
    """Refuse unless the user's role is one of `allowed` (R12)."""
    if not allows(user, allowed):
        raise Forbidden(
            f"R12: user {user.name!r} has role {user.role!r}; {action} needs role "
            f"{' or '.join(allowed)}",
            rule="R12",
        )
