"""Every Redis key gatekeeper uses, built here and nowhere else.

All keys start with ``gk:`` and carry a hash tag ``{...}`` naming the slot they live in, so each
Lua script touches exactly one Redis Cluster slot:

- ``{e:ROOT}`` — everything about one *pool*: the root entity, its child entities (R10), their
  users, their counters (R2, R6), shares, idempotency records and their audit stream. A share or
  an export charges the user's R6 counter and the pool's R2 counter in one atomic script.
- ``{sys}`` — the directories that map a name to its pool, and the audit stream of events that
  belong to no pool (deletion ingests).
"""

from __future__ import annotations

import re

PREFIX = "gk"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def valid_name(name: str) -> bool:
    """Whether `name` may name an entity, user or dataset (it is embedded in keys and hash
    tags). The whole string: `$` would let "acme\\n" pass as a second, separate acme."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def _pool(root: str) -> str:
    return f"{PREFIX}:{{e:{root}}}"


SYS = f"{PREFIX}:{{sys}}"

# Directories (the {sys} slot).
ENTITIES = f"{SYS}:entities"  # hash: entity name -> pool root
USERS = f"{SYS}:users"  # hash: user name -> entity name
SYS_AUDIT = f"{SYS}:audit"  # stream: audit records that belong to no pool
DATASETS = f"{SYS}:datasets"  # hash: dataset name -> JSON of its DatasetInfo
# string: the token of the server adding or removing a dataset in an object store (dsstore)
DATASETS_LOCK = f"{SYS}:datasets:lock"
# set: names an object-store add is uploading; one left behind names objects to remove
DATASETS_PENDING = f"{SYS}:datasets:pending"
DELETED_VERSION = f"{SYS}:deleted:version"  # bumped by every R9 ingest and lift
# sorted set: every delivery manifest ("YYYY-MM/DELIVERY") by delivery time in ms (manifests)
MANIFESTS = f"{SYS}:manifests"
# hash: an ID share's manifest name -> JSON of the R10 re-delivery found in it (redelivery.py)
REDELIVERIES = f"{SYS}:r10:redelivered"
# Deletion notices (gatekeeper.domain.notices, R9): IDs an ingest newly hid that no notice scan
# has looked for yet (sets by kind; the scan moves them to its batch sets first), the ingests
# they came from (sorted set by time), one hash per notice, the open ones by deadline, all by
# opening time, each recipient's, and the scan's lock. Since layout 5: the acknowledged ones by
# acknowledgement time and each recipient's open ones (what the report and the pages read
# instead of every notice), and a marker that those indexes hold every notice.
NOTICES_INGESTS = f"{SYS}:notices:ingests"
NOTICES_OPEN = f"{SYS}:notices:open"
NOTICES_ALL = f"{SYS}:notices:all"
NOTICES_LOCK = f"{SYS}:notices:lock"
NOTICES_TMP = f"{SYS}:notices:tmp"  # used and removed inside one ingest's transaction
NOTICES_ACKED = f"{SYS}:notices:acked"
NOTICES_INDEXED = f"{SYS}:notices:indexed"


def notices_pending(kind: str) -> str:
    return f"{SYS}:notices:pending:{kind}"


def notices_batch(kind: str) -> str:
    return f"{SYS}:notices:batch:{kind}"


def notice(notice_id: str) -> str:
    return f"{SYS}:notice:{notice_id}"


def notices_of(recipient_kind: str, name: str) -> str:
    """Sorted set: a recipient's (entity or person) notices by opening time."""
    return f"{SYS}:notices:of:{recipient_kind}:{name}"


def notices_open_of(recipient_kind: str, name: str) -> str:
    """Sorted set: a recipient's open notices by opening time (layout 5)."""
    return f"{SYS}:notices:open-of:{recipient_kind}:{name}"


# hash: each manifest's lowest and highest Post ID and User ID, "PMIN PMAX UMIN UMAX" ("- -"
# for none), so a trace skips the manifests that cannot hold an ID (domain.trace)
MANIFEST_SPANS = f"{SYS}:manifest-spans"
AUDIT_STREAMS = f"{SYS}:audit-streams"  # set: every pool audit stream ever written
LAYOUT = f"{SYS}:layout"  # version of the stored layout (see layout.LAYOUT)


def manifests_of(entity: str) -> str:
    """Sorted set: the manifests of an entity's ID shares by delivery time in ms, written after
    each share (R10 re-delivery flags, domain/redelivery.py)."""
    return f"{SYS}:manifests:entity:{entity}"


def deleted(kind: str) -> str:
    """Set of IDs on the R9 deletion list: kind is ``posts`` or ``users``."""
    return f"{SYS}:deleted:{kind}"


def scrub_geo(kind: str) -> str:
    """Set of IDs X listed as scrub_geo (R9): the posts (of these users) leave without geo."""
    return f"{SYS}:deleted:scrub-geo:{kind}"


def reversals(kind: str) -> str:
    """Hash: ID -> JSON of the latest reversal X reported for it (undelete, unprotect, …);
    recorded for a compliance officer, lifting nothing until one lifts the ID."""
    return f"{SYS}:deleted:reversals:{kind}"


def entity(root: str, name: str) -> str:
    """Hash of one entity's facts (kind, research, parent, terms, permission)."""
    return f"{_pool(root)}:entity:{name}"


def user(root: str, name: str) -> str:
    """Hash of one user's facts (entity, role, password hash, terms)."""
    return f"{_pool(root)}:user:{name}"


def tokens(root: str, name: str) -> str:
    """Hash of one user's API tokens: sha256(token) -> creation time."""
    return f"{_pool(root)}:tokens:{name}"


def tokens_revoked(root: str, name: str) -> str:
    """Hash of one user's revoked API tokens: sha256(token) -> revocation time."""
    return f"{_pool(root)}:tokens-revoked:{name}"


def tokens_used(root: str, name: str) -> str:
    """Hash of when each of one user's API tokens was last used: sha256(token) -> time (ms)."""
    return f"{_pool(root)}:tokens-used:{name}"


def audit(root: str) -> str:
    """The pool's append-only audit stream (R11)."""
    return f"{_pool(root)}:audit"


def root_of_key(key: str) -> str | None:
    """The pool root named by a key's hash tag, or None for a {sys} key."""
    head = f"{PREFIX}:{{e:"
    if not key.startswith(head):
        return None
    return key[len(head):key.index("}", len(head))]


def counter(root: str, scope: str, owner: str) -> str:
    """A windowed counter: list of ``start_ms:sum`` buckets; its total lives at ``+ ':sum'``.

    scope is ``r2`` (Post IDs per entity or pool), ``uid`` (User IDs, recorded not capped)
    or ``r6`` (hydrated objects per user).
    """
    return f"{_pool(root)}:ctr:{scope}:{owner}"


def counter_sum(counter_key: str) -> str:
    """A counter's running total (string), beside its bucket list in the same slot."""
    return counter_key + ":sum"


def counter_daily(counter_key: str) -> str:
    """A counter's usage per UTC day (hash: epoch day -> amount), kept for 400 days."""
    return counter_key + ":daily"


def counter_keys(counter_key: str) -> list[str]:
    """The three keys a charge writes: the bucket list, its running total, its days."""
    return [counter_key, counter_sum(counter_key), counter_daily(counter_key)]


def parse_counter(key: str) -> tuple[str, str, str] | None:
    """A counter key read back as (root, scope, owner); None for any other key (its
    ``:sum`` and ``:daily`` keys included)."""
    root = root_of_key(key)
    if root is None:
        return None
    head = f"{_pool(root)}:ctr:"
    if not key.startswith(head):
        return None
    scope, sep, owner = key[len(head):].partition(":")
    if not sep or not owner or ":" in owner:
        return None
    return root, scope, owner


def pool_keys(root: str) -> str:
    """The pool's index of its own keys (sorted set: key -> ms after which it is surely gone,
    ``inf`` for a key without expiry), kept by every writer that creates one, so that moving
    the pool (move.lua, R10) names each key it touches instead of scanning the keyspace."""
    return f"{_pool(root)}:keys"


def pool_prefix(root: str) -> str:
    """The prefix of every key of the pool (``gk:{e:ROOT}:``), for a SCAN of a store written
    before the pool's key index (Ledger.upgrade)."""
    return f"{_pool(root)}:"


# SCAN patterns for Ledger.upgrade, which indexes a store written before an index existed.
ANY_POOL_KEY = f"{PREFIX}:{{e:*}}:*"
ANY_COUNTER = f"{PREFIX}:{{e:*}}:ctr:*"  # with its :sum and :daily (SCAN TYPE list: the lists)


# Keys of a pool that stay when it joins another (R10, move.lua): its history (the audit
# stream, its chain head and refusal index, R11), its own indexes and markers.
STAYING = ("audit", "audit:chain", "refusals", "active", "reserved", "none", "moved", "keys",
           "summary")


def stays(key: str) -> bool:
    """Whether `key` stays in its pool when the pool moves (see STAYING)."""
    root = root_of_key(key)
    return root is None or key[len(_pool(root)) + 1:] in STAYING


def rehome(key: str, root: str) -> str:
    """The same key in the pool of `root` (a moving pool's key in its new pool)."""
    old = root_of_key(key)
    if old is None:
        raise ValueError(f"{key!r} belongs to no pool")
    return _pool(root) + key[len(_pool(old)):]


def active(root: str) -> str:
    """Sorted set of the pool's counters that may hold usage: counter key -> the ms at which
    its newest bucket leaves the window. Written by take.lua; readers skip idle counters."""
    return f"{_pool(root)}:active"


def summary(root: str) -> str:
    """The pool's summary of its counters (hash: ``SCOPE:OWNER`` -> ``SUM:HEAD:TAIL``, the
    counter's running total and the ms at which its oldest and newest buckets leave the
    window), written by every script that changes a counter's buckets, beside the change
    (_window.lua's summarise), so that a dashboard reads one hash per pool instead of peeking
    every counter. It stays when the pool moves (its counters' entries are dropped there)."""
    return f"{_pool(root)}:summary"


def reserved(root: str) -> str:
    """The pool's open reservations (sorted set: share id -> ms reserved), so that one left
    unsettled by a crash is found and closed as counted (take.lua, sweep.lua)."""
    return f"{_pool(root)}:reserved"


def moved(root: str) -> str:
    """Set (to the new root) once the pool has joined another pool (R10, move.lua): no take
    or record is made in a moved pool any more."""
    return f"{_pool(root)}:moved"


def refusals_of(audit_key: str) -> str:
    """The refusal index beside an audit stream: a capped stream holding a copy of each of its
    latest refused, denied or conflict records, under the same ID (written with the record)."""
    return audit_key.removesuffix(":audit") + ":refusals"


def chain_of(audit_key: str) -> str:
    """The head of an audit stream's hash chain (R11): a hash of seq, hash and id of its last
    record, beside the stream in its slot; every script that appends is given it in KEYS."""
    return audit_key + ":chain"


def moved_of(audit_key: str) -> str:
    """The moved marker of the pool whose audit stream is `audit_key` (the {sys} stream has
    none: its placeholder, never set, stands in)."""
    if audit_key == SYS_AUDIT:
        return placeholder(None)
    return audit_key.removesuffix(":audit") + ":moved"


def share(root: str, share_id: str) -> str:
    """Hash recording one reservation: status and where each counter was charged."""
    return f"{_pool(root)}:share:{share_id}"


def idempotency(root: str, actor: str, key: str) -> str:
    """The first answer given for (actor, Idempotency-Key) within the pool."""
    return f"{_pool(root)}:idem:{actor}:{key}"


def ticket(root: str, ticket_id: str) -> str:
    """A single-use export ticket (R5), holding the user it was issued to."""
    return f"{_pool(root)}:ticket:{ticket_id}"


def export_progress(root: str, user: str, progress_id: str) -> str:
    """How far one running web export has got (JSON: state, rows written, rows in all), for
    the page that started it; short-lived, and named by its user so no one else reads it."""
    return f"{_pool(root)}:export-progress:{user}:{progress_id}"


def login_failures(name: str) -> str:
    """Failed sign-ins for a user name (brute-force protection)."""
    return f"{SYS}:login-failures:{name}"


def denial_window(source: str) -> str:
    """Denials recorded for one source (``user:NAME`` or ``ip:ADDRESS``) in its current
    one-minute window; expires with the window (see denials.py)."""
    return f"{SYS}:denials:window:{source}"


# Denials beyond a source's per-minute bound: counted here, summarised in one record later.
DENIALS_SUPPRESSED = f"{SYS}:denials:suppressed"  # hash: "root|channel|source" -> count
DENIALS_DUE = f"{SYS}:denials:due"  # sorted set: same member -> ms its window ends


def placeholder(root: str | None) -> str:
    """A key in the pool's (or, for None, the {sys}) slot, where an optional key is absent."""
    return f"{SYS}:none" if root is None else f"{_pool(root)}:none"
