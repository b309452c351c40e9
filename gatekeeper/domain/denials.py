"""Every denial is an audit record (R11, R12), with at most a few per source per minute.

A refusal is recorded once. Refusals recorded where they are raised (R5, R8, a spent export
ticket: `audit.record_denial`) are marked `audited`; every other 401 or 403 — a role denial
(R12) on a page or the API, a missing, bad or revoked token, a failed sign-in, a lockout — and
every CSRF failure is recorded by the error handlers in web.py (and the sign-in view) through
`answered`, at the one place where it is answered.

Flood bound: each source (``user:NAME`` once someone is identified, else ``ip:ADDRESS``) has a
one-minute window, `SET key 0 PX 60000 NX` then `INCR` in one MULTI/EXEC (no Lua: this is a plain
counter, and the pair can never leave a key without expiry). The first `limit()` denials of a
window are recorded; later ones are only counted (HINCRBY in one hash, the window's end in a
sorted set). Before the next record is written — from any source, once that window has ended —
one summary record "N more denials from SOURCE suppressed" (rule R11) replaces them. So a
flood from one source writes at most `limit()` + 1 records a minute and three small keys.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from flask_login import current_user

from gatekeeper.domain import audit
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.users import User
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules.errors import Forbidden, GatekeeperError

PER_MINUTE = 20  # default; the Flask setting GATEKEEPER_DENIALS_PER_MINUTE overrides it
WINDOW_MS = 60_000
FLUSH_BATCH = 10  # summaries written at most per recorded denial (bounded work per request)
MAX_FIELD = 64  # a claimed user name or an address is cut to this in the record


def limit() -> int:
    """Denial records per source per minute."""
    return int(current_app.config.get("GATEKEEPER_DENIALS_PER_MINUTE", PER_MINUTE))


def acting_user() -> User | None:
    """Who made this request, if anyone was identified: a valid token's owner, else the
    signed-in person."""
    actor = g.get("actor")
    if actor is None and current_user and current_user.is_authenticated:
        actor = current_user.user
    return actor if isinstance(actor, User) else None


def channel() -> str:
    return "api" if request.path.startswith("/api/") else "web"


def answered(refusal: GatekeeperError, *, kind: str | None = None,
             fields: dict[str, Any] | None = None) -> None:
    """Record a denial being answered now, unless it was recorded where it was raised."""
    if refusal.audited:
        return
    actor = acting_user()
    if kind is None:
        kind = "access.unauthenticated" if refusal.status == 401 else "access.denied"
    base = {"actor": actor.name if actor else "unauthenticated",
            "entity": actor.entity if actor else "", "recipient": actor.name if actor else "",
            "channel": channel(), "kind": kind, "path": request.path[:200],
            "method": request.method, "source": (request.remote_addr or "-")[:MAX_FIELD]}
    try:
        record(current_app.extensions["gatekeeper"].gate, refusal, actor,
               {**base, **(fields or {})})
    except GatekeeperError as exc:
        # The answer stays a denial; a store that cannot take the record must not turn it
        # into a 500 (the store's own failure is answered elsewhere).
        current_app.logger.warning("denial not recorded (%s): %s", exc.message,
                                   refusal.message)


def record(gate: Gate, refusal: GatekeeperError, actor: User | None,
           fields: dict[str, Any]) -> bool:
    """Append the denial's audit record unless its source has used up this minute's records
    (then it is counted for a summary); whether a record was written."""
    source = f"user:{actor.name}" if actor else \
        f"ip:{(request.remote_addr or '-')[:MAX_FIELD]}"
    root = actor.root if actor else None
    window = keys.denial_window(source)
    now = gate.clock.now_ms()  # the store's: summaries fall due by the clock of their PTTL
    with failing_closed():
        pipe = gate.client.pipeline(transaction=True)
        pipe.set(window, 0, px=WINDOW_MS, nx=True)
        pipe.incr(window)
        pipe.pttl(window)
        # The summaries due, read in the same round trip (most of the time there are none).
        pipe.zrangebyscore(keys.DENIALS_DUE, "-inf", now, start=0, num=FLUSH_BATCH)
        _, count, ttl, due = pipe.execute()
    refusal.audited = True
    if count > limit():
        member = f"{root or ''}|{fields.get('channel', '')}|{source}"
        with failing_closed():
            pipe = gate.client.pipeline(transaction=True)
            pipe.hincrby(keys.DENIALS_SUPPRESSED, member, 1)
            pipe.zadd(keys.DENIALS_DUE, {member: now + max(int(ttl), 0)})
            pipe.execute()
        return False
    flush(gate, due)
    audit.record_denial(gate.ledger, root, refusal, fields)
    return True


def flush(gate: Gate, due: list[bytes]) -> int:
    """Write the summary record of each source whose suppressed window has ended."""
    written = 0
    for raw in due:
        member = raw.decode()
        with failing_closed():
            # Read and clear in one transaction: two servers flushing at once write it once.
            pipe = gate.client.pipeline(transaction=True)
            pipe.hget(keys.DENIALS_SUPPRESSED, member)
            pipe.hdel(keys.DENIALS_SUPPRESSED, member)
            pipe.zrem(keys.DENIALS_DUE, member)
            n, _, _ = pipe.execute()
        if not n:
            continue
        root, chan, source = member.split("|", 2)
        name = source.removeprefix("user:") if source.startswith("user:") else ""
        summary = Forbidden(f"{int(n)} more denials from {source} suppressed (at most "
                            f"{limit()} are recorded per source per minute)", rule="R11")
        audit.record_denial(gate.ledger, root or None, summary, {
            "actor": name or "unauthenticated", "recipient": name, "channel": chan or "web",
            "kind": "access.suppressed", "suppressed": int(n), "source": source})
        written += 1
    return written
