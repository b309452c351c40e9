"""The demo's story: who runs gatekeeper, who it shares with, and five weeks of their work.

`gatekeeper serve --demo` loads it into an empty store. harbour-data is the organisation running
gatekeeper: it collected the posts, its data team (dan) shares IDs, its compliance officer
(carla) and admin (ada) run the service; it never receives a share itself, so it attests to
nothing (R8). Its customers are a company (acme-analytics, whose analyst ana exports hydrated
posts for herself), a university (exempt, R3) and, later, globex-media.

The five weeks before today are written through the library's own paths — ID shares, exports'
ledger takes, their refusals, a deletion list — with the gate's clock fixed at past instants
(`FixedClock`), so every audit record, stream ID and daily counter falls on its day and the
dashboard's 30-day charts, the audit log and the monthly report have something to show. The
store's clock takes over when the story ends.

The story has one possible split (R10) on purpose: in week 4 acme-analytics starts taking IDs
under a second entity, acme-analytics-labs, attested by the same person. That is what splitting
one entity into many looks like; the dashboard flags it and the officer decides (link it to
acme-analytics as its child, or leave it and record why). The first demo flagged acme-analytics
and the university instead, by accident: one "Demo Signatory" attested for both.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gatekeeper.domain import shares
from gatekeeper.domain.demo import DEMO_DATASET, Made, write_demo_dataset
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import charges
from gatekeeper.ledger.clock import FixedClock
from gatekeeper.ledger.reservation import Reservation
from gatekeeper.rules import policy
from gatekeeper.rules.errors import Forbidden, QuotaExceeded
from gatekeeper.rules.limits import DAY_MS

# Told (stage, done, total) as the build goes: "posts" generated, "bytes" of the file read
# while it is registered, "weeks" of history written.
Progress = Callable[[str, int, int], None]

OPERATOR = "harbour-data"  # the organisation running gatekeeper
# name, kind, research (R3), who attested to X's terms for it (R8)
CUSTOMERS = (
    ("acme-analytics", "commercial", False, "Priya Raman, Acme Analytics legal"),
    ("northfield-university", "academic", True, "Dr. Tomás Ortega, Northfield research office"),
)
LATER = {  # customers that arrive during the story
    "globex-media": ("commercial", False, "Kenji Watanabe, Globex Media counsel"),
    # R10, on purpose: the same person attests for a second acme entity.
    "acme-analytics-labs": ("commercial", False, "Priya Raman, Acme Analytics legal"),
}
SPLIT_EXAMPLE = ("acme-analytics", "acme-analytics-labs")
USERS = (("ana", "acme-analytics", "analyst"), ("dan", OPERATOR, "data"),
         ("carla", OPERATOR, "compliance"), ("ada", OPERATOR, "admin"))
WEEKS = 5
EXPORT_LANGS = ("ja", "ko", "es", "ar", "fr", "de", "ru", "zh", "hi", "tr", "it", "pt", "in")
STUDY_LANGS = ("es", "pt", "fr", "de", "it")


@dataclass
class Loaded:
    """What --demo created, with the secrets to print once."""

    dataset: str
    posts: int
    entities: list[str]
    passwords: dict[str, tuple[str, str]]  # user -> (role, password)
    token: str  # the data-team user's API token
    since_ms: int | None = None  # when the history starts (None: no history)

    def describe(self) -> str:
        entity = {name: home for name, home, _ in USERS}
        users = "\n".join(f"  {name:<6} {role:<11} {entity[name]:<15} {password}"
                          for name, (role, password) in self.passwords.items())
        customers = ", ".join(e for e in self.entities if e != OPERATOR)
        history = "" if self.since_ms is None else (
            f", and five weeks of its use (from "
            f"{datetime.fromtimestamp(self.since_ms / 1000, UTC):%Y-%m-%d}: shares, exports, "
            "refusals, a deletion list)")
        text = (f"demo loaded: dataset {self.dataset!r} ({self.posts:,} posts){history}\n"
                f"{OPERATOR} runs gatekeeper; it shares with {customers}\n"
                f"users (passwords shown once — note them now):\n{users}\n"
                f"API token of the data-team user dan (shown once):\n  {self.token}")
        if SPLIT_EXAMPLE[1] in self.entities:
            text += (f"\nR10 on the dashboard, on purpose: {SPLIT_EXAMPLE[1]} was attested by "
                     f"the same person as {SPLIT_EXAMPLE[0]} and shares its name — one entity "
                     "split in two? Link it as the child of acme-analytics (its entity page, or "
                     "`gatekeeper entity set-parent`), or keep them apart and record why.")
        return text


def load(gate: Gate, posts: int = 100_000, *, history: bool = True,
         progress: Progress | None = None) -> Loaded | None:
    """Fill an empty store with the demo; None (and nothing changed) if it holds any.

    With `history` (the default) the set-up happens five weeks ago and the weeks since are
    written day by day; without it everything happens now and nothing is shared or exported.
    """
    if gate.entities.names() or gate.datasets.list():
        return None
    report = progress or _quiet
    days = _working_days(gate.clock.now_ms()) if history else []
    # Over the same store, a clock the story moves: set-up at 9:00 on its first day, the
    # dataset registered at 10:00, then day after day.
    story = gate
    if days:
        story = Gate(gate.config, client=gate.client,
                     clock=FixedClock(gate.client, days[0] + 9 * HOUR))
    directory = gate.config.datasets_dir
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".demo-", suffix=".jsonl.gz")
    os.close(fd)
    tmp = Path(name)
    try:
        report("posts", 0, posts)  # at once: the users' password hashes, then the first
        passwords, token = _cast(story)  # chunk of posts, each take a while
        if isinstance(story.clock, FixedClock):
            story.clock.set(story.clock.now_ms() + HOUR)
        # The posts were collected before they were registered: none is newer than that.
        anchor = datetime.fromtimestamp(story.clock.now_ms() / 1000, UTC)
        made = write_demo_dataset(tmp, posts=posts, anchor=anchor,
                                  progress=lambda n: report("posts", n, posts))
        size, read = tmp.stat().st_size, 0

        def advance(n: int) -> None:
            nonlocal read
            read += n
            report("bytes", read, size)

        info = story.datasets.add(DEMO_DATASET, tmp, actor="dan", channel="cli",
                                  progress=advance)
    finally:
        tmp.unlink(missing_ok=True)
    if days:
        with tempfile.TemporaryDirectory(prefix="gatekeeper-demo-") as work:
            _Story(story, days, made, Path(work), report).run()
    return Loaded(DEMO_DATASET, info.posts, gate.entities.names(), passwords, token,
                  days[0] if days else None)


def _quiet(stage: str, done: int, total: int) -> None:
    return None


HOUR = 3_600_000


def _working_days(now_ms: int) -> list[int]:
    """Midnights (UTC) of the WEEKS * 5 working days before today, oldest first."""
    day = now_ms // DAY_MS * DAY_MS
    found: list[int] = []
    while len(found) < WEEKS * 5:
        day -= DAY_MS
        if datetime.fromtimestamp(day / 1000, UTC).weekday() < 5:
            found.append(day)
    return found[::-1]


def _cast(gate: Gate) -> tuple[dict[str, tuple[str, str]], str]:
    """The operator, its first customers and the four users; dan's API token."""
    e, u = gate.entities, gate.users
    e.add(OPERATOR, kind="commercial", research=False, parent=None, actor="ada",
          channel="cli")
    for name, kind, research, _ in CUSTOMERS:
        e.add(name, kind=kind, research=research, parent=None, actor="ada", channel="cli")
    passwords = {}
    for name, entity, role in USERS:
        password = secrets.token_urlsafe(12)
        u.add(name, entity=entity, role=role, password=password, actor="ada", channel="cli")
        passwords[name] = (role, password)
    for name, _, _, by in CUSTOMERS:
        e.accept_terms(name, by=by, actor="carla", channel="web")
    u.accept_terms("ana", actor="ana", channel="web")  # R8: before any hydrated export
    return passwords, u.create_token("dan", actor="dan", channel="web")


class _Story:
    """Five weeks of work, a working day at a time, each act at its hour of the day."""

    def __init__(self, gate: Gate, days: list[int], made: list[Made], work: Path,
                 report: Progress) -> None:
        self.gate, self.days, self.made, self.work, self.report = gate, days, made, work, report
        self.by_lang: dict[str, list[Made]] = {}
        for m in made:
            self.by_lang.setdefault(m.lang, []).append(m)
        self.clock = gate.clock
        n = len(made)
        self.sizes = {"acme-analytics": max(5, n // 160), "northfield-university": max(10, n // 50),
                      "globex-media": max(5, n // 200), "acme-analytics-labs": max(5, n // 250)}
        self.next = 0  # acme's daily refresh takes the next slice of the posts
        self.last_refresh: list[str] = []
        self.gone: list[Made] = []  # posts a deletion list named (R9)
        self.newest_first = [-m.ms for m in made]  # made is newest first: bisect finds a date
        self.later: dict[int, list[tuple[float, Callable[[], object]]]] = {}

    def at(self, day: int, hour: float) -> None:
        assert isinstance(self.clock, FixedClock)
        self.clock.set(self.days[day] + int(hour * HOUR))

    def run(self) -> None:
        for i in range(len(self.days)):
            if i % 5 == 0:
                self.report("weeks", i // 5, WEEKS)
            # Each act at its hour, in order: the clock only moves forward.
            for hour, act in sorted(self.plan(i), key=lambda a: a[0]):
                self.at(i, hour)
                act()
        self.report("weeks", WEEKS, WEEKS)

    def plan(self, i: int) -> list[tuple[float, Callable[[], object]]]:
        """Day `i`'s acts, each with its hour (UTC)."""
        weekday = datetime.fromtimestamp(self.days[i] / 1000, UTC).weekday()  # Monday is 0
        acts: list[tuple[float, Callable[[], object]]] = self.later.pop(i, [])
        if i >= 1:
            acts.append((8.5, lambda: self.refresh(i)))
        if i == 7:
            acts.append((7, lambda: self.deletions(i)))
        if i == 13:  # the nightly script retries: the same key is counted once
            acts.append((8.75, lambda: self.share(
                "retry", "acme-analytics", self.last_refresh, "brand monitoring: daily refresh",
                key=f"refresh-{self.date(i)}")))
        for day, name in ((11, "globex-media"), (16, "acme-analytics-labs")):
            if i == day:  # the admin adds a customer; the officer records its terms later
                acts.append((9, functools.partial(self.add_customer, name)))
        globex = ("globex-media", "ja", "audience research: Japanese music fans")
        if i == 11:  # R8: globex has not attested yet: denied, and audited
            acts.append((11, lambda: self.study(*globex)))
        if i == 12:
            acts += [(10, lambda: self.terms("globex-media")), (11, lambda: self.study(*globex))]
        if i == 16:
            acts.append((9.5, lambda: self.terms("acme-analytics-labs")))
        if i > 12 and weekday == 2:
            acts.append((15, lambda: self.study("globex-media", "ko",
                                                "audience research: K-pop fans")))
        if i > 16 and i % 2:
            acts.append((16, lambda: self.study("acme-analytics-labs", "en",
                                                "model training set")))
        if weekday in (1, 3) and i >= 2:
            acts.append((13, lambda: self.study(
                "northfield-university", STUDY_LANGS[i % len(STUDY_LANGS)],
                "replication study: football talk across languages")))
        if weekday == 4 and i >= 4:
            acts.append((13, lambda: self.authors(i)))
        if i == 3:
            acts += self.quota_story(i)
        elif weekday in (0, 2, 4) and i >= 1:
            lang = EXPORT_LANGS[i % len(EXPORT_LANGS)]
            acts.append((14.5, lambda: self.export(["xlsx", "pdf"][i % 2], {"lang": lang})))
        return acts

    def add_customer(self, name: str) -> None:
        kind, research, _ = LATER[name]
        self.gate.entities.add(name, kind=kind, research=research, parent=None, actor="ada",
                               channel="web")

    def date(self, i: int) -> str:
        return f"{datetime.fromtimestamp(self.days[i] / 1000, UTC):%Y-%m-%d}"

    def terms(self, name: str) -> None:
        self.gate.entities.accept_terms(name, by=LATER[name][2], actor="carla", channel="web")

    # --- shares: the CLI's path (gatekeeper share --ids), the files kept in `work` ----------

    def share(self, label: str, entity: str, ids: list[str], purpose: str, *,
              kind: str = "posts", key: str | None = None) -> None:
        path = self.work / f"{label}.txt"
        path.write_text("".join(i + "\n" for i in ids))
        with contextlib.suppress(Forbidden):  # R8: refused and audited; the story goes on
            shares.share_to_file(self.gate, actor="dan", entity=entity, out=self.work / "out",
                                 kind=kind, ids_path=path, purpose=purpose,
                                 idempotency_key=key, channel="cli")
        path.unlink()

    def refresh(self, i: int) -> None:
        """acme's nightly script takes the next slice of the collection."""
        n = self.sizes["acme-analytics"]
        start = self.next % len(self.made)
        self.last_refresh = [m.id for m in self.made[start:start + n]]
        self.next += n
        self.share(f"refresh-{self.date(i)}", "acme-analytics", self.last_refresh,
                   "brand monitoring: daily refresh", key=f"refresh-{self.date(i)}")

    def study(self, entity: str, lang: str, purpose: str) -> None:
        ids = [m.id for m in self.by_lang.get(lang, [])[:self.sizes[entity]]]
        self.share(f"{entity}-{lang}", entity, ids, purpose)

    def authors(self, i: int) -> None:
        """Fridays: the university's authors of the week's study (User IDs: recorded, R2)."""
        lang = STUDY_LANGS[i % len(STUDY_LANGS)]
        ids = list(dict.fromkeys(m.author for m in self.by_lang.get(lang, [])))
        self.share(f"authors-{lang}", "northfield-university",
                   ids[:self.sizes["northfield-university"] // 4],
                   "replication study: the authors", kind="users")

    # --- R9: X's compliance stream lists posts acme is about to receive ----------------------

    def deletions(self, i: int) -> None:
        n = self.sizes["acme-analytics"]
        start = self.next % len(self.made)
        gone = self.made[start:start + max(2, n // 25)]
        self.gone += gone
        lines = [json.dumps({"id": m.id, "action": "delete", "reason": reason,
                             "created_at": datetime.fromtimestamp(m.ms / 1000, UTC)
                             .isoformat(timespec="milliseconds").replace("+00:00", "Z")})
                 .encode() for m, reason in zip(gone, ("deleted", "protected") * len(gone),
                                                strict=False)]
        self.gate.deletions.add(lines, kind="posts",
                                source=f"tweets_compliance_{self.date(i)}.jsonl",
                                actor="carla", channel="cli")

    # --- exports: what hydrated.export counts, without writing the file ---------------------

    def matching(self, filters: dict[str, str]) -> int:
        """How many posts a `lang` or `since` filter selects, less those listed deleted (R9)."""
        if "lang" in filters:
            lang = filters["lang"]
            return len(self.by_lang.get(lang, [])) - sum(m.lang == lang for m in self.gone)
        since = int(datetime.fromisoformat(filters["since"]).replace(tzinfo=UTC).timestamp())
        return (bisect.bisect_right(self.newest_first, -since * 1000)
                - sum(m.ms >= since * 1000 for m in self.gone))

    def selected(self, filters: dict[str, str]) -> list[Made]:
        """The posts `matching` counts (an export's manifest holds them and their authors)."""
        if "lang" in filters:
            chosen = self.by_lang.get(filters["lang"], [])
        else:
            since = int(datetime.fromisoformat(filters["since"]).replace(tzinfo=UTC).timestamp())
            chosen = self.made[:bisect.bisect_right(self.newest_first, -since * 1000)]
        gone = {m.id for m in self.gone}
        return [m for m in chosen if m.id not in gone]

    def export(self, fmt: str, filters: dict[str, str]) -> bool:
        """ana's export of a selection as the export page counts it: R5/R8 checked, the
        ledger's take (R6, and R2 for her entity), settled as delivered. False if refused."""
        posts = self.matching(filters)
        if not posts:
            return True
        gate, user = self.gate, self.gate.users.get("ana")
        policy.check_hydrated_export(user, "web")
        entity = gate.entities.get(user.entity)
        counters = charges.export_counters(user, entity, gate.entities.pool_root(entity),
                                           posts, 0, gate.config.limits)
        audit = {"actor": user.name, "entity": user.entity, "recipient": user.name,
                 "channel": "web", "kind": f"export.{fmt}", "request_id": uuid.uuid4().hex,
                 "dataset": DEMO_DATASET, "filters": json.dumps(filters, sort_keys=True)}
        try:
            grant = gate.ledger.take(user.root, counters, requested=posts,
                                     share_id=audit["request_id"], audit=audit)
        except QuotaExceeded:
            return False  # refused whole and audited by the ledger
        res = Reservation(gate.ledger, user.root, user.entity, f"export.{fmt}", grant, counters,
                          None, audit)
        # Like any delivery, its manifest before the commit (issue 15): posts and authors.
        chosen = self.selected(filters)
        try:
            ref = gate.manifests.write(grant.share_id, grant.now_ms,
                                       [int(m.id) for m in chosen],
                                       [int(m.author) for m in chosen],
                                       {k: audit[k] for k in ("recipient", "entity", "channel",
                                                              "kind", "actor")})
        except BaseException:
            res.refund()
            raise
        audit.update(ref.audit())
        res.commit_before_sending()
        return True

    def quota_story(self, i: int) -> list[tuple[float, Callable[[], object]]]:
        """R6: ana exports the English posts, then asks for the last weeks of everything,
        which would pass her daily limit: refused, with when it fits; the next day it does."""
        english = {"lang": "en"}
        acts: list[tuple[float, Callable[[], object]]] = [
            (10, lambda: self.export("xlsx", english))]
        limit = self.gate.config.limits.hydrated_per_recipient
        newest = self.made[0].ms if self.made else 0
        for weeks in range(1, 9):
            since = (newest - weeks * 7 * DAY_MS) // DAY_MS * DAY_MS  # a date filter's midnight
            when = {"since": f"{datetime.fromtimestamp(since / 1000, UTC):%Y-%m-%d}"}
            if limit - self.matching(english) < self.matching(when) <= limit:
                break
        else:
            return acts  # too few posts for the story (a small demo)

        def again() -> None:
            self.export("xlsx", when)

        self.later[i + 1] = [(10.5, again)]
        return [*acts, (15, again)]
