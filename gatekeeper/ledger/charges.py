"""The counters a request charges, placed in the store: the rules' charges with their keys.

`gatekeeper.rules.policy` decides what a share or an export charges (R2, R6, R10) without
knowing where counters live; this module gives each charge its key (`keys.counter`), so the
ledger can count it.
"""

from __future__ import annotations

from gatekeeper.config import LimitsConfig
from gatekeeper.ledger import keys
from gatekeeper.rules import policy
from gatekeeper.rules.limits import Charge, Counter
from gatekeeper.rules.subjects import Person, Recipient


def counter(charge: Charge) -> Counter:
    """The counter a charge names."""
    return Counter(keys.counter(charge.pool, charge.scope, charge.owner), charge.rule,
                   charge.window, charge.limit, charge.amount)


def id_share_counters(entity: Recipient, root: Recipient, kind: str, amount: int,
                      cfg: LimitsConfig) -> list[Counter]:
    """The counters an ID share to `entity` charges (policy.id_share_charges)."""
    return [counter(c) for c in policy.id_share_charges(entity, root, kind, amount, cfg)]


def hydrated_counter(user: Person, amount: int, cfg: LimitsConfig) -> Counter:
    """The R6 counter of one recipient (policy.hydrated_charge)."""
    return counter(policy.hydrated_charge(user, amount, cfg))


def export_counters(user: Person, entity: Recipient, root: Recipient, posts: int, users: int,
                    cfg: LimitsConfig) -> list[Counter]:
    """What a hydrated export charges (policy.export_charges)."""
    return [counter(c) for c in policy.export_charges(user, entity, root, posts, users, cfg)]
