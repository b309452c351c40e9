"""R9 downstream, decided here and only here: who must delete what, and by when (issue 15).

R9 asks that content deleted, protected, suspended or withheld on X be deleted within 24 hours
by everyone who holds it. gatekeeper hides it from every future exit (`gatekeeper.rules.r9`);
for what already left, a *notice* tells each recipient what to delete:

- a delivery's recipient is the entity for an ID share (the entity holds the IDs) and the
  person for a hydrated export (the analyst holds the file);
- a delivery counts when IDs may have left: settled as delivered (or counted again), closed as
  counted (abandoned), or still open (a crash before its commit: counted until it is closed).
  A refunded reservation delivered nothing: no notice;
- what must be deleted is what R9 hides that this deletion list newly hides — the same rules
  as R9's exits (a post, a post by a listed user, a retweet of either) — found in the
  delivery's manifest; scrub_geo and reversals delete nothing;
- the deadline is the ingest's time plus 24 hours;
- a notice is read by its recipient: the person, or for an entity its data team (the people
  who make its ID shares) — of that entity only, not of its pool's other members.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatekeeper.rules.roles import MAY_SHARE_IDS
from gatekeeper.rules.subjects import Person

DEADLINE_MS = 24 * 3_600_000  # R9: deleted within 24 hours of the request
ENTITY, PERSON = "entity", "person"
# Reservation states (the share record's, or its settle audit record's outcome) whose IDs may
# have left the building. A refund gives back a delivery that never left.
MAY_HAVE_LEFT = ("delivered", "recounted", "abandoned", "reserved")
NOTHING_LEFT = ("refunded",)

POLICY_TEXT = (
    "R9 (X's Developer Policy): content deleted, protected, suspended or withheld on X must be "
    "deleted within 24 hours of a request by X or by the user — by everyone who holds it. "
    "The posts and users listed here were delivered to you by gatekeeper before X asked for "
    "their deletion. Delete every copy of them (files, databases, derived tables that hold "
    "their IDs or content) by the deadline, then confirm the deletion to your compliance "
    "contact, who records it.")


def recipient_of(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """(ENTITY or PERSON, name) of the delivery a manifest's meta describes; None when the
    meta names none (then no one can be told — never seen for deliveries gatekeeper wrote)."""
    kind = str(meta.get("kind") or "")
    if kind.startswith("share."):
        name = meta.get("entity") or meta.get("recipient")
        return (ENTITY, str(name)) if name else None
    if kind.startswith("export."):
        name = meta.get("recipient") or meta.get("actor")
        return (PERSON, str(name)) if name else None
    return None


def may_have_left(state: str | None) -> bool:
    """Whether a delivery whose reservation is in `state` may have delivered its IDs. An
    unknown state (the record expired and its settle record was not found) counts: a notice
    too many costs a recipient a look; one too few leaves deleted content in their hands."""
    return state not in NOTHING_LEFT


def deadline(ingested_ms: int) -> int:
    """When the recipients of a deletion list ingested at `ingested_ms` must have deleted."""
    return ingested_ms + DEADLINE_MS


def addressed_to(user: Person, recipient_kind: str, recipient: str) -> bool:
    """Whether `user` is the recipient of a notice to (`recipient_kind`, `recipient`), or
    speaks for it: the person a hydrated export's notice names; a data-team member (R12) of
    the entity an ID share's notice names. An analyst of that entity is not (she did not
    receive its ID files), nor is the data team of its pool's parent or children (each
    entity holds its own deliveries)."""
    if recipient_kind == PERSON:
        return user.name == recipient
    return recipient_kind == ENTITY and user.role in MAY_SHARE_IDS and user.entity == recipient
