"""Deletion notices as the compliance surfaces read them (issue 15 item 3, R9).

Four readers, each bounded by what it shows:

- the dashboard's panel: how many notices are open, how many of those are overdue (one ZCOUNT
  on the open notices sorted by deadline) and the first few, overdue first — the same few
  keys however many notices or entities there are (issue 14: the dashboard stays flat);
- an entity's panel on its data team's page (`/data`): the same for the open notices of ID
  shares to that one entity, from the open set intersected with the entity's notices;
- the compliance list (`/notices`): a page of the open (nearest deadline first) or of all
  (newest first) notices, `Notices.window`;
- the monthly report: per recipient, the notices opened, acknowledged and overdue in a month,
  from the notices themselves — the facts it counts (`Notices.touching`) of the notices opened
  in the month, open now or acknowledged since its start, not every notice ever opened.

A notice is *overdue* once its deadline (the ingest's time + 24 hours, `rules.notices`) has
passed with no acknowledgement; it stays overdue until acknowledged ("acknowledged late").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from gatekeeper.domain.figures import NoticeLate, NoticeMonth
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.notices import Notice, NoticeFacts
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules import notices as policy

SHOWN = 10  # open notices the dashboard lists (overdue first); the rest are on /notices
LISTED = 200  # overdue notices the report lists one by one; past this only counted


@dataclass(frozen=True)
class Panel:
    """The dashboard's deletion notices: counts and the nearest deadlines."""

    now_ms: int
    open: int
    overdue: int
    rows: list[Notice]


def age_ms(notice: Notice, now_ms: int) -> int:
    """Time since the deletion request the notice answers (its 24 hours run from there)."""
    return now_ms - (notice.deadline_ms - policy.DEADLINE_MS)


def panel(gate: Gate, now_ms: int, shown: int | None = None) -> Panel:
    """The open notices' counts and the `shown` (SHOWN) nearest deadlines (overdue ones
    first: the open set is sorted by deadline). Three round trips whatever the number of
    notices."""
    with failing_closed():
        # Overdue: deadline strictly before now (Notice.overdue).
        overdue = int(gate.client.zcount(keys.NOTICES_OPEN, "-inf", f"({now_ms}"))
    total, rows = gate.notices.window(open_only=True, start=0, count=shown or SHOWN)
    return Panel(now_ms, total, overdue, rows)


def for_entity(gate: Gate, entity: str, now_ms: int, shown: int | None = None) -> Panel:
    """`panel` for one entity's open notices (ID shares to it): counts and the `shown`
    (SHOWN) nearest deadlines, overdue first. One ZINTER of the open set (scored by deadline)
    with the entity's notices (weight 0) answers the IDs and deadlines of that entity's open
    notices only (one per deletion list that reached it, until acknowledged) — never its
    acknowledged history nor anyone else's; then `shown` hashes."""
    # Its own open notices' index (layout 5) when the store has it: Redis walks the smaller.
    mine = (keys.notices_open_of if gate.notices.indexed() else keys.notices_of)(
        policy.ENTITY, entity)
    with failing_closed():
        raw = gate.client.zinter({keys.NOTICES_OPEN: 1, mine: 0}, withscores=True)
    got = cast("list[tuple[bytes, float]]", raw)
    # Sorted by deadline (ties by id, as the open set's own order); overdue: deadline < now.
    overdue = sum(1 for _ident, deadline in got if deadline < now_ms)
    rows = gate.notices._many(ident for ident, _d in got[:shown or SHOWN])
    return Panel(now_ms, len(got), overdue, rows)


def _overdue_in(n: Notice | NoticeFacts, start: int, until: int) -> bool:
    """Whether `n` was past its deadline and not acknowledged at some moment of
    [start, until)."""
    acked = n.acked_ms
    return n.deadline_ms < until and (acked is None or (acked > start and acked > n.deadline_ms))


def month(gate: Gate, start: int, end: int, now_ms: int) -> tuple[list[NoticeMonth],
                                                                   list[NoticeLate]]:
    """Per recipient (people first, then entities, by name): the notices opened,
    acknowledged (and of those late) and overdue in [start, end), and the ones open at its
    end (or now, for the month under way); with the overdue notices listed, oldest deadline
    first (the first LISTED). Read from the notices the month can count
    (`Notices.touching`)."""
    return counted(gate.notices.touching(start, end), start, end, now_ms)


def counted(notices: Iterable[Notice | NoticeFacts], start: int, end: int, now_ms: int
            ) -> tuple[list[NoticeMonth], list[NoticeLate]]:
    """`month` of these notices (any others are counted in no row)."""
    until = min(end, now_ms)
    last = min(end - 1, now_ms)  # the window's last instant: the month's, or now
    rows: dict[tuple[str, str], NoticeMonth] = {}
    late: list[NoticeLate] = []
    for n in notices:
        opened = start <= n.opened_ms < end
        acked = n.acked_ms is not None and start <= n.acked_ms < end
        overdue = _overdue_in(n, start, until)
        open_at_end = n.opened_ms <= last and (n.acked_ms is None or n.acked_ms > last)
        if not (opened or acked or overdue or open_at_end):
            continue
        row = rows.setdefault((n.recipient_kind, n.recipient),
                              NoticeMonth(n.recipient_kind, n.recipient, n.entity))
        row.opened += opened
        row.ids += n.ids if opened else 0
        row.acknowledged += acked
        row.acknowledged_late += acked and n.acked_ms is not None and \
            n.acked_ms > n.deadline_ms
        row.overdue += overdue
        row.open_at_end += open_at_end
        if overdue:
            late.append(NoticeLate(n.id, n.recipient_kind, n.recipient, n.entity, n.opened_ms,
                                   n.deadline_ms, n.ids, n.acked_ms, n.acked_by))
    late.sort(key=lambda x: (x.deadline_ms, x.id))
    ordered = sorted(rows.values(), key=lambda r: (r.recipient_kind != policy.PERSON,
                                                    r.recipient))
    return ordered, late[:LISTED]
