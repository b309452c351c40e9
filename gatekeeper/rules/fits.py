"""When a refused request fits whole again — decided once, for every page, file and answer.

The ledger answers a refusal with the earliest time the whole request fits (`available_at`, epoch
ms), or -1 when no release of capacity ever makes it fit (it is more than a limit). Read as a
time, -1 is 1969-12-31 23:59 UTC, and a spreadsheet guard turns it into ``'-1``; so nothing
formats that field itself: every dashboard row, audit page and file, CLI line, API answer and
report asks `fit` and shows `Fit.text`. A request that never fits whole is told how many of it
fit now ("export the first N", or "send the first N" for a share of IDs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# No release of capacity happens before this (2000-01-01 UTC, ms): an earlier "time" is a
# sentinel for "never", whoever wrote it, and is never shown as a date.
EARLIEST_MS = 946_684_800_000


@dataclass(frozen=True)
class Fit:
    """When the whole of a refused request fits: at `at_ms`, or never (`at_ms` None)."""

    at_ms: int | None
    first: int | None = None  # when never: how many fit now (the partial allowance), if known
    verb: str = "export"  # "export" (hydrated objects) or "send" (a share of IDs)

    @property
    def never(self) -> bool:
        return self.at_ms is None

    def text(self, when: Callable[[int], str]) -> str:
        """The reader's words; `when` formats epoch ms in the caller's zone and style."""
        if self.at_ms is not None:
            return f"fits whole again from {when(self.at_ms)}"
        if self.first:
            n = f"{self.first:,}"
            return f"never fits whole — {self.verb} the first {n}"
        return f"never fits whole — it is more than the limit; {self.verb} a smaller part"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.decode() if isinstance(value, bytes) else str(value or "").strip()
    try:
        return int(text)
    except ValueError:
        return None


def verb_for(kind: str | None) -> str:
    """"send" for a share of IDs, "export" for hydrated objects (and anything else)."""
    return "send" if (kind or "").startswith("share.") else "export"


def fit(available_at: Any, *, first: Any = None, kind: str | None = None) -> Fit | None:
    """The Fit of a refusal's `available_at` (epoch ms as int or text; -1, or any time before
    2000, is never), or None when there is none (not a refusal, or the field is absent)."""
    at = _int(available_at)
    if at is None:
        return None
    n = _int(first)
    return Fit(at if at >= EARLIEST_MS else None, n if n is not None and n > 0 else None,
               verb_for(kind))


def of_record(record: Any) -> Fit | None:
    """The Fit of an audit record (a mapping of its fields), or None when it has none."""
    return fit(record.get("available_at"), first=record.get("fits_now"), kind=record.get("kind"))
