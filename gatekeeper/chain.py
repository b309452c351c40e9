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

import contextlib
import copy
import functools
import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from gatekeeper import keys
from gatekeeper.store import failing_closed

BATCH = 10_000  # records read per XRANGE


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
    lua = resources.files("gatekeeper") / "lua"
    return (lua / "_window.lua").read_text() + "\n" + (lua / "append.lua").read_text()


def append(pipe: Any, stream: str, fields: dict[str, Any]) -> None:
    """Queue one audit record on a pipeline (usually a MULTI with the change it records),
    appended through the stream's chain like every record the scripts write."""
    flat: list[Any] = []
    for k, v in fields.items():
        if v is not None:
            flat += [k, str(v)]
    # execute_command, not .eval(): a cluster pipeline has no eval() but routes EVAL by its key
    pipe.execute_command("EVAL", _append_source(), 1, stream, *flat)


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
    return sorted({m.decode() for m in members} | {keys.SYS_AUDIT})


def _raw(client: redis.Redis) -> redis.Redis:
    """A client on the same connections that answers XRANGE as the server sends it — fields
    as a flat list, in order, duplicates kept — instead of a dict."""
    if not hasattr(client, "response_callbacks"):
        return client  # a cluster client: its replies come as dicts (see _flat)
    raw = copy.copy(client)
    raw.response_callbacks = copy.copy(client.response_callbacks)
    for name in ("XRANGE", "XREVRANGE"):
        raw.response_callbacks.pop(name, None)
    return raw


def _flat(batch: list[Any]) -> list[Any]:
    """XRANGE entries as (id, [field, value, ...]) whatever the client made of them: a cluster
    client parses replies on its node clients, whose callbacks `_raw` cannot reach, into dicts
    (which keep stored order but not a repeated field: such a record then fails to verify)."""
    if batch and isinstance(batch[0][1], dict):
        return [(rid, [x for kv in f.items() for x in kv]) for rid, f in batch]
    return batch


def _batches(raw: redis.Redis, stream: str, start: str) -> Iterator[list[Any]]:
    """The stream's records from `start` in batches, the next one read by a thread while the
    caller hashes this one (the server and the socket work beside the hashing)."""
    found: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        at = start
        try:
            while not stop.is_set():
                batch = _flat(raw.execute_command("XRANGE", stream, at, "+", "COUNT", BATCH))
                found.put(batch)
                if len(batch) < BATCH:
                    break
                at = "(" + batch[-1][0].decode()
            found.put(None)
        except Exception as exc:  # handed to the caller, which raises it
            found.put(exc)

    reader = threading.Thread(target=read, name="gatekeeper-verify-read", daemon=True)
    reader.start()
    try:
        while (batch := found.get()) is not None:
            if isinstance(batch, Exception):
                raise batch
            yield batch
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                found.get_nowait()  # unblock a reader waiting to put
        reader.join()


def _is_chained(flat: list[bytes]) -> bool:
    return len(flat) >= 4 and flat[-2] == b"hash" and flat[-4] == b"seq"


def verify_stream(client: redis.Redis, stream: str, *, since_ms: int | None = None,
                  pinned: dict[int, str] | None = None) -> StreamResult:
    """Recompute one stream's chain, from its first record or (`since_ms`) from the first
    record at or after that time, chained onto the record before it. `pinned` maps seq -> hash
    that a signed checkpoint recorded: each must still be there, with that hash."""
    raw = _raw(client)
    sha1 = hashlib.sha1
    out = StreamResult(stream)
    pinned = dict(pinned or {})
    prev, expected, chained = b"", 1, False
    start = "-"
    with failing_closed():
        if since_ms is not None:
            start = f"{since_ms}-0"
            before = _flat(raw.execute_command("XREVRANGE", stream, f"({since_ms}-0", "-",
                                               "COUNT", 1))
            if before and _is_chained(before[0][1]):
                flat = before[0][1]
                prev, expected, chained = flat[-1], int(flat[-3]) + 1, True
            pinned = {s: h for s, h in pinned.items() if s >= expected}
        last_id = b""
        for batch in _batches(raw, stream, start):
            for rid, flat in batch:
                if len(flat) < 4 or flat[-2] != b"hash" or flat[-4] != b"seq":
                    if chained:
                        out.problem = Problem(stream, rid.decode(), None, (
                            "has no seq/hash after the chain began: inserted (or its chain "
                            "fields were stripped)"))
                        break
                    out.legacy_until = rid.decode()
                    continue
                seq = int(flat[-3])
                if seq != expected:
                    what = (f"records seq {expected}–{seq - 1} are missing before it: removed"
                            if seq > expected else
                            f"seq {seq} comes after seq {expected - 1}: reordered or inserted")
                    out.problem = Problem(stream, rid.decode(), seq, what)
                    break
                body = b"\0".join(flat[:-2])  # record_hash, inlined: verify's hot loop
                if body.count(b"\0") != len(flat) - 3 or b"\1" in body:
                    h = record_hash(prev, flat[:-2])
                else:
                    h = sha1(b"%s\0%s" % (prev, body)).hexdigest().encode()
                if h != flat[-1]:
                    out.problem = Problem(stream, rid.decode(), seq, (
                        "its fields do not hash to its stored hash on the previous record's: "
                        "edited (or replaced)"))
                    break
                if pinned and seq in pinned and pinned.pop(seq).encode() != h:
                    out.problem = Problem(stream, rid.decode(), seq, (
                        "a signed checkpoint recorded another hash for this seq: the chain "
                        "was rewritten"))
                    break
                prev, expected, chained = h, seq + 1, True
                last_id = rid
            if out.problem is not None:
                out.records += next(i for i, e in enumerate(batch, 1) if e[0] is rid)
                break
            out.records += len(batch)
        if chained:
            out.last_id, out.seq, out.hash = last_id.decode() or None, expected - 1, prev.decode()
        if out.problem is None:
            out.problem = _tail(client, out, pinned)
    return out


def _tail(client: redis.Redis, out: StreamResult, pinned: dict[int, str]) -> Problem | None:
    """Whether records are missing after the last one read: the chain head beside the stream,
    or a signed checkpoint, knows a later seq (the hole a chain alone cannot show)."""
    if pinned:
        seq = min(pinned)
        return Problem(out.stream, out.last_id or "-", out.seq or None, (
            f"a signed checkpoint recorded seq {seq}, the log ends at seq {out.seq}: "
            "records after it were removed (truncated tail)"))
    head = client.hget(keys.chain_of(out.stream), "seq")
    if head is not None and int(head) != out.seq:
        return Problem(out.stream, out.last_id or "-", out.seq or None, (
            f"the chain head says seq {int(head)}, the log ends at seq {out.seq}: records "
            "after it were removed (truncated tail)"))
    return None


def verify(client: redis.Redis, *, since_ms: int | None = None,
           pinned: dict[str, dict[int, str]] | None = None) -> list[StreamResult]:
    """Verify every audit stream (and each stream a checkpoint names)."""
    pinned = pinned or {}
    names = sorted(set(streams(client)) | set(pinned))
    return [verify_stream(client, s, since_ms=since_ms, pinned=pinned.get(s)) for s in names]
