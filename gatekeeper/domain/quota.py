"""The quota object of SPEC.md: used, limit, remaining and when capacity returns."""

from __future__ import annotations

from typing import Any

from gatekeeper.domain.gate import Gate
from gatekeeper.domain.users import User
from gatekeeper.ledger import charges
from gatekeeper.ledger.ledger import CounterState, iso
from gatekeeper.rules.limits import Counter
from gatekeeper.rules.permissions import in_force


def _view(name: str, kind: str, counter: Counter, state: CounterState) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "rule": counter.rule,
        "limit": state.limit,
        "used": state.used,
        "remaining": state.remaining,
        "window": counter.window.name,
        "releases": [{"at": iso(at), "amount": amount} for at, amount in state.releases],
    }


def entity_quota(gate: Gate, name: str) -> dict[str, Any]:
    """R2 for one entity: its own Post IDs, the pool it belongs to (R10), R3/R4 facts."""
    entity = gate.entities.get(name)
    root = gate.entities.pool_root(entity)
    counters = charges.id_share_counters(entity, root, "posts", 0, gate.config.limits)
    user_ids = charges.id_share_counters(entity, root, "users", 0, gate.config.limits)
    now, states = gate.ledger.peek([*counters, *user_ids])
    own = len(counters) - 1  # a child's own counter comes after its pool's
    out = _view(name, "entity", counters[own], states[own])
    out["exemption"] = entity.exemption()
    p = entity.permission
    out["permission"] = None if p is None or not in_force(p.valid_from_ms, p.valid_until_ms, now) \
        else {"limit": p.limit, "until": iso(p.valid_until_ms), "reference": p.reference}
    out["user_ids"] = states[-1].used  # recorded, not capped (R2)
    out["pool"] = None
    if entity.root != name:
        pool = _view(root.name, "entity", counters[0], states[0])
        pool["exemption"] = root.exemption()
        out["pool"] = pool
    out["as_of"] = iso(now)
    return out


def hydrated_usage(gate: Gate, user: User) -> tuple[CounterState, str]:
    """R6 for one recipient as the export form shows it: the counter now, its window's name."""
    counter = charges.hydrated_counter(user, 0, gate.config.limits)
    return gate.ledger.peek([counter])[1][0], counter.window.name


def user_quota(gate: Gate, name: str) -> dict[str, Any]:
    """R6 for one recipient: hydrated objects in the current day window."""
    user = gate.users.get(name)
    counter = charges.hydrated_counter(user, 0, gate.config.limits)
    now, (state,) = gate.ledger.peek([counter])
    out = _view(name, "user", counter, state)
    out.update(exemption=None, permission=None, entity=user.entity, as_of=iso(now))
    return out


def seconds_to_next_release(gate: Gate, counter: Counter) -> int:
    """Whole seconds until the oldest use `counter` holds leaves its window and capacity
    returns (0 when it holds none): the RateLimit-Reset of an API grant."""
    now, (state,) = gate.ledger.peek([counter], next_only=True)
    if not state.releases:
        return 0
    return max(0, -(-(state.releases[0][0] - now) // 1000))
