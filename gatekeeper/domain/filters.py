"""A selection of posts — since, until, lang, contains, author — parsed once from the CLI's
options, the API's JSON or the web form, and matched against each post the same way."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from gatekeeper.domain.formats import X_TIME, parse_time, x_time
from gatekeeper.rules.errors import BadInput

FILTER_FIELDS = ("since", "until", "lang", "contains", "author")
LANG_RE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*", re.IGNORECASE)
AUTHOR_RE = re.compile(r"[A-Za-z0-9_]{1,50}")


@dataclass(frozen=True)
class Filters:
    """A selection of posts; the same object serves the CLI, the HTTP API and the web form.

    since (inclusive) and until (exclusive) bound created_at; lang is exact, case-insensitive;
    contains is a case-insensitive substring of the text; author is a username (with or
    without '@', case-insensitive) or a numeric user ID.
    """

    since: datetime | None = None
    until: datetime | None = None
    lang: str | None = None
    contains: str | None = None
    author: str | None = None
    # Derived for matches(): X's created_at strings compare in time order; casefolded text.
    _since: str | None = field(default=None, init=False, repr=False, compare=False)
    _until: str | None = field(default=None, init=False, repr=False, compare=False)
    _needle: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                dt = parse_time(value)
                if dt is None:
                    raise BadInput(f"filter {name}: {value!r} is not an ISO 8601 date or time "
                                   "(e.g. 2026-11-01 or 2026-11-01T12:00:00Z)",
                                   field=name, value=str(value))
                object.__setattr__(self, name, dt.astimezone(UTC))
        if self.since and self.until and self.since >= self.until:
            raise BadInput(f"filter until ({x_time(self.until)}) must be after since "
                           f"({x_time(self.since)})", field="until", value=str(self.until))
        for name, pattern, hint in (("lang", LANG_RE, "a language code such as en, ja or pt"),
                                    ("author", AUTHOR_RE, "a username or a numeric user ID")):
            value = getattr(self, name)
            if value is not None:
                text = value.strip().removeprefix("@") if isinstance(value, str) else None
                if text is None or not pattern.fullmatch(text):
                    raise BadInput(f"filter {name}: {value!r} is not {hint}", field=name,
                                   value=str(value))
                object.__setattr__(self, name, text.lower())
        if self.contains is not None and not isinstance(self.contains, str):
            raise BadInput("filter contains must be text", field="contains",
                           value=str(self.contains))
        if self.since is not None:
            object.__setattr__(self, "_since", x_time(self.since))
        if self.until is not None:
            object.__setattr__(self, "_until", x_time(self.until))
        if self.contains is not None:
            object.__setattr__(self, "_needle", self.contains.casefold())

    @classmethod
    def parse(cls, mapping: Mapping[str, Any] | None) -> Filters:
        """Filters from a form, query or JSON object; empty values mean "no filter"."""
        if not mapping:
            return cls()
        if not isinstance(mapping, Mapping):
            raise BadInput("filters must be an object of since, until, lang, contains, author")
        unknown = sorted(str(k) for k in mapping if k not in FILTER_FIELDS)
        if unknown:
            raise BadInput(f"unknown filter {', '.join(unknown)}: the filters are "
                           f"{', '.join(FILTER_FIELDS)}", field=unknown[0])
        values: dict[str, Any] = {}  # since/until as text or dates: __post_init__ parses them
        for name in FILTER_FIELDS:
            value = mapping.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if not isinstance(value, str | datetime | date) or (
                    isinstance(value, date) and name not in ("since", "until")):
                raise BadInput(f"filter {name} must be text, not {type(value).__name__}",
                               field=name, value=str(value))
            values[name] = value
        return cls(**values)

    @property
    def is_empty(self) -> bool:
        """Whether every post matches."""
        return all(getattr(self, name) is None for name in FILTER_FIELDS)

    def to_dict(self) -> dict[str, str]:
        """The canonical JSON form: set fields only, times in UTC with Z."""
        out = {}
        for name in FILTER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, datetime):
                spec = "milliseconds" if value.microsecond else "seconds"
                value = value.isoformat(timespec=spec).replace("+00:00", "Z")
            if value is not None:
                out[name] = value
        return out

    def matches(self, post: Mapping[str, Any]) -> bool:
        """Whether a post (as iter_posts yields it) is selected."""
        if self.lang is not None and str(post.get("lang") or "").lower() != self.lang:
            return False
        if self._since is not None or self._until is not None:
            created = post.get("created_at")
            if not (isinstance(created, str) and X_TIME.fullmatch(created)):
                dt = parse_time(created)
                if dt is None:
                    return False  # a post of unknown time is in no time range
                created = x_time(dt)
            if (self._since is not None and created < self._since) or (
                    self._until is not None and created >= self._until):
                return False
        if self._needle is not None and self._needle not in str(post.get("text") or "").casefold():
            return False
        if self.author is not None and post.get("author_id") != self.author:
            author = post.get("author") or {}
            return str(author.get("username") or "").lower() == self.author
        return True
