"""Entities: the organisations IDs are shared with, and the facts that exempt or permit them.

An entity's facts live in its pool's slot (``{e:ROOT}``, see keys.py) and every change is written
together with its audit record by record.lua, so no fact exists without who recorded it (R11).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger, iso
from gatekeeper.ledger.store import failing_closed, text
from gatekeeper.rules import permissions, policy
from gatekeeper.rules.errors import BadInput, Conflict, NotFound
from gatekeeper.rules.limits import DAY_MS, Window


@dataclass(frozen=True)
class Attestation:
    """R8: who attested to X's terms, which version, when, and who recorded it."""

    by: str
    version: str
    at_ms: int
    recorded_by: str


@dataclass(frozen=True)
class Permission:
    """R4: X's express written permission — a new limit (None = unlimited) for a period."""

    limit: int | None
    valid_from_ms: int
    valid_until_ms: int  # exclusive
    reference: str
    recorded_by: str

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "from": iso(self.valid_from_ms),
                "until": iso(self.valid_until_ms), "reference": self.reference,
                "recorded_by": self.recorded_by}


@dataclass(frozen=True)
class Entity:
    name: str
    kind: str
    research: bool
    research_recorded_by: str | None
    research_evidence: str | None
    research_recorded_at_ms: int | None
    parent: str | None
    root: str
    created_at_ms: int
    terms: Attestation | None
    permission: Permission | None
    former_root: str | None = None  # the pool it was the root of before joining this one (R10)
    linked_at_ms: int | None = None  # when it joined this pool, if it was linked (R10)

    @staticmethod
    def from_hash(h: dict[str, str]) -> Entity:
        terms = None
        if h.get("terms_by"):
            terms = Attestation(h["terms_by"], h["terms_version"], int(h["terms_at"]),
                                h["terms_recorded_by"])
        permission = None
        if h.get("permit_until"):
            limit = h["permit_limit"]
            permission = Permission(
                permissions.read_stored(limit), int(h["permit_from"]),
                int(h["permit_until"]), h["permit_reference"], h["permit_recorded_by"])
        return Entity(
            name=h["name"],
            kind=h["kind"],
            research=h.get("research") == "1",
            research_recorded_by=h.get("research_recorded_by") or None,
            research_evidence=h.get("research_evidence") or None,
            research_recorded_at_ms=int(h["research_recorded_at"])
            if h.get("research_recorded_at") else None,
            parent=h.get("parent") or None,
            root=h["root"],
            created_at_ms=int(h["created_at"]),
            terms=terms,
            permission=permission,
            former_root=h.get("former_root") or None,
            linked_at_ms=int(h["linked_at"]) if h.get("linked_at") else None,
        )

    def root_on(self, day: int) -> bool:
        """Whether its own R2 counter was a pool's on this UTC epoch day (R10): always for a
        root, before the day it was linked for a linked entity, never for a child created so.
        Summing the own days of the roots of each day counts every pool's usage once."""
        if self.root == self.name:
            return True
        return self.linked_at_ms is not None and day < self.linked_at_ms // DAY_MS

    def exemption(self) -> dict[str, Any] | None:
        """The R3 exemption as shown in the quota object, or None."""
        if not policy.exempt(self):
            return None
        return {"rule": "R3", "kind": "academic", "purpose": "non-commercial research",
                "recorded_by": self.research_recorded_by,
                "recorded_at": iso(self.research_recorded_at_ms or 0),
                "evidence": self.research_evidence}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "research": self.research,
            "parent": self.parent, "pool": self.root, "former_pool": self.former_root,
            "created_at": iso(self.created_at_ms),
            "exemption": self.exemption(),
            "terms": None if self.terms is None else {
                "by": self.terms.by, "version": self.terms.version,
                "at": iso(self.terms.at_ms), "recorded_by": self.terms.recorded_by},
            "permission": None if self.permission is None else self.permission.to_dict(),
        }


@dataclass(frozen=True)
class Link:
    """What linking an entity to a parent did (R10)."""

    entity: Entity
    merged_post_ids: int  # Post IDs in the window now counted against the pool
    moved_keys: int

    def describe(self) -> str:
        e = self.entity
        text = f"R10: {e.name} now pools its Post IDs with {e.root} (parent {e.parent})"
        if not self.merged_post_ids:
            return f"{text}; it received no Post IDs in the window, so pool usage is unchanged"
        n = self.merged_post_ids
        return (f"{text}; {n:,} Post ID{'' if n == 1 else 's'} it received in the window now "
                "count against the pool")


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def check_name(name: str, what: str) -> None:
    if not keys.valid_name(name):
        raise BadInput(
            f"{what} name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


class Entities:
    """Reads and changes entities; every change is audited in the same script."""

    def __init__(self, client: redis.Redis, ledger: Ledger) -> None:
        self.client = client
        self.ledger = ledger

    def root_of(self, name: str) -> str:
        with failing_closed():
            root = self.client.hget(keys.ENTITIES, name)
        if root is None:
            raise NotFound(f"no entity named {name!r}")
        return text(root)

    def pool_root(self, entity: Entity) -> Entity:
        """R10: the root entity of `entity`'s pool, whose limit the pool shares (itself for a
        root)."""
        return entity if entity.root == entity.name else self.get(entity.root)

    def get(self, name: str) -> Entity:
        root = self.root_of(name)
        with failing_closed():
            raw = self.client.hgetall(keys.entity(root, name))
        if not raw:
            raise NotFound(f"no entity named {name!r}")
        return Entity.from_hash(_decode(raw))

    def names(self) -> list[str]:
        with failing_closed():
            return sorted(text(k) for k in self.client.hkeys(keys.ENTITIES))

    def all(self) -> list[Entity]:
        """Every entity, read with one pipelined round trip."""
        directory = self._directory()
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            for name, root in directory:
                pipe.hgetall(keys.entity(root, name))
            rows = pipe.execute()
        return [Entity.from_hash(_decode(r)) for r in rows if r]

    def _directory(self) -> list[tuple[str, str]]:
        with failing_closed():
            raw = self.client.hgetall(keys.ENTITIES)
        return sorted((text(k), text(v)) for k, v in raw.items())

    def add(self, name: str, *, kind: str, research: bool, parent: str | None, actor: str,
            channel: str) -> Entity:
        """Create an entity; an academic one doing research is exempt from R2 (R3)."""
        check_name(name, "entity")
        if kind not in policy.KINDS:
            raise BadInput(f"entity kind {kind!r} is not one of {', '.join(policy.KINDS)}")
        if research and kind != "academic":
            raise BadInput("R3: --research applies only to --kind academic (non-commercial "
                           "research on behalf of an academic institution)", rule="R3")
        root = name
        if parent is not None:
            root = self.get(parent).root  # R10: a child is pooled with its parent's pool
        with failing_closed():
            self.client.sadd(keys.AUDIT_STREAMS, keys.audit(root))  # found by the audit reader
            claimed = self.client.hsetnx(keys.ENTITIES, name, root)
            if not claimed and self.client.exists(keys.entity(self.root_of(name), name)):
                raise Conflict(f"an entity named {name!r} already exists")
        fields: dict[str, Any] = {"name": name, "kind": kind, "research": "1" if research else "0",
                                  "parent": parent or "", "root": root,
                                  "created_at": "@now", "created_by": actor}
        if research:
            fields.update(research_recorded_by=actor, research_recorded_at="@now")
        rule = "R3" if research else ("R10" if parent else "R11")
        detail = f"kind={kind} research={'yes' if research else 'no'} parent={parent or '-'}"
        self._record(root, name, "create", fields, actor, channel, "entity.add", rule, detail)
        return self.get(name)

    def accept_terms(self, name: str, *, by: str, actor: str, channel: str) -> Entity:
        """R8: record that `by` attested, for the entity, to X's terms."""
        if not by.strip():
            raise BadInput("R8: --by must name the person who attested", rule="R8")
        entity = self.get(name)
        fields = {"terms_by": by, "terms_version": policy.TERMS_VERSION, "terms_at": "@now",
                  "terms_recorded_by": actor}
        self._record(entity.root, name, "update", fields, actor, channel, "entity.terms", "R8",
                     f"attested by {by} to {', '.join(policy.TERMS)} ({policy.TERMS_VERSION})")
        return self.get(name)

    def permit(self, name: str, *, limit: int | None, until_ms: int, reference: str, actor: str,
               channel: str) -> Entity:
        """R4: record X's written permission: a new limit until `until_ms` (exclusive)."""
        permissions.check_reference(reference)
        permissions.check_limit(limit)
        entity = self.get(name)
        fields = {"permit_limit": permissions.stored(limit),
                  "permit_from": "@now", "permit_until": str(until_ms),
                  "permit_reference": reference, "permit_recorded_by": actor}
        self._record(entity.root, name, "update", fields, actor, channel, "entity.permit", "R4",
                     f"limit {permissions.shown(limit)} until {iso(until_ms)}; reference: "
                     f"{reference}")
        return self.get(name)

    def set_academic(self, name: str, *, kind: str, research: bool, evidence: str, actor: str,
                     channel: str) -> Entity:
        """R3: record the entity's kind and research purpose, with evidence, who and when.

        The exemption holds only while kind is academic *and* research is recorded; recording
        anything else ends it at once.
        """
        if kind not in policy.KINDS:
            raise BadInput(f"entity kind {kind!r} is not one of {', '.join(policy.KINDS)}")
        if research and kind != "academic":
            raise BadInput("R3: non-commercial research exempts only academic entities",
                           rule="R3")
        if research and not evidence.strip():
            raise BadInput("R3: say what shows the research purpose (evidence)", rule="R3")
        entity = self.get(name)
        fields = {"kind": kind, "research": "1" if research else "0",
                  "research_evidence": evidence.strip(),
                  "research_recorded_by": actor if research else "",
                  "research_recorded_at": "@now" if research else ""}
        self._record(entity.root, name, "update", fields, actor, channel, "entity.academic",
                     "R3", f"kind={kind} research={'yes' if research else 'no'}; evidence: "
                     f"{evidence.strip() or '-'}")
        return self.get(name)

    def revoke_permit(self, name: str, *, reason: str, actor: str, channel: str) -> Entity:
        """R4: end a written permission now; R2's limit applies again at once."""
        entity = self.get(name)
        if entity.permission is None:
            raise BadInput(f"R4: {name} has no written permission to revoke", rule="R4")
        if not reason.strip():
            raise BadInput("R4: say why the permission is revoked", rule="R4")
        self._record(entity.root, name, "update",
                     {"permit_until": "@now", "permit_revoked_by": actor}, actor, channel,
                     "entity.permit_revoked", "R4",
                     f"permission {entity.permission.reference} revoked: {reason.strip()}")
        return self.get(name)

    def set_parent(self, name: str, *, parent: str, reason: str, r2_window: Window,
                   cluster: bool, actor: str, channel: str) -> Link:
        """R10: link an existing entity to a parent, so its Post IDs are pooled with the
        parent's pool from now on — including what it received in the current window.

        The entity must be the root of its own pool, without children. Its pool's keys move
        into the parent's pool in one script (move.lua); its old audit stream stays.
        """
        if not parent.strip():
            raise BadInput(f"R10: name the entity {name} is to be linked to", rule="R10")
        entity, target = self.get(name), self.get(parent)
        if not reason.strip():
            raise BadInput("R10: say why these entities are one (the reason is audited)",
                           rule="R10")
        if name == parent:
            raise BadInput(f"R10: {name} cannot be its own parent", rule="R10")
        if target.root == entity.root:
            raise BadInput(f"R10: {parent} is already in the pool of {entity.root}; "
                           f"{name} cannot be its child", rule="R10")
        if entity.root != name:
            raise BadInput(f"R10: {name} is already pooled with {entity.root} (parent "
                           f"{entity.parent}); its usage belongs to that pool and cannot move "
                           "out of it", rule="R10")
        if cluster or self.ledger.cluster:
            raise BadInput(f"R10: moving {name}'s pool needs a single Redis server (its keys "
                           "change Cluster slot); on Redis Cluster, link an entity when it is "
                           "created (entity add --parent)", rule="R10")
        message = (f"{name} joined the pool of {target.root} as a child of {parent}: "
                   f"{reason.strip()}")
        done = self.ledger.move(
            name, parent=parent, root=target.root, r2_window=r2_window,
            fields={"actor": actor, "entity": name, "channel": channel, "kind": "entity.parent",
                    "outcome": "changed", "rule": "R10", "parent": parent, "message": message})
        if done.status == "has_children":
            raise BadInput(f"R10: {name} is the parent of {', '.join(done.children)}; a pool "
                           "has one root, so link those to the new parent instead",
                           rule="R10")
        if done.status == "in_flight":
            raise Conflict(f"R10: a share or export for {name}'s pool is being delivered now "
                           f"(share {done.share}); nothing was changed, try again in a "
                           "minute", rule="R10")
        if done.status != "ok":  # not_root, parent_moved, exists: changed under our feet
            raise Conflict(f"R10: {name} or {parent} changed while linking them "
                           f"({done.status}); nothing was changed, try again", rule="R10")
        return Link(self.get(name), done.merged, done.moved)

    def _record(self, root: str, name: str, mode: str, fields: dict[str, Any], actor: str,
                channel: str, kind: str, rule: str, message: str) -> None:
        # The facts as written, for readers (the monthly report) that must not parse messages;
        # '@now' values are the record's own time.
        facts = json.dumps({k: v for k, v in fields.items() if v != "@now"}, sort_keys=True)
        self.ledger.record(
            keys.entity(root, name), keys.audit(root), mode=mode, fields=fields,
            audit={"actor": actor, "entity": name, "channel": channel, "kind": kind,
                   "outcome": "changed", "rule": rule, "message": message, "facts": facts},
            subject=f"entity {name!r}",
        )
