"""Trace (issue 15 item 4): every delivery that held a post — the auditor's "who received this?"

For the web page (compliance) and the CLI (`gatekeeper trace POST_ID`)::

    from gatekeeper.domain.trace import trace, TraceHit
    hits: list[TraceHit] = trace(gate, post_id)            # oldest delivery first
    hits = trace(gate, user_id, kind="users")              # deliveries that held a User ID

`post_id` is a decimal string or an int; anything else is BadInput (400 / exit 2). Each hit
says when the delivery was made, to whom (`recipient`: the entity of an ID share, the person of
a hydrated export; `entity`: the entity either way), by whom (`actor`), through which channel
(`cli`, `api`, `web`), what it was (`kind`: `share.posts`, `share.users`, `export.xlsx`, ...),
its share or export id (`delivery`), the file it was written to when known (`file`: the CLI's
ID file, the export's download name), the dataset it came from when it came from one, how the
ID was there (`held_as`: "post" or "user"), and the manifest that says so (`manifest`). The
role check is the caller's (`roles.MAY_TRACE`). A manifest that cannot be read (corrupt) is
an error, not a silent gap in the answer.

How it stays well under a second over a year of manifests (bench/manifests.py: 1,000
deliveries, 100M IDs): the Redis index lists every manifest, and each one's lowest and highest
ID (`keys.MANIFEST_SPANS`, one HMGET for all) rule out those that cannot hold the ID without
opening them; each remaining one is opened for its header (block table, a few hundred bytes)
and at most one block of 65,536 IDs is decompressed and searched, `THREADS` manifests at a
time. Manifests of version 1 (no table) are read whole; a manifest without spans in Redis is
opened.

The manifest's meta (written with it) says who and how; nothing else is read. Deliveries whose
reservation was refunded (nothing left) keep their manifest until the retention sweep: a
refunded delivery's manifest is not a delivery, but a crash-abandoned one may have left, so
neither is hidden here (the meta is what was about to leave).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gatekeeper.rules.errors import BadInput, NotFound

if TYPE_CHECKING:
    from gatekeeper.domain.gate import Gate
    from gatekeeper.domain.manifests import Header

KINDS = {"posts": "post", "users": "user"}
MAX_ID = 1 << 63
THREADS = 4  # manifests read at once (bench/manifests.py)


@dataclass(frozen=True)
class TraceHit:
    """One delivery that held the ID."""

    delivery: str  # the share id or export id
    at: str  # ISO 8601 UTC, to the millisecond
    at_ms: int
    kind: str  # share.posts, share.users, export.xlsx, export.pdf, ...
    channel: str  # cli, api, web
    recipient: str  # the entity (ID shares) or the person (hydrated exports)
    entity: str
    actor: str
    dataset: str | None
    file: str | None
    held_as: str  # "post" or "user"
    manifest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_id(value: str | int, kind: str = "posts") -> int:
    """An X ID as given on a command line or a form: decimal digits below 2^63."""
    text = str(value).strip()
    if not (text.isascii() and text.isdecimal()) or len(text) > 19 or int(text) >= MAX_ID:
        raise BadInput(f"a {KINDS.get(kind, 'post')} ID is up to 19 decimal digits, "
                       f"not {str(value)[:40]!r}", field="id")
    return int(text)


def trace(gate: Gate, ident: str | int, *, kind: str = "posts", use_spans: bool = True,
          threads: int = THREADS) -> list[TraceHit]:
    """Every delivery in the manifests whose `kind` ("posts" or "users") held `ident`,
    oldest first. `use_spans=False` opens every manifest's header instead of reading the
    spans from Redis first; `threads` manifests are read at once (the bench measures both)."""
    if kind not in KINDS:
        raise BadInput(f"kind must be posts or users, not {kind!r}", field="kind")
    wanted = parse_id(ident, kind)
    manifests = gate.manifests
    names = manifests.listed()
    spans = manifests.spans(names) if use_spans else [None] * len(names)
    at = 0 if kind == "posts" else 1
    maybe = [name for name, span in zip(names, spans, strict=True)
             if span is None or _within(span[at], wanted)]

    def find(name: str) -> Header | None:
        try:
            return manifests.find(name, kind, wanted)
        except NotFound:
            if not manifests.indexed(name):  # swept meanwhile: no longer in retention
                return None
            raise

    if threads > 1 and len(maybe) > 1:  # file reads, zstd and numpy let go of the GIL
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(maybe)), "gatekeeper-trace") as pool:
            found = list(pool.map(find, maybe))
    else:
        found = [find(name) for name in maybe]
    return [_hit(name, head.meta, KINDS[kind])
            for name, head in zip(maybe, found, strict=True) if head is not None]


def _within(span: tuple[int, int] | None, ident: int) -> bool:
    return span is not None and span[0] <= ident <= span[1]


def _hit(name: str, meta: dict[str, Any], held_as: str) -> TraceHit:
    at_ms = meta.get("at_ms")
    at_ms = at_ms if isinstance(at_ms, int) else 0

    def text(key: str) -> str:
        value = meta.get(key)
        return value if isinstance(value, str) else ""

    return TraceHit(
        delivery=text("delivery") or name.rpartition("/")[2],
        at=datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        at_ms=at_ms, kind=text("kind"), channel=text("channel"), recipient=text("recipient"),
        entity=text("entity"), actor=text("actor"), dataset=text("dataset") or None,
        file=text("file") or None, held_as=held_as, manifest=name)
