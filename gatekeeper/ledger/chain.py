"""The audit log's hash chains (R11): appending through one, and verifying every one of them.

Each audit stream is a chain: its records carry ``seq`` (1, 2, …) and ``hash``, the SHA-1 of
the previous record's hash and the record's own fields (seq included), computed by the Lua
script that appends it (``append_audit`` in ``lua/_window.lua``). This module holds the same
encoding in Python, the one append Python transactions use, and ``verify``: it recomputes every
chain and names the first record that was edited, removed, reordered or inserted.

SHA-1 is enough here because what a chain needs is second-preimage resistance: to edit a record
unseen, one must find *other* fields with the *same* hash as the genuine record, whose hash is
fixed by the stored log; the collision attacks on SHA-1 need to choose both inputs beforehand.
Redis Lua offers only SHA-1 (``redis.sha1hex``), and the signed checkpoints (checkpoints.py)
pin the chain heads with Ed25519 outside Redis.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from gatekeeper.ledger import keys, scripts
from gatekeeper.ledger.store import failing_closed, text


def _stuff(value: bytes) -> bytes:
    return value.replace(b"\1", b"\1\1").replace(b"\0", b"\1\2")


def record_hash(prev: bytes, flat: list[bytes]) -> bytes:
    """The hash a record carries: `flat` is its fields and values in stored order, seq
    included, hash excluded; `prev` the previous record's hash (b"" for seq 1). Hex, as bytes.
    The same bytes as append_audit hashes: prev and each field and value, joined by NUL, with
    NUL and \\1 inside a value stuffed (\\1 -> \\1\\1, NUL -> \\1\\2)."""
    body = b"\0".join([prev, *flat])
    if body.count(b"\0") != len(flat) or b"\1" in body:  # rare: stuff, as the script did
        body = b"\0".join([prev, *map(_stuff, flat)])
    return hashlib.sha1(body).hexdigest().encode()


@functools.cache
def _append_source() -> str:
    return scripts.source("append")


def append(pipe: Any, stream: str, fields: dict[str, Any], *, at_ms: int | None = None) -> None:
    """Queue one audit record on a pipeline (usually a MULTI with the change it records),
    appended through the stream's chain like every record the scripts write. `at_ms` is the
    instant a fixed clock holds (`clock.Clock.fixed_ms`): the record's ID is then at it."""
    flat: list[Any] = ["" if at_ms is None else at_ms]
    for k, v in fields.items():
        if v is not None:
            flat += [k, str(v)]
    # execute_command, not .eval(): a cluster pipeline has no eval() but routes EVAL by its key
    pipe.execute_command("EVAL", _append_source(), 2, stream, keys.chain_of(stream), *flat)


@dataclass
class Problem:
    """The first record of a stream that breaks its chain."""

    stream: str
    id: str
    seq: int | None
    what: str

    def __str__(self) -> str:
        seq = "" if self.seq is None else f", seq {self.seq}"
        return f"{self.stream}: record {self.id}{seq}: {self.what}"


@dataclass
class StreamResult:
    """What verifying one stream found."""

    stream: str
    records: int = 0  # records read
    legacy_until: str | None = None  # last record written before chains (no seq/hash)
    last_id: str | None = None
    seq: int = 0  # of the last chained record verified
    hash: str = ""
    problem: Problem | None = None


def streams(client: redis.Redis) -> list[str]:
    """Every audit stream: each pool's and the system's (as audit.AuditLog lists them)."""
    with failing_closed():
        members = client.smembers(keys.AUDIT_STREAMS)
    return sorted({text(m) for m in members} | {keys.SYS_AUDIT})


BATCH = 1_000  # records per XRANGE: a reply the client parses while the server builds the next
READ_SIZE = 1 << 20  # bytes per socket read while verifying (the client's default is 32 KiB)
PARALLEL_MIN = 100_000  # records a stream needs before it is verified by several processes


def _flat(batch: list[Any]) -> list[Any]:
    """XRANGE entries as (id, [field, value, ...]) whatever the client made of them: a cluster
    client parses replies on its node clients into dicts (which keep stored order but not a
    repeated field: such a record then fails to verify)."""
    if batch and isinstance(batch[0][1], dict):
        return [(rid, [x for kv in f.items() for x in kv]) for rid, f in batch]
    return batch


class _Reader:
    """Reads a stream as the server sends it — fields as a flat list, in order, duplicates
    kept — on a connection of its own, asking for the next batch before the caller hashes this
    one, so that the server builds a reply while the client hashes the last (pipelining)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.conn: Any = None
        pool = getattr(client, "connection_pool", None)
        if pool is not None:  # a cluster client has none: it reads one batch at a time
            self.conn = pool.connection_class(**{**pool.connection_kwargs,
                                                 "socket_read_size": READ_SIZE})

    def close(self) -> None:
        if self.conn is not None:
            self.conn.disconnect()

    def _ask(self, *args: Any) -> Any:
        if self.conn is None:
            return _flat(self.client.execute_command(*args))
        self.conn.send_command(*args)
        return None

    def _answer(self, asked: Any) -> list[Any]:
        return asked if self.conn is None else self.conn.read_response()

    def before(self, stream: str, start: str) -> tuple[bytes, list[bytes]] | None:
        """The record just before `start` (an inclusive ID), if any."""
        if start == "-":
            return None
        found = self._answer(self._ask("XREVRANGE", stream, "(" + start, "-", "COUNT", 1))
        return found[0] if found else None

    def batches(self, stream: str, start: str, end: str) -> Iterator[list[Any]]:
        """The records from `start` to `end` (IDs as XRANGE takes them) in batches."""
        asked = self._ask("XRANGE", stream, start, end, "COUNT", BATCH)
        while True:
            batch = self._answer(asked)
            more = len(batch) == BATCH
            if more:  # in flight while the caller hashes this batch
                asked = self._ask("XRANGE", stream, "(" + batch[-1][0].decode(), end,
                                  "COUNT", BATCH)
            yield batch
            if not more:
                return


@dataclass
class _Part:
    """What verifying one range of a stream found (a whole stream is one or several)."""

    anchor: str | None  # id of the record before the range, whose hash it chained onto
    records: int = 0
    first_id: str | None = None
    last_id: str | None = None  # of any record read
    legacy_until: str | None = None
    chained_id: str | None = None  # of the last chained record verified
    seq: int = 0
    hash: str = ""
    start_seq: int = 1  # the seq the range was to begin with
    problem: Problem | None = None


def _seq_problem(stream: str, rid: bytes, raw: bytes, expected: int) -> Problem:
    try:
        seq = int(raw)
    except ValueError:
        return Problem(stream, rid.decode(), None, f"its seq {raw!r} is not a number: edited")
    return Problem(stream, rid.decode(), seq,
                   f"records seq {expected}–{seq - 1} are missing before it: removed"
                   if seq > expected else
                   f"seq {seq} comes after seq {expected - 1}: reordered or inserted")


def _verify_part(client: Any, stream: str, start: str, end: str,
                 pinned: dict[int, str]) -> _Part:
    """Verify the records from `start` to `end`, each against the stored hash of the record
    before it (the one before `start` for the first): every record's hash is checked once
    whichever range reads it, so ranges verified apart verify the whole chain."""
    reader = _Reader(client)
    sha1 = hashlib.sha1
    try:
        before = reader.before(stream, start)
        part = _Part(anchor=before[0].decode() if before else None)
        prev, expected, chained = b"", 1, False
        if before is not None and _is_chained(before[1]):  # a seq not a number: the range
            seq = before[1][-3]                            # before reports it, this one can't
            prev, expected, chained = before[1][-1], int(seq) + 1 if seq.isdigit() else 0, True
        part.start_seq = expected
        last = None
        for batch in reader.batches(stream, start, end):
            if part.first_id is None and batch:
                part.first_id = batch[0][0].decode()
            for rid, flat in batch:
                n = len(flat)
                if n < 4 or flat[-2] != b"hash" or flat[-4] != b"seq":
                    if chained:
                        part.problem = Problem(stream, rid.decode(), None, (
                            "has no seq/hash after the chain began: inserted (or its chain "
                            "fields were stripped)"))
                        break
                    part.legacy_until = rid.decode()
                    continue
                if flat[-3] != b"%d" % expected:
                    part.problem = _seq_problem(stream, rid, flat[-3], expected)
                    break
                stored = flat[-1]
                del flat[-2:]
                flat.insert(0, prev)  # prev, field, value, ..., "seq", seq: record_hash's bytes
                body = b"\0".join(flat)
                if body.count(b"\0") != n - 2 or b"\1" in body:  # rare: stuffed, as in Lua
                    body = b"\0".join([prev, *map(_stuff, flat[1:])])
                if sha1(body).hexdigest().encode() != stored:
                    part.problem = Problem(stream, rid.decode(), expected, (
                        "its fields do not hash to its stored hash on the previous record's: "
                        "edited (or replaced)"))
                    break
                if pinned and expected in pinned and pinned[expected].encode() != stored:
                    part.problem = Problem(stream, rid.decode(), expected, (
                        "a signed checkpoint recorded another hash for this seq: the chain "
                        "was rewritten"))
                    break
                prev, expected, chained, last = stored, expected + 1, True, rid
            if part.problem is not None:
                part.records += next(i for i, e in enumerate(batch, 1) if e[0] is rid)
                part.last_id = rid.decode()
                break
            part.records += len(batch)
            if batch:
                part.last_id = batch[-1][0].decode()
        if last is not None:
            part.chained_id, part.seq, part.hash = last.decode(), expected - 1, prev.decode()
        return part
    finally:
        reader.close()


_FORKED: Any = None  # the client a forked verifying process inherits (see _parallel)


def _verify_part_in_child(job: tuple[str, str, str, dict[int, str]]) -> _Part:
    return _verify_part(_FORKED, *job)


def _workers(client: Any, stream: str, workers: int | None) -> int:
    """How many processes verify the stream: one for a short stream, a cluster client or a
    process with threads (forking one is unsafe); otherwise two per core (while one waits for
    a reply, another hashes), at most eight."""
    if workers is not None:
        return workers
    import multiprocessing as mp  # here: a share or an export never verifies (bench/ids.py)

    if (getattr(client, "connection_pool", None) is None or threading.active_count() > 1
            or "fork" not in mp.get_all_start_methods()
            or client.xlen(stream) < PARALLEL_MIN):
        return 1
    return max(1, min(8, 2 * (os.cpu_count() or 1)))


def _ranges(client: Any, stream: str, start: str, parts: int) -> list[tuple[str, str]]:
    """`parts` ranges from `start` to the end, cut at milliseconds evenly spread between the
    first and the last record (IDs are milliseconds; a cut never splits one)."""
    first = client.execute_command("XRANGE", stream, start, "+", "COUNT", 1)
    last = client.execute_command("XREVRANGE", stream, "+", "-", "COUNT", 1)
    if not first or not last or parts < 2:
        return [(start, "+")]
    lo = int(first[0][0].split(b"-")[0])
    hi = int(last[0][0].split(b"-")[0]) + 1
    cuts = sorted({lo + (hi - lo) * i // parts for i in range(1, parts)} - {lo})
    bounds = [start, *(f"{c}-0" for c in cuts)]
    ends = [*(f"({b}" for b in bounds[1:]), "+"]
    return list(zip(bounds, ends, strict=True))


def _parallel(client: Any, stream: str, start: str, pinned: dict[int, str],
              workers: int) -> list[_Part]:
    """Verify the stream in ranges, each in a forked process of its own (CPU-bound hashing
    and reply parsing; the GIL allows one thread at a time)."""
    global _FORKED
    if workers <= 1:
        return [_verify_part(client, stream, start, "+", pinned)]
    jobs = [(stream, a, b, pinned) for a, b in _ranges(client, stream, start, 4 * workers)]
    if threading.active_count() > 1:  # forking a process with threads is unsafe: the same
        return [_verify_part(client, *job) for job in jobs]  # ranges, one after another
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    _FORKED = client  # a forked child's connection pool makes connections of its own
    try:
        with ProcessPoolExecutor(min(workers, len(jobs)),
                                 mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(_verify_part_in_child, jobs))
    finally:
        _FORKED = None


def _is_chained(flat: list[bytes]) -> bool:
    return len(flat) >= 4 and flat[-2] == b"hash" and flat[-4] == b"seq"


def verify_stream(client: redis.Redis, stream: str, *, since_ms: int | None = None,
                  pinned: dict[int, str] | None = None,
                  workers: int | None = None) -> StreamResult:
    """Recompute one stream's chain, from its first record or (`since_ms`) from the first
    record at or after that time, chained onto the record before it. `pinned` maps seq -> hash
    that a signed checkpoint recorded: each must still be there, with that hash. A long stream
    is verified in ranges by several processes (`workers`, default from the cores)."""
    out = StreamResult(stream)
    pinned = dict(pinned or {})
    start = "-" if since_ms is None else f"{since_ms}-0"
    with failing_closed():
        head = client.hget(keys.chain_of(stream), "seq")  # before reading: appends may follow
        parts = _parallel(client, stream, start, pinned, _workers(client, stream, workers))
    seen_id: str | None = None
    start_seq = parts[0].start_seq
    pinned = {s: h for s, h in pinned.items() if s >= start_seq}
    for part in parts:
        if part.first_id is not None and seen_id is not None and part.anchor != seen_id:
            out.problem = Problem(stream, part.first_id, None, (
                f"the record before it is {part.anchor}, not {seen_id}: the log changed "
                "while it was verified (run verify again)"))
            break
        out.records += part.records
        out.legacy_until = part.legacy_until or out.legacy_until
        if part.chained_id is not None:
            out.last_id, out.seq, out.hash = part.chained_id, part.seq, part.hash
        seen_id = part.last_id or seen_id
        if part.problem is not None:
            out.problem = part.problem
            break
    if out.problem is None:  # each part checked the pinned seqs it read; later ones are gone
        later = {s: h for s, h in pinned.items() if s > out.seq}
        out.problem = _tail(out, later, None if head is None else int(head))
    return out


def _tail(out: StreamResult, pinned: dict[int, str], head: int | None) -> Problem | None:
    """Whether records are missing after the last one read: the chain head beside the stream
    (read before the log was), or a signed checkpoint, knows a later seq (the hole a chain
    alone cannot show)."""
    if pinned:
        seq = min(pinned)
        return Problem(out.stream, out.last_id or "-", out.seq or None, (
            f"a signed checkpoint recorded seq {seq}, the log ends at seq {out.seq}: "
            "records after it were removed (truncated tail)"))
    if head is not None and head > out.seq:
        return Problem(out.stream, out.last_id or "-", out.seq or None, (
            f"the chain head says seq {head}, the log ends at seq {out.seq}: records "
            "after it were removed (truncated tail)"))
    return None


def verify(client: redis.Redis, *, since_ms: int | None = None,
           pinned: dict[str, dict[int, str]] | None = None,
           workers: int | None = None) -> list[StreamResult]:
    """Verify every audit stream (and each stream a checkpoint names)."""
    pinned = pinned or {}
    names = sorted(set(streams(client)) | set(pinned))
    return [verify_stream(client, s, since_ms=since_ms, pinned=pinned.get(s), workers=workers)
            for s in names]
