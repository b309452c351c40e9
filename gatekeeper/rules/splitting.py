"""Possible splitting of one entity into many (R10): overlapping names or people.

Plain Python, no I/O: the dashboard hands it entities and users and shows the groups it finds,
each with the links that put it together.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gatekeeper.rules.subjects import Member, Party


@dataclass(frozen=True)
class SplitFlag:
    """Entities in different pools that may be one entity split up (R10), and why."""

    entities: tuple[str, ...]
    reasons: tuple[str, ...]


# Words that name a legal form or "university", not who an organisation is.
SUFFIXES = frozenset({"inc", "incorporated", "ltd", "limited", "llc", "llp", "lp", "gmbh", "ag",
                      "sa", "sas", "sarl", "bv", "nv", "plc", "corp", "corporation", "co",
                      "company", "the", "university", "univ", "uni"})
MIN_PREFIX = 5  # "acme" is a prefix of too many names to mean anything
MAX_REASONS = 8
_WORD = re.compile(r"[^\W_]+")


def normalise_entity(name: str) -> str:
    """An entity name as compared for R10: casefolded, without punctuation or legal suffixes."""
    words = _WORD.findall(name.casefold())
    kept = [w for w in words if w not in SUFFIXES]
    return "".join(kept or words)


def normalise_person(name: str) -> str:
    """A user name or attesting person as compared for R10: letters and digits, casefolded;
    an address's local part ("jane.doe@x.org" and "Jane Doe" compare equal)."""
    return "".join(_WORD.findall(name.casefold().partition("@")[0]))


def _distance(a: str, b: str, most: int) -> int:
    """Levenshtein distance, or most + 1 as soon as it is known to exceed `most`."""
    if abs(len(a) - len(b)) > most:
        return most + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        if min(current) > most:
            return most + 1
        previous = current
    return previous[-1]


def _deletions(word: str, depth: int) -> set[str]:
    out, frontier = {word}, {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1:] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


class _Groups:
    """Entities linked so far (union by relabelling the smaller group: lookups are one dict
    read, which matters when every pair of a thousand numbered names is a candidate)."""

    def __init__(self) -> None:
        self.of: dict[str, int] = {}
        self.members: dict[int, list[str]] = {}
        self.reasons: dict[int, list[str]] = {}

    def same(self, a: str, b: str) -> bool:
        ga = self.of.get(a)
        return ga is not None and ga == self.of.get(b)

    def link(self, a: str, b: str, why: str) -> None:
        for x in (a, b):
            if x not in self.of:
                self.of[x] = len(self.of)
                self.members[self.of[x]] = [x]
        ga, gb = self.of[a], self.of[b]
        if ga == gb:
            return  # a link inside a group already found explains nothing new
        if len(self.members[ga]) < len(self.members[gb]):
            ga, gb = gb, ga
        for x in self.members[gb]:
            self.of[x] = ga
        self.members[ga] += self.members.pop(gb)
        self.reasons[ga] = [*self.reasons.get(ga, []), *self.reasons.pop(gb, []), why]


def _name_links(names: dict[str, str], groups: _Groups) -> Iterable[tuple[str, str, str]]:
    """Pairs of entity names that look alike, with why: equal once normalised, within a few
    edits (2 for names of 5+ characters, 1 for 3-4: short names are all a few edits apart),
    or one a prefix of the other (5+ characters). Pairs already grouped are not checked."""
    by_norm: dict[str, list[str]] = {}
    for name, norm in names.items():
        by_norm.setdefault(norm, []).append(name)
    norms = sorted(by_norm)
    for norm in norms:
        group = sorted(by_norm[norm])
        for other in group[1:]:
            yield group[0], other, (f"{group[0]} and {other} are the same name once case, "
                                    f"punctuation and legal suffixes are set aside ({norm!r})")
    # Names within 2 edits share a string left after deleting up to 2 characters from each
    # (then checked exactly): near-linear where comparing every pair would be quadratic.
    buckets: dict[str, list[str]] = {}
    for norm in norms:
        if len(norm) >= 3:
            for variant in _deletions(norm, 2 if len(norm) >= MIN_PREFIX else 1):
                buckets.setdefault(variant, []).append(by_norm[norm][0])
    failed: set[tuple[str, str]] = set()
    for bucket in buckets.values():
        for i, a in enumerate(bucket):
            for b in bucket[i + 1:]:
                if groups.same(a, b) or (a, b) in failed:
                    continue
                na, nb = names[a], names[b]
                most = 2 if min(len(na), len(nb)) >= MIN_PREFIX else 1
                d = _distance(na, nb, most)
                if d <= most:
                    yield a, b, f"{a} and {b} are {d} edit{'s' * (d > 1)} apart"
                else:
                    failed.add((a, b))
    for i, a in enumerate(norms):
        if len(a) < MIN_PREFIX:
            continue
        for b in norms[i + 1:]:
            if not b.startswith(a):
                break
            first, second = by_norm[a][0], by_norm[b][0]
            if not groups.same(first, second):
                yield first, second, f"{first} is the start of {second}"


def _people_links(entities: Sequence[Party], users: Sequence[Member]
                  ) -> Iterable[tuple[str, str, str]]:
    """Entities that share a person: users whose names differ only in case or punctuation,
    or the same person attesting to X's terms (R8) for both."""
    seen: dict[str, tuple[str, str]] = {}
    for u in sorted(users, key=lambda u: u.name):
        norm = normalise_person(u.name)
        if not norm:
            continue
        if norm in seen and seen[norm][1] != u.entity:
            other, entity = seen[norm]
            yield entity, u.entity, (f"user {other} of {entity} and user {u.name} of "
                                     f"{u.entity} look like the same person")
        seen.setdefault(norm, (u.name, u.entity))
    attested: dict[str, tuple[str, str]] = {}
    for e in entities:
        norm = normalise_person(e.terms.by) if e.terms is not None else ""
        if not norm:
            continue
        if norm in attested:
            by, first = attested[norm]
            same = by == e.terms.by  # type: ignore[union-attr]
            yield first, e.name, (
                f"{by!r} attested to X's terms (R8) for both {first} and {e.name}" if same
                else f"{by!r} attested to X's terms (R8) for {first} and "
                     f"{e.terms.by!r} for {e.name}")  # type: ignore[union-attr]
        else:
            attested[norm] = (e.terms.by, e.name)  # type: ignore[union-attr]


@dataclass(frozen=True)
class _Attested:
    by: str


@dataclass(frozen=True)
class _Party:
    """An entity as splitting reads it, rebuilt from splitting_of's key."""

    name: str
    root: str
    terms: _Attested | None


@dataclass(frozen=True)
class _Member:
    name: str
    entity: str


@functools.lru_cache(maxsize=4)
def splitting_of(key: tuple[tuple[tuple[str, str, str], ...], tuple[tuple[str, str], ...]]
                  ) -> tuple[SplitFlag, ...]:
    """possible_splitting, remembered while names, pools, attestations and users stay the
    same (comparing 1,000 numbered names takes a few hundred milliseconds)."""
    entities = [_Party(name, root, _Attested(by) if by else None) for name, root, by in key[0]]
    users = [_Member(name, entity) for name, entity in key[1]]
    return tuple(possible_splitting(entities, users))


def possible_splitting(entities: Sequence[Party], users: Sequence[Member]) -> list[SplitFlag]:
    """Groups of entities in different pools whose names or people overlap (R10), each with
    the links that put it together. Entities already pooled count as one: never flagged."""
    root = {e.name: e.root for e in entities}
    names = {e.name: normalise_entity(e.name) for e in entities}
    groups = _Groups()
    links = itertools.chain(_name_links(names, groups), _people_links(entities, users))
    for a, b, why in links:
        if root.get(a) != root.get(b):
            groups.link(a, b, why)
    flags = []
    for gid, members in groups.members.items():
        reasons = groups.reasons.get(gid, [])
        shown = reasons[:MAX_REASONS]
        if len(reasons) > MAX_REASONS:
            shown.append(f"… and {len(reasons) - MAX_REASONS:,} more links")
        flags.append(SplitFlag(tuple(sorted(members)), tuple(shown)))
    return sorted(flags, key=lambda f: (-len(f.entities), f.entities))
