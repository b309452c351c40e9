"""Fault injection on the real embedded Redis, the real CLI and a real `gatekeeper serve`.

Seeded runs of ID shares (CLI and API) and hydrated exports (the web form), each with a fault
at one failpoint (gatekeeper.faults): the process is SIGKILLed (`kill`), the Redis server is
SIGKILLed under it (`kill-store`), the disk fills (`enospc`), or nothing happens. Some runs
retry an earlier request with its Idempotency-Key. After every run, with the store back:

(a) every ID and hydrated object delivered is counted, per entity (R2) and per recipient (R6)
    — and no share that delivered anything was refunded;
(b) the audit's totals equal the ledger's (grants - refunds + recounts == each counter, R11);
(c) no readable hydrated byte and no spool or partial file is on disk (R7), and no refund
    stays owed once the store answers;
(d) the store answers again;
(e) every process that was not killed answered as documented, and truthfully: "nothing was
    delivered" means nothing arrived and nothing stays counted, "delivered" means the file
    is there whole;
(f) a retry gets what the ledger promises: in_progress while the first reservation is open,
    the first answer once it is counted for good, a fresh grant after a refund.

GATEKEEPER_FAULT_SEED and GATEKEEPER_FAULT_RUNS change the seed and the number of runs.
"""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
import zipfile
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultkit import LEFTOVER, Answer, Client, Lab, Run, Server, alert, leftovers
from live import ARTIFACTS

from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules.limits import Counter, Limit, hydrated_window, post_id_window

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

SEED = int(os.environ.get("GATEKEEPER_FAULT_SEED", "20261128"))
RUNS = int(os.environ.get("GATEKEEPER_FAULT_RUNS", "240"))
ENTITIES = ("acme", "beta")
ANALYSTS = {"ana": "acme", "bea": "beta"}
DATASET_POSTS = 2500

POINTS = {
    "cli": ("share.reserved", "share.writing", "deliver.written", "deliver.committed"),
    "api": ("api.committed", "api.streaming"),
    "web": ("export.reserved", "export.writing", "export.written", "export.committed",
            "export.streaming"),
}
ACTIONS = {"cli": ("kill", "kill-store", "enospc", None), "api": ("kill", "kill-store", "enospc"),
           "web": ("kill", "kill-store", "enospc")}
# A full disk only where something is being written: the ID file, the export's spool (created
# at export.reserved, written at export.writing) and the response (streaming).
ENOSPC_POINTS = {"share.writing", "export.reserved", "export.writing", "api.streaming",
                 "export.streaming"}
TAKES = {"granted", "partial", "refused", "replayed", "in_progress", "conflict"}
USAGE = ("share.posts", "export.xlsx", "export.pdf")
COUNTED = {"reserved", "delivered", "abandoned"}
NOTHING = "nothing was delivered"


@dataclass
class Attempt:
    """One request of the mix and what became of it."""

    n: int
    channel: str  # cli | api | web
    entity: str
    recipient: str  # the entity for an ID share, the analyst for an export
    fault: str | None
    size: int  # IDs, or the export's posts
    key: str | None = None
    first: int = 0  # the first ID of an ID share
    fmt: str = "xlsx"
    retry_of: Attempt | None = None
    expect_take: str | None = None  # for a retry: what the ledger must answer
    answer: str = ""  # the process's answer, for the tally and the messages
    delivered: int = 0
    take: str | None = None
    share_id: str | None = None
    fired: bool = False
    says_nothing: bool = False  # the answer said nothing was delivered
    says_replay: bool = False  # ... said nothing more was counted, the first delivery was

    @property
    def action(self) -> str | None:
        return self.fault.split(":")[1] if self.fault else None

    def __str__(self) -> str:
        retry = f" retry of #{self.retry_of.n}" if self.retry_of else ""
        return (f"#{self.n} {self.channel} {self.entity}/{self.recipient} {self.size} "
                f"fault={self.fault} key={self.key}{retry} -> {self.answer} "
                f"take={self.take} share={self.share_id} delivered={self.delivered}")


@dataclass
class Share:
    entity: str
    recipient: str
    kind: str
    granted: int
    delivered: int = 0


@dataclass
class Books:
    """What the audit says, read incrementally; what was delivered, per share."""

    shares: dict[str, Share] = field(default_factory=dict)
    r2: Tally = field(default_factory=Tally)  # entity -> grants - refunds + recounts
    r6: Tally = field(default_factory=Tally)  # recipient -> the same for exports
    last: dict[str, str] = field(default_factory=dict)  # audit stream -> last ID read


class Suite:
    def __init__(self, base: Path) -> None:
        self.rng = random.Random(SEED)
        try:
            self.lab = Lab(base, dataset_posts=DATASET_POSTS, limits=(
                "post_ids_per_entity = 100000000\nhydrated_per_recipient = 100000000"))
            for name in ENTITIES:
                self.lab.entity(name)
            self.token = self.lab.user("dan", "acme", "data")
            for name, entity in ANALYSTS.items():
                self.lab.user(name, entity, "analyst")
        except BaseException:
            EmbeddedServer(base / "var").stop()  # the lab failed half-way: stop its store
            raise
        self.books = Books()
        self.attempts: list[Attempt] = []
        self.violations: list[tuple[Attempt, str]] = []
        self.seen: set[str] = set()
        self.tally: Tally = Tally()
        self.next_id = 1_500_000_000_000_000_000
        self.server: Server | None = None
        self.browsers: dict[str, Client] = {}
        # Children are forked from this process: with other threads a fork may copy a lock
        # one of them holds (shown in the report in case a child ever hangs).
        self.threads = threading.active_count()
        self.window_r2 = post_id_window(self.lab.gate.config.limits)
        self.window_r6 = hydrated_window(self.lab.gate.config.limits)

    # --- the mix ------------------------------------------------------------------------------

    def plan(self, n: int) -> Attempt:
        rng = self.rng
        channel = rng.choices(("cli", "api", "web"), weights=(45, 30, 25))[0]
        action = rng.choice(ACTIONS[channel])
        points = [p for p in POINTS[channel] if action != "enospc" or p in ENOSPC_POINTS]
        fault = f"{rng.choice(points)}:{action}" if action else None
        earlier = [a for a in self.attempts if a.channel == channel and a.key and not a.retry_of]
        if channel != "web" and earlier and rng.random() < 0.25:
            first = rng.choice(earlier)
            return Attempt(n, channel, first.entity, first.recipient, fault, first.size,
                           first.key, first.first, retry_of=first)
        if channel == "web":
            user = rng.choice(sorted(ANALYSTS))
            fmt = "pdf" if rng.random() < 0.1 else "xlsx"
            size = rng.randint(200, 300) if fmt == "pdf" else rng.randint(600, 2000)
            return Attempt(n, channel, ANALYSTS[user], user, fault, size, fmt=fmt)
        entity = rng.choice(ENTITIES)
        # API answers stream in 64 KiB chunks: enough IDs that api.streaming is reached.
        size = rng.randint(4000, 20000) if channel == "api" else int(rng.choice(
            (1, rng.randint(2, 100), rng.randint(100, 20000))))
        key = f"{channel}-{n}-{rng.randrange(10**6)}" if rng.random() < 0.8 else None
        self.next_id += size
        return Attempt(n, channel, entity, entity, fault, size, key, self.next_id - size)

    def run(self, n: int) -> None:
        a = self.plan(n)
        self.attempts.append(a)
        if a.retry_of:
            a.expect_take = self.expected_take(a)
        store_pid = self.lab.store_pid()
        if a.channel == "cli":
            self.cli(a)
        elif a.channel == "api":
            self.api(a)
        else:
            self.web(a)
        store_down = not self.lab.store.running()
        if a.action == "kill-store":
            a.fired = store_down
        elif store_down:
            self.violation(a, f"the store (pid {store_pid}) went down without a kill-store")
        self.tally[("planned", a.fault or "none")] += 1
        if a.fired:
            self.tally[("fired", a.fault)] += 1
        self.after(a, store_down)

    def expected_take(self, a: Attempt) -> str:
        """What the ledger must answer a retry, from the state of the key's first share."""
        assert a.key
        client = self.lab.gate.client
        result = client.hget(keys.idempotency(a.entity, "dan", a.key), "result")
        if result is None:
            return "granted"
        first = json.loads(result)["share_id"]
        status = (client.hget(keys.share(a.entity, first), "status") or b"").decode()
        return {"reserved": "in_progress", "delivered": "replayed",
                "abandoned": "replayed"}.get(status, "granted")

    # --- the three channels -------------------------------------------------------------------

    def cli(self, a: Attempt) -> None:
        base = a.retry_of or a
        ids = self.lab.work / f"ids-{base.n}.txt"
        if not a.retry_of:
            ids.write_text("".join(f"{i}\n" for i in range(a.first, a.first + a.size)))
        out = self.lab.work / f"out-{a.n}.txt"
        args = ["share", "--as", "dan", "--entity", a.entity, "--ids", str(ids), "--out",
                str(out), "--purpose", "fault suite", "--json"]
        if a.key:
            args += ["--idempotency-key", a.key]
        run = self.lab.cli(*args, failpoint=a.fault)
        a.answer = self.cli_answer(a, run)
        if out.exists():
            body = out.read_text()
            a.delivered = body.count("\n")
            if body != ids.read_text():
                self.violation(a, f"--out holds {a.delivered} lines, not the {a.size} IDs whole")
            out.unlink()  # counted above: the directory stays small
        if a.says_nothing and a.delivered:
            self.violation(a, f"said {NOTHING!r} but {out} holds {a.delivered} IDs")

    def cli_answer(self, a: Attempt, run: Run) -> str:
        err = " ".join(run.stderr.split())
        a.says_nothing = NOTHING in err
        if run.status is None:
            self.violation(a, "the CLI hung")
            return "hung"
        if run.killed:
            a.fired = a.action == "kill"
            if not a.fired:
                self.violation(a, "the CLI died of SIGKILL without a kill failpoint")
            return "killed"
        a.fired = a.fired or (a.action == "enospc" and "No space left" in err)
        expected = {0: "", 2: "No space left", 4: "in progress", 5: "store"}
        if run.status not in expected or expected[run.status] not in err:
            self.violation(a, f"the CLI answered exit {run.status}: {err[-600:]}")
        a.says_replay = "nothing more was counted" in err  # a replay: the first stays counted
        if run.status == 2 and not ("nothing was delivered or counted" in err or a.says_replay):
            self.violation(a, f"a write failure must say nothing was counted: {err[-400:]}")
        if run.status == 5 and not (a.says_nothing or "— delivered;" in err):
            self.violation(a, f"exit 5 must say whether the IDs were delivered: {err[-400:]}")
        return f"exit {run.status}"

    def api(self, a: Attempt) -> None:
        server = self.serving()
        server.failpoint(a.fault)
        got = Client(server.port).share(self.token or "", a.entity,
                                        list(range(a.first, a.first + a.size)), a.key)
        a.answer = self.http_answer(a, got, server, "application/json")
        if got.status == 200:
            lines = got.body.split(b"\n")[:-1]  # IDs received whole
            a.delivered = len(lines)
            if lines != [str(i).encode() for i in range(a.first, a.first + len(lines))]:
                self.violation(a, "the API answered IDs that were not asked for")
            if got.complete and a.delivered != a.size:
                self.violation(a, f"a whole answer of {a.delivered} IDs, not {a.size}")

    def web(self, a: Attempt) -> None:
        server = self.serving()
        browser = self.browser(a.recipient, server)
        fields = browser.export_fields("posts", a.fmt, a.size)
        server.failpoint(a.fault)
        got = browser.form("/export", fields)
        a.answer = self.http_answer(a, got, server, "text/html")
        if got.status == 200 and got.body:
            a.delivered = a.size  # any byte received: count the whole export as delivered
            if got.complete and a.fmt == "xlsx":
                try:
                    zipfile.ZipFile(io.BytesIO(got.body)).testzip()
                except (zipfile.BadZipFile, OSError) as exc:
                    self.violation(a, f"a whole export that is no XLSX: {exc}")

    def http_answer(self, a: Attempt, got: Answer, server: Server, errors: str) -> str:
        # A kill that fired broke the answer off; the server is then gone or going.
        died = server.exited(60 if a.action == "kill" and not got.complete else 0.05)
        a.says_nothing = NOTHING in got.text and got.status != 200
        if died:
            a.fired = a.action == "kill" and server.status == -9
            if not a.fired:
                self.violation(a, f"the server ended ({server.status}) without a kill")
            self.tally[("server restarts", "")] += 1
            return f"server killed, {got.status}, {len(got.body)} bytes"
        if not got.complete and not (a.action == "enospc" and got.status == 200):
            self.violation(a, f"the answer broke off ({got.status}, {len(got.body)} bytes) "
                              "and the server still runs")
        a.fired = a.fired or (a.action == "enospc" and (not got.complete or
                                                         "No space left" in got.text))
        message = alert(got.text) if "html" in errors else got.text[-600:]
        if got.status in (503, 507) and not a.says_nothing:
            self.violation(a, f"{got.status} must say {NOTHING!r}: {message}")
        if got.status not in (200, 409, 503, 507) or (
                got.status != 200 and errors not in got.headers.get("content-type", "")):
            self.violation(a, f"answered {got.status}: {message}")
        if got.status == 409 and "in_progress" not in got.text:
            self.violation(a, f"409 without in_progress: {message}")
        return f"HTTP {got.status}"

    def serving(self) -> Server:
        if self.server is None or self.server.exited(0):
            self.server = self.lab.server()
        return self.server

    def browser(self, user: str, server: Server) -> Client:
        if user not in self.browsers:
            self.browsers[user] = Client(server.port)
            self.browsers[user].sign_in(user)
        self.browsers[user].port = server.port
        return self.browsers[user]

    # --- after each run -----------------------------------------------------------------------

    def after(self, a: Attempt, store_down: bool) -> None:
        lab = self.lab
        # (c) before anything cleans up: the crash itself must leave nothing behind.
        for problem in leftovers(lab, store_down=store_down):
            self.violation(a, problem)
        for path in lab.work.iterdir():
            if LEFTOVER.match(path.name):
                self.violation(a, f"a partial file beside --out: {path.name}")
        # (d) the store comes back and answers; what is owed is sent.
        if store_down:
            lab.store_up()
            self.tally[("store restarts", "")] += 1
        try:
            lab.gate.client.ping()
            lab.gate.ledger.peek([])
        except Exception as exc:
            self.violation(a, f"the store does not answer after its restart: {exc!r}")
        lab.gate.recover()
        if a.action in ("kill", "kill-store") and a.channel == "cli":
            swept = lab.cli("store", "sweep", "--json")
            if swept.status != 0:
                self.violation(a, f"store sweep: exit {swept.status} {swept.stderr[-400:]}")
        if self.server is not None and self.server.exited(0):
            self.server = self.lab.server()  # restarts with its start-up sweep
        for problem in leftovers(lab):
            self.violation(a, f"after recovery: {problem}")
        self.read_audit(a)
        self.check_books(a)

    def read_audit(self, a: Attempt) -> None:
        books = self.books
        takes = []
        for entity in ENTITIES:
            stream = keys.audit(entity)
            since = books.last.get(stream, "-")
            low = since if since == "-" else f"({since}"
            for rid, raw in self.lab.gate.client.xrange(stream, min=low):
                books.last[stream] = rid.decode()
                r = {k.decode(): v.decode() for k, v in raw.items()}
                kind, outcome, granted = r.get("kind"), r.get("outcome"), int(r.get("granted", 0))
                if kind not in USAGE:
                    continue
                sign = {"granted": 1, "partial": 1, "refunded": -1, "recounted": 1}.get(
                    outcome or "", 0)
                books.r2[r["entity"]] += sign * granted
                if kind.startswith("export."):
                    books.r6[r["recipient"]] += sign * granted
                if outcome in TAKES:
                    takes.append(r)
        if len(takes) > 1:
            self.violation(a, f"{len(takes)} take records for one request: {takes}")
        if not takes:
            if a.delivered:
                self.violation(a, f"{a.delivered} delivered without any take record")
            return
        r = takes[0]
        a.take, a.share_id = r["outcome"], r["share_id"]
        if r["outcome"] in ("granted", "partial"):
            books.shares[a.share_id] = Share(r["entity"], r["recipient"], r["kind"],
                                             int(r["granted"]))
        if a.expect_take and a.take != a.expect_take:
            self.violation(a, f"the retry got {a.take}, not {a.expect_take}")
        share = books.shares.get(a.share_id)
        if a.delivered:
            if share is None or a.take not in ("granted", "partial", "replayed"):
                self.violation(a, f"{a.delivered} delivered on a {a.take} answer")
            else:
                share.delivered = max(share.delivered, a.delivered)
        status = self.status(a.entity, a.share_id)
        if a.says_replay and a.take != "replayed":
            self.violation(a, "said nothing more was counted, but it was no replay")
        if a.says_nothing and a.take in ("granted", "partial") and status != "refunded":
            self.violation(a, f"said {NOTHING!r} but share {a.share_id} is {status}")

    def status(self, root: str, share_id: str) -> str:
        raw = self.lab.gate.client.hget(keys.share(root, share_id), "status")
        return raw.decode() if raw else "missing"

    def check_books(self, a: Attempt) -> None:
        books, ledger = self.books, self.lab.gate.ledger
        r2 = [Counter(keys.counter(e, "r2", e), "R2", self.window_r2, Limit(None))
              for e in ENTITIES]
        r6 = [Counter(keys.counter(ANALYSTS[u], "r6", u), "R6", self.window_r6, Limit(None))
              for u in ANALYSTS]
        _, states = ledger.peek(r2 + r6)
        used = dict(zip([*ENTITIES, *ANALYSTS], (s.used for s in states), strict=True))
        for share_id, share in books.shares.items():
            status = self.status(share.entity, share_id)
            if share.delivered and status not in COUNTED:
                self.violation(a, f"share {share_id} delivered {share.delivered} and is {status}")
        delivered: Tally = Tally()
        for share in books.shares.values():
            delivered[share.entity] += share.delivered  # R2: ID shares and exported posts
            if share.kind.startswith("export."):
                delivered[share.recipient] += share.delivered  # R6
        for name in [*ENTITIES, *ANALYSTS]:
            audited = (books.r2 if name in ENTITIES else books.r6)[name]
            if audited != used[name]:  # (b)
                self.violation(a, f"the audit says {audited} for {name}, the ledger "
                                  f"{used[name]}")
            if delivered[name] > used[name]:  # (a)
                self.violation(a, f"{delivered[name]} delivered to {name}, {used[name]} "
                                  "counted")

    def violation(self, a: Attempt, what: str) -> None:
        """Record a broken invariant (once: a cumulative one stays broken in later runs)."""
        if what not in self.seen:
            self.seen.add(what)
            self.violations.append((a, what))

    def close(self) -> None:
        for server in self.lab.servers:
            server.stop()
        self.lab.store.stop()

    def report(self, seconds: float) -> str:
        lines = [f"fault suite: seed {SEED}, {len(self.attempts)} runs in {seconds:.1f} s, "
                 f"{len(self.violations)} violation(s); {self.threads} thread(s) forked from"]
        channels = Tally(a.channel for a in self.attempts)
        lines.append("runs per channel: " + ", ".join(f"{k} {v}" for k, v in
                                                      sorted(channels.items())))
        retries = [a for a in self.attempts if a.retry_of]
        lines.append(f"retries with the same key: {len(retries)} — takes: " + ", ".join(
            f"{k} {v}" for k, v in sorted(Tally(a.take or "-" for a in retries).items())))
        lines.append("answers: " + ", ".join(f"{k} {v}" for k, v in sorted(
            Tally(a.answer.split(",")[0] for a in self.attempts).items())))
        for what in ("store restarts", "server restarts"):
            lines.append(f"{what}: {self.tally[(what, '')]}")
        lines.append(f"{'fault':<32} {'planned':>7} {'fired':>6}")
        faults = sorted({f for (k, f) in self.tally if k == "planned"})
        for f in faults:
            lines.append(f"{f:<32} {self.tally[('planned', f)]:>7} {self.tally[('fired', f)]:>6}")
        lines += ["violations:", *(f"{a}: {what}" for a, what in self.violations[:200])]
        return "\n".join(lines)


def test_kill_9_at_every_failpoint_never_leaks_an_uncounted_id_a_lost_record_or_a_byte(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    started = time.monotonic()
    base = tmp_path_factory.mktemp("faults")
    print(f"fault suite seed: {SEED}")
    suite = Suite(base)
    try:
        for n in range(1, RUNS + 1):
            suite.run(n)
    finally:
        suite.close()
        text = suite.report(time.monotonic() - started)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "faults.txt").write_text(text + "\n")
        print(text)
    if suite.violations:
        pytest.fail(text, pytrace=False)
    fired = sum(v for (k, _), v in suite.tally.items() if k == "fired")
    assert len(suite.attempts) >= 200 and fired >= len(suite.attempts) // 2, text
    assert {a.take for a in suite.attempts if a.retry_of} >= {"in_progress", "replayed"}, text
