"""Which audit records a reader asks for (R11): since, until, entity, user, channel, outcome
and rule, parsed once from the CLI's options, the API's query or the audit page's form, and
matched against each record the same way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from gatekeeper.rules import policy
from gatekeeper.rules.errors import BadInput

FILTERS = ("since", "until", "entity", "user", "channel", "outcome", "rule")
RULE_RE = re.compile(r"^R(?:[1-9]|1[0-2])$")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Id = tuple[int, int]  # a stream entry ID: (ms, sequence)


def parse_id(text: str | bytes) -> Id | None:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    ms, sep, seq = text.partition("-")
    if not (sep and ms.isdigit() and seq.isdigit() and ms.isascii() and seq.isascii()):
        return None
    return int(ms), int(seq)


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC to the millisecond: 2026-11-24T09:30:00.125Z."""
    dt = EPOCH + timedelta(milliseconds=ms)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time_ms(name: str, value: Any) -> int:
    """An ISO 8601 date or time (naive = UTC) as epoch ms; BadInput naming the filter."""
    dt: datetime | None = None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            dt = datetime.fromisoformat(value.strip())
    if dt is None:
        raise BadInput(f"audit filter {name}: {value!r} is not an ISO 8601 date or time "
                       "(e.g. 2026-11-01 or 2026-11-01T12:00:00Z)", field=name, value=str(value))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - EPOCH) // timedelta(milliseconds=1)


def _id_of(record: Mapping[str, Any]) -> Id | None:
    ident = parse_id(str(record.get("id") or ""))
    if ident is None:
        t = str(record.get("time") or "")
        return (int(t), 0) if t.isdigit() else None
    return ident


@dataclass(frozen=True)
class AuditFilter:
    """Which audit records to show; every field optional, all given ones must hold.

    since (inclusive) and until (exclusive) bound the time a record was appended (its stream
    entry ID, on the Redis clock); user matches the actor or the recipient; entity is the
    record's entity exactly (a parent does not include its children).
    """

    since_ms: int | None = None
    until_ms: int | None = None
    entity: str | None = None
    user: str | None = None
    channel: str | None = None
    outcome: str | None = None
    rule: str | None = None

    def __post_init__(self) -> None:
        for name in ("since_ms", "until_ms"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise BadInput(f"audit filter {name[:-3]} must be a time", field=name[:-3])
        if (self.since_ms is not None and self.until_ms is not None
                and self.since_ms >= self.until_ms):
            raise BadInput(f"audit filter until ({iso_ms(self.until_ms)}) must be after since "
                           f"({iso_ms(self.since_ms)})", field="until")
        for name in ("entity", "user", "channel", "outcome", "rule"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise BadInput(f"audit filter {name} must be non-empty text", field=name)
        if self.channel is not None:
            channel = self.channel.strip().lower()
            if channel not in policy.CHANNELS:
                raise BadInput(f"audit filter channel: {self.channel!r} is not one of "
                               f"{', '.join(policy.CHANNELS)}", field="channel")
            object.__setattr__(self, "channel", channel)
        if self.rule is not None:
            rule = self.rule.strip().upper()
            if not RULE_RE.match(rule):
                raise BadInput(f"audit filter rule: {self.rule!r} is not a rule id R1…R12",
                               field="rule")
            object.__setattr__(self, "rule", rule)
        if self.outcome is not None:
            object.__setattr__(self, "outcome", self.outcome.strip().lower())
        for name in ("entity", "user"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, value.strip())

    @classmethod
    def parse(cls, mapping: Mapping[str, Any] | None) -> AuditFilter:
        """Filters from a query string, form or CLI options; empty values mean "any"."""
        if not mapping:
            return cls()
        unknown = sorted(str(k) for k in mapping if k not in FILTERS)
        if unknown:
            raise BadInput(f"unknown audit filter {', '.join(unknown)}: the filters are "
                           f"{', '.join(FILTERS)}", field=unknown[0])
        values: dict[str, Any] = {}
        for name in FILTERS:
            value = mapping.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if name in ("since", "until"):
                values[f"{name}_ms"] = _time_ms(name, value)
            elif not isinstance(value, str):
                raise BadInput(f"audit filter {name} must be text, not {type(value).__name__}",
                               field=name)
            else:
                values[name] = value
        return cls(**values)

    @property
    def is_empty(self) -> bool:
        """Whether every record matches."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def to_dict(self) -> dict[str, str]:
        """The set filters as strings under their parse() names (times ISO 8601 UTC)."""
        out = {}
        for name in FILTERS:
            value = getattr(self, f"{name}_ms" if name in ("since", "until") else name)
            if value is not None:
                out[name] = iso_ms(value) if isinstance(value, int) else value
        return out

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a record (as AuditLog yields it) is selected."""
        if self.since_ms is not None or self.until_ms is not None:
            ident = _id_of(record)
            if ident is None:
                return False  # a record of unknown time is in no time range
            if self.since_ms is not None and ident[0] < self.since_ms:
                return False
            if self.until_ms is not None and ident[0] >= self.until_ms:
                return False
        if self.entity is not None and record.get("entity") != self.entity:
            return False
        if self.user is not None and self.user not in (record.get("actor"),
                                                       record.get("recipient")):
            return False
        if self.channel is not None and record.get("channel") != self.channel:
            return False
        if self.outcome is not None and record.get("outcome") != self.outcome:
            return False
        return self.rule is None or record.get("rule") == self.rule
