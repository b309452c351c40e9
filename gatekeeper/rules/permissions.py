"""R4, decided here and only here: X's express written permission — its input and its period.

A permission is a limit (a number, or unlimited) that replaces R2's from its recording until
the end of its last valid day (exclusive), under a reference to X's letter. Every channel reads
what a person typed with `parse`, and every Python caller asks `in_force` whether it holds at a
time. The counting side, ``ledger/lua/_window.lua``'s ``read_spec``, mirrors `in_force` in Lua
(``permit_from <= now and now < permit_until``); tests/test_permissions.py checks that they agree
at the boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from gatekeeper.rules.errors import BadInput

MAX_LIMIT = 2**53 - 1  # the Lua scripts count in doubles, exact up to here
UNLIMITED = "unlimited"


def stored(limit: int | None) -> str:
    """A limit as the entity's hash and its audit record's facts keep it."""
    return UNLIMITED if limit is None else str(limit)


def shown(limit: int | None) -> str:
    """A limit as people read it (1,500,000 or unlimited), in messages and audit records."""
    return UNLIMITED if limit is None else f"{limit:,}"


def read_stored(text: str) -> int | None:
    """A limit as `stored` or `shown` wrote it."""
    return None if text == UNLIMITED else int(text.replace(",", ""))


def in_force(from_ms: int, until_ms: int, at_ms: int) -> bool:
    """Whether a permission recorded at `from_ms`, ending at `until_ms` (exclusive), holds at
    `at_ms`. Mirrored by _window.lua's read_spec: keep the two the same."""
    return from_ms <= at_ms < until_ms


@dataclass(frozen=True)
class Permit:
    """A permission as typed, checked: the limit (None = unlimited), its end, its reference."""

    limit: int | None
    until_ms: int  # the end of the last valid day, exclusive
    reference: str


def check_limit(limit: int | None) -> None:
    """A permission's limit: unlimited, or a whole number from 1 to MAX_LIMIT."""
    if limit is not None and not 0 < limit <= MAX_LIMIT:
        raise BadInput(f"R4: the limit must be a positive number up to {MAX_LIMIT:,} or "
                       f"'{UNLIMITED}', not {limit}", rule="R4", field="limit")


def check_reference(reference: str) -> None:
    if not reference.strip():
        raise BadInput("R4: the reference must identify X's written permission", rule="R4",
                       field="reference")


def parse_limit(text: str) -> int | None:
    """A limit as typed: a number (1500000, 1,500,000 or 1_500_000) or 'unlimited'."""
    text = text.strip()
    if text.lower() == UNLIMITED:
        return None
    digits = text.replace(",", "").replace("_", "").replace(" ", "")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 16) or int(digits) <= 0:
        raise BadInput(f"R4: the limit must be a positive number up to {MAX_LIMIT:,} or "
                       f"'{UNLIMITED}', not {text[:40]!r}", rule="R4", field="limit")
    limit = int(digits)
    check_limit(limit)
    return limit


def end_of_day_ms(day: str, timezone: str) -> int:
    """The end of the last valid day: the permission holds through `day`, in the zone."""
    try:
        d = date.fromisoformat(day.strip())
        end = datetime.combine(d + timedelta(days=1), dtime(0), ZoneInfo(timezone))
    except (ValueError, OverflowError):  # 9999-12-31 has no next day
        raise BadInput(f"R4: 'valid until' must be a date YYYY-MM-DD before 9999-12-31, not "
                       f"{day[:40]!r}", rule="R4", field="until") from None
    return int(end.timestamp() * 1000)


def last_day(until: int | str, timezone: str) -> str:
    """The last valid day of a permission, as it was typed (YYYY-MM-DD in the zone), from its
    exclusive end in ms or as ISO 8601: what a person reads, where "until 2027-01-02T00:00Z"
    reads as a day late."""
    if isinstance(until, str):
        until = int(datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp() * 1000)
    return datetime.fromtimestamp((until - 1) / 1000, ZoneInfo(timezone)).date().isoformat()


def parse(limit: str, until: str, reference: str, *, timezone: str, now_ms: int) -> Permit:
    """A permission as a person typed it (CLI options or the compliance form), checked whole:
    a limit, a last valid day (YYYY-MM-DD in `timezone`) still to come, and a reference."""
    permit = Permit(parse_limit(limit), end_of_day_ms(until, timezone), reference)
    if permit.until_ms <= now_ms:
        raise BadInput(f"R4: valid until {until.strip()[:40]} is already over; a permission "
                       "must end in the future", rule="R4", field="until")
    check_reference(reference)
    return permit
