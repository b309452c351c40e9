"""Whom the rules decide about — entities and users — as the rules read them.

The rules take plain data: any object with these attributes will do (the domain's `Entity` and
`User` dataclasses, or the small records `splitting` makes). Protocols, not imports, so that the
rules import nothing of the repositories that load and store them (STYLE.md habit 11).
"""

from __future__ import annotations

from typing import Protocol


class Attested(Protocol):
    """R8: who attested to X's terms for an entity."""

    @property
    def by(self) -> str: ...


class Permitted(Protocol):
    """R4: X's written permission — a limit (None = unlimited) from one time until another."""

    @property
    def limit(self) -> int | None: ...
    @property
    def valid_from_ms(self) -> int: ...
    @property
    def valid_until_ms(self) -> int: ...  # exclusive
    @property
    def reference(self) -> str: ...


class Party(Protocol):
    """What splitting (R10) reads of an entity: its name, its pool, who attested for it."""

    @property
    def name(self) -> str: ...
    @property
    def root(self) -> str: ...
    @property
    def terms(self) -> Attested | None: ...


class Recipient(Party, Protocol):
    """An entity as the rules read it (R2-R4, R8, R10)."""

    @property
    def kind(self) -> str: ...
    @property
    def research(self) -> bool: ...
    @property
    def research_recorded_by(self) -> str | None: ...
    @property
    def research_evidence(self) -> str | None: ...
    @property
    def research_recorded_at_ms(self) -> int | None: ...
    @property
    def parent(self) -> str | None: ...
    @property
    def created_at_ms(self) -> int: ...
    @property
    def former_root(self) -> str | None: ...
    @property
    def permission(self) -> Permitted | None: ...


class Member(Protocol):
    """What splitting (R10) reads of a user: its name and its entity."""

    @property
    def name(self) -> str: ...
    @property
    def entity(self) -> str: ...


class Person(Member, Protocol):
    """A user as the rules read it (R5, R6, R8, R12)."""

    @property
    def root(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def accepted_terms(self) -> bool: ...
