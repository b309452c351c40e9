"""ID shares (R1, R2, R8, R9, R10): authorise, select, reserve, deliver — in that order.

- authorise: the policy decides whether this actor may share with this entity (refusals are
  audited and count nothing);
- select: the IDs — an uploaded list validated whole (every bad line reported, nothing counted)
  or a dataset selection — minus everything on the R9 deletion lists, spooled to a private
  temporary file so memory stays flat whatever the size;
- reserve: the ledger checks and reserves atomically (refused whole, or exactly the remaining
  allowance when partial was asked for);
- deliver: write the file (CLI: beside --out, renamed into place) or stream the response (API),
  then commit; if writing fails first, the reservation is refunded.

Over ~400 lines for a reason: the four steps are one path read top to bottom (reserve → deliver →
commit, with the manifest between), and the spool they share (`Selection`) lives beside them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from gatekeeper import faults
from gatekeeper.domain import dehydrate, idlists, manifest_stream, manifests, redelivery, spool
from gatekeeper.domain.audit import record_denial
from gatekeeper.domain.dehydrate import Dehydrated
from gatekeeper.domain.deletions import Deleted
from gatekeeper.domain.entities import Entity
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.lines import CHUNK, MAX_LINE_BYTES
from gatekeeper.domain.seen import SeenIds, maybe_repeated, repeats_of, sorted_ids, unique_of
from gatekeeper.domain.users import User
from gatekeeper.ledger import charges
from gatekeeper.ledger.ledger import Idempotency
from gatekeeper.ledger.reservation import Reservation
from gatekeeper.rules import policy
from gatekeeper.rules.errors import BadInput, GatekeeperError, InsufficientStorage, PoolMoved

MAX_REPORTED = idlists.MAX_REPORTED  # bad lines listed in full; past this only counted
# From this many IDs on, repeats are found by numpy (`repeated_ids`): exact, ~0.05 µs an ID,
# worth its import (~0.3 s, 14 MB); below, the bitmap pass (~1 µs an ID) costs less than that.
EXACT_FROM = 100_000
BLOCK = 1 << 20  # bytes of the spool read at a time by the passes over it
WHOLE_BLOCK = 1 << 18  # ...and by a whole-dataset share (memory is its goal: bench/ids.py)
SENDFILE_STEP = 1 << 22  # bytes the kernel copies from a spool at a time (a fault point each)
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # fullmatch: no trailing newline


class Selection:
    """IDs ready to share: validated, R9-filtered, spooled to a file no path names (R7)."""

    def __init__(self, source: str, buffering: int = spool.BUFFER) -> None:
        self._fh = spool.anonymous() if buffering == spool.BUFFER else \
            spool.anonymous(buffering=buffering)
        self.source = source
        self.count = 0
        self.removed = 0  # dropped by R9
        self.repeats = 0  # an ID already selected: each leaves and counts once per share
        self._digest = hashlib.sha256()
        self._sealed: int | None = None  # the spool's bytes once sealed
        self._sorted: Any = None  # a large list's IDs, sorted, from `distinct` (its manifest)
        # A whole dataset read from its ID sidecar: its manifest is made from the sidecar.
        self.dehydrated: Dehydrated | None = None

    def add(self, ident: bytes) -> None:
        self._fh.write(ident + b"\n")
        self._digest.update(ident + b"\n")
        self.count += 1

    def add_block(self, block: bytes, count: int) -> None:
        """Add `count` IDs at once: `block` holds them, each ended by a newline."""
        self._fh.write(block)
        self._digest.update(block)
        self.count += count

    def add_rows(self, kept: bytes, count: int, named: bytes) -> None:
        """Add `count` IDs (`kept`, each ended by a newline) of a block of rows, all of which
        (`named`: R9's drops and repeats too, in order) name the request (`drop`, `repeat`)."""
        self._fh.write(kept)
        self._digest.update(named)
        self.count += count

    def drop(self, ident: bytes) -> None:
        """Leave out an ID on a deletion list (R9). It still names the request: a retry
        after a new deletion list is the same request, not a different one."""
        self._digest.update(ident + b"\n")
        self.removed += 1

    def repeat(self, ident: bytes) -> None:
        """Leave out an ID listed again. Like a dropped one, it still names the request."""
        self._digest.update(ident + b"\n")
        self.repeats += 1

    def distinct(self) -> None:
        """Leave out every later copy of an ID, counted in `repeats`. First the IDs that
        repeat are found: for a large list (`EXACT_FROM` IDs or more) exactly, by numpy over
        the spool (`repeated_ids`, no Python per ID); for a small one by a bitmap pass that
        finds the IDs that may repeat (every one that does, and a few percent that only share a
        bit) and a second pass that looks only those up. Only then — rarely — is the spool
        copied once, a chunk without any of them as it is. An ID added stays in the digest
        however often it came. A large list keeps its sorted IDs for its manifest."""
        if self.count >= EXACT_FROM:
            self._sorted = sorted_ids(self.head(self.count, BLOCK), self.count)
            repeated = repeats_of(self._sorted)
        else:
            repeated = self._repeated_small()
        if not repeated:
            return
        out = spool.anonymous()
        try:
            met: set[bytes] = set()
            mark: Callable[[bytes], object] = met.add  # returns None: `not mark(i)` is True
            kept = 0
            for chunk in self.head(self.count, BLOCK):
                ids = chunk.split(b"\n")
                ids.pop()  # after the last newline
                if repeated.isdisjoint(ids):
                    out.write(chunk)  # none of the repeated IDs here: as it is
                    kept += len(ids)
                    continue
                # A repeated ID is kept the first time only.
                ids = [i for i in ids if i not in repeated or (i not in met and not mark(i))]
                out.write(b"\n".join(ids) + b"\n" if ids else b"")
                kept += len(ids)
        except BaseException:
            out.close()
            raise
        self._fh.close()
        self._fh = out
        self.repeats += self.count - kept
        self.count = kept

    def _repeated_small(self) -> set[bytes]:
        maybes = maybe_repeated(self.head(self.count), self.count)
        if not maybes:
            return set()
        once: set[bytes] = set()
        repeated: set[bytes] = set()
        for chunk in self.head(self.count):
            for ident in [i for i in chunk.split(b"\n") if i in maybes]:  # a C-speed filter
                if ident in once:
                    repeated.add(ident)
                else:
                    once.add(ident)
        return repeated

    def manifest_ids(self, n: int) -> Any:
        """The IDs of a grant of the first `n`, sorted and unique (a numpy uint64 array), when
        `distinct` read them already — a large list granted whole — else None (the manifest
        then parses the spool). Handed over: asked again, it is None."""
        ids, self._sorted = self._sorted, None
        return unique_of(ids) if ids is not None and n == self.count else None

    def seal(self) -> Selection:
        self._fh.flush()
        self._sealed = self.size  # what a whole copy must find and copy (write_to)
        return self

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    @property
    def size(self) -> int:
        """Bytes of the spooled ID file."""
        return os.fstat(self._fh.fileno()).st_size

    def head(self, n: int, chunk: int = 1 << 16) -> Iterator[bytes]:
        """The first `n` IDs as newline-terminated byte chunks of about `chunk` bytes (one
        reader at a time): the spool's bytes cut at a newline, never split into lines."""
        self._fh.seek(0)
        left = n
        carry = b""
        while left > 0:
            data = self._fh.read(chunk)
            if not data:
                return
            if carry:
                data, carry = carry + data, b""
            end = data.rfind(b"\n") + 1
            if end < len(data):
                data, carry = data[:end], data[end:]
            lines = data.count(b"\n")
            if lines > left:  # the last chunk: up to the `left`-th newline
                data = data[:len(data) - len(data.split(b"\n", left)[-1])]
                lines = left
            if lines:
                left -= lines
                yield data

    def write_to(self, fh: IO[bytes], n: int, chunk: int = 1 << 16,
                 each: Callable[[], object] = lambda: None) -> int:
        """Write the first `n` IDs to `fh`, calling `each` after every piece; the lines
        written. All of them are copied by the kernel (sendfile: no byte through Python, ~2.5×
        less CPU than reading and writing them, and no memory), their count the spool's own;
        fewer are read `chunk` bytes at a time and counted."""
        if n != self.count or n == 0 or self._sealed is None:
            return self._write_read(fh, n, chunk, each)
        self._fh.flush()
        fh.flush()
        size, at = self._sealed, 0
        if self.size != size:  # the spool is not what was sealed: nothing is copied
            return 0
        try:
            while at < size:
                sent = os.sendfile(fh.fileno(), self._fh.fileno(), at,
                                   min(SENDFILE_STEP, size - at))
                if sent == 0:  # the spool is shorter than it was a moment ago
                    return 0
                at += sent
                each()
        except OSError as exc:  # a file system sendfile cannot write to: read and write
            if at or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            return self._write_read(fh, n, chunk, each)
        return n

    def _write_read(self, fh: IO[bytes], n: int, chunk: int, each: Callable[[], object]
                    ) -> int:
        written = 0
        for ids in self.head(n, chunk):
            fh.write(ids)
            written += ids.count(b"\n")
            each()
        return written

    def blocks(self, n: int, size: int = 1 << 22) -> Iterator[bytes]:
        """The first `n` IDs as the spool holds them, a line possibly cut between blocks: for
        all of them, big reads without splitting lines (a share's manifest reads them so)."""
        if n < self.count:
            yield from self.head(n)
            return
        self._fh.seek(0)
        while block := self._fh.read(size):
            yield block

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        if self.dehydrated is not None:
            self.dehydrated.close()

    def __enter__(self) -> Selection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def select_ids(lines: Iterable[bytes], source: str, kind: str, deleted: Deleted) -> Selection:
    """Validate an ID list (one decimal ID per line, blank lines ignored) and drop R9 IDs.

    Every bad line is reported with its number (BadInput.details["details"]); nothing is
    selected unless the whole list is valid. An ID listed again is left out and counted in
    `Selection.repeats`: each ID is delivered and counted once. Line by line: the rules as
    written; uploads and ID files go through `select_id_stream`, which keeps them faster.
    """
    def feed(check: idlists.Checker) -> None:
        for number, raw in enumerate(lines, start=1):
            check.line(number, raw)

    return _checked(source, kind, deleted, feed)


def select_id_stream(chunks: Iterable[bytes], source: str, kind: str, deleted: Deleted,
                     max_line_bytes: int = MAX_LINE_BYTES) -> Selection:
    """`select_ids` over raw bytes (an upload, an ID file), whole blocks of lines at a time:
    the same IDs, digest, counts and errors, ~0.1 µs an ID (`gatekeeper.domain.idlists`)."""
    def feed(check: idlists.Checker) -> None:
        for number, block, count in idlists.blocks(chunks, source, max_line_bytes):
            check.block(number, block, count)

    return _checked(source, kind, deleted, feed)


def _checked(source: str, kind: str, deleted: Deleted,
             feed: Callable[[idlists.Checker], None]) -> Selection:
    """The selection `feed` gives its checker, distinct and sealed; closed if anything fails."""
    sel = Selection(source)
    try:
        check = idlists.Checker(sel, source, deleted.posts if kind == "posts" else deleted.users)
        feed(check)
        check.finish()
        sel.distinct()
        return sel.seal()
    except BaseException:
        sel.close()
        raise


def select_id_file(path: Path, kind: str, deleted: Deleted,
                   max_line_bytes: int = MAX_LINE_BYTES,
                   progress: Callable[[int], None] | None = None) -> Selection:
    """select_ids over a file, with a clear error when it cannot be read or spooled;
    `progress`, if given, is told how many more bytes were read (a CLI bar)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the ID file ({exc.strerror})") from None
    with fh:
        try:
            # Not `for line in fh`: that reads a line whole, however long.
            read = _reporting(fh.read, progress)
            return select_id_stream(iter(lambda: read(CHUNK), b""), str(path), kind,
                                    deleted, max_line_bytes)
        except OSError as exc:  # reading it, or spooling the selection (a full disk)
            raise InsufficientStorage(f"{path}: the IDs could not be read and spooled "
                                      f"({exc.strerror or exc}); nothing was counted") from None


def _reporting(read: Callable[[int], bytes], progress: Callable[[int], None] | None
               ) -> Callable[[int], bytes]:
    """`read`, telling `progress` (if any) how many bytes each call returned."""
    if progress is None:
        return read

    def counted(n: int) -> bytes:
        data = read(n)
        progress(len(data))
        return data

    return counted


T = TypeVar("T")


def _counting(items: Iterable[T], progress: Callable[[int], None] | None,
              step: int = 1_000) -> Iterator[T]:
    """`items`, telling `progress` (if any) how many more were read, every `step`."""
    if progress is None:
        yield from items
        return
    n = 0
    for n, item in enumerate(items, 1):
        yield item
        if n % step == 0:
            progress(step)
    progress(n % step)


def select_from_dataset(gate: Gate, dataset: str, filters: Any, kind: str,
                        deleted: Deleted, progress: Callable[[int], None] | None = None
                        ) -> Selection:
    """Dehydrate a dataset selection: its Post IDs, or its distinct author User IDs (R9-free).

    R9 decides on each post's light record (its ID, author, and what it retweets), read
    without building posts; with nothing listed, references are not even read. A post the
    file holds more than once (overlapping collections) leaves once, counted in `repeats`.
    """
    if kind == "posts" and (filters is None or filters.is_empty):
        whole = _from_sidecar(gate, dataset, deleted, progress)
        if whole is not None:
            return whole
    sel = Selection(f"dataset {dataset}")
    try:
        if kind == "users":
            for author in _counting(gate.datasets.author_ids(dataset, filters), progress):
                if deleted.hides_user(author):
                    sel.drop(author.encode())
                else:
                    sel.add(author.encode())
        else:
            # The posts the file holds twice were found when it was added (usually none): their
            # later copies are left out here; a dataset added before that was recorded is
            # deduplicated after the fact (Selection.distinct).
            recorded = gate.datasets.info(dataset).repeated_posts
            repeated = {i.encode() for i in recorded or ()}
            met: set[bytes] = set()
            dropped = SeenIds()  # R9 drops: the spool never sees them
            for light in _counting(gate.datasets.light(dataset, filters,
                                                       retweets=deleted.listed), progress):
                ident = light[0].encode()
                if deleted.hides_light(light):
                    if dropped.add(int(ident)):
                        sel.drop(ident)
                    else:
                        sel.repeat(ident)
                elif ident in repeated and ident in met:
                    sel.repeat(ident)
                else:
                    if ident in repeated:
                        met.add(ident)
                    sel.add(ident)
            if recorded is None:
                sel.distinct()
        return sel.seal()
    except BaseException:
        sel.close()
        raise


def _from_sidecar(gate: Gate, dataset: str, deleted: Deleted,
                  progress: Callable[[int], None] | None) -> Selection | None:
    """Every post ID of a dataset, from its ID sidecar (`gatekeeper.domain.dehydrate`: no
    pyarrow, no numpy); None when it has none a share may read (then: the index)."""
    sidecar = gate.datasets.id_sidecar(dataset)
    if sidecar is None:
        return None
    if not dehydrate.fits(sidecar, deleted):
        sidecar.close()
        return None
    sel = Selection(f"dataset {dataset}", buffering=0)  # written a block of IDs at a time
    try:
        sel.dehydrated = dehydrate.dehydrate(sidecar, sel, deleted, progress)
        return sel.seal()
    except BaseException:
        sidecar.close()
        sel.close()
        raise


@dataclass(frozen=True)
class Authorised:
    """Who shares with whom, as the policy allowed it."""

    user: User
    target: Entity
    root: Entity
    audit: dict[str, Any]


def authorise(gate: Gate, *, actor: User | str, entity: str, kind: str, channel: str,
              purpose: str | None, extra: dict[str, Any] | None = None) -> Authorised:
    """Check the policy for an ID share; a refusal is audited (R11) and counts nothing."""
    if kind not in policy.SHARE_KINDS:
        raise BadInput(f"kind must be one of {', '.join(policy.SHARE_KINDS)}, not {kind!r}")
    policy.check_purpose(purpose)
    user = gate.users.get(actor) if isinstance(actor, str) else actor
    target = gate.entities.get(entity)
    root = gate.entities.pool_root(target)
    audit = {"actor": user.name, "entity": entity, "recipient": entity, "channel": channel,
             "kind": f"share.{kind}", "request_id": uuid.uuid4().hex, "purpose": purpose or "",
             **(extra or {})}
    try:
        policy.check_id_share(user, target)
    except GatekeeperError as refusal:
        record_denial(gate.ledger, target.root, refusal, audit)
        raise
    return Authorised(user, target, root, audit)


def reserve(gate: Gate, auth: Authorised, selection: Selection, *, kind: str,
            allow_partial: bool, idempotency_key: str | None,
            request: tuple[Any, ...] = ()) -> Reservation:
    """Count a selection in the ledger: R2 for Post IDs (pooled, R10), recorded for User IDs."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
        raise BadInput("an idempotency key is 1-255 printable ASCII characters")
    idempotency = None
    if idempotency_key:
        idempotency = Idempotency.of(auth.user.name, idempotency_key, auth.target.name, kind,
                                     selection.digest, allow_partial, *request)
    audit = {**auth.audit, "removed_r9": selection.removed or None,
             "repeats": selection.repeats or None}
    target, root = auth.target, auth.root
    for attempt in (1, 2):
        counters = charges.id_share_counters(target, root, kind, selection.count,
                                            gate.config.limits)
        try:
            grant = gate.ledger.take(target.root, counters, requested=selection.count,
                                     share_id=auth.audit["request_id"], audit=audit,
                                     partial=allow_partial, idempotency=idempotency)
            break
        except PoolMoved:
            if attempt == 2:
                raise
            # R10: the entity joined another pool just now; count in the pool it is in.
            target = gate.entities.get(target.name)
            root = gate.entities.pool_root(target)
    return Reservation(gate.ledger, target.root, target.name, kind, grant, counters,
                       idempotency, audit, removed=selection.removed,
                       pending_dir=gate.pending_dir)


def write_file(out: Path, selection: Selection, n: int,
               before_naming: Callable[[], None] | None = None, chunk: int = BLOCK) -> None:
    """Write the first `n` IDs to `out`; the file appears there only once complete (and
    `before_naming`, if given, has returned: the share's manifest is stored)."""

    faults.point("share.reserved")

    def write(fh: IO[bytes]) -> None:
        # The spool already holds one ID per line: copy bytes, never decode them.
        written = selection.write_to(fh, n, chunk, lambda: faults.point("share.writing"))
        if written != n:
            raise OSError(f"{selection.source} changed while it was being shared")
        if before_naming is not None:
            # On disk first (publish's own fsync then finds nothing to write): the manifest,
            # made meanwhile in another thread, has the fsync's time to be stored too.
            fh.flush()
            os.fsync(fh.fileno())
            before_naming()

    spool.publish(out, write)


def share_to_file(gate: Gate, *, actor: str, entity: str, out: Path, kind: str = "posts",
                  ids_path: Path | None = None, dataset: str | None = None,
                  filters: Any = None, allow_partial: bool = False, purpose: str | None = None,
                  idempotency_key: str | None = None, channel: str = "cli",
                  progress: Callable[[int], None] | None = None) -> Reservation:
    """The CLI's share: an ID file or a dataset selection in, the granted ID file out.

    `progress`, if given, is told how far reading the input got: bytes of an ID file, posts
    (or authors) of a dataset."""
    shown = filters.to_dict() if filters is not None and not filters.is_empty else None
    extra = {"dataset": dataset, "filters": json.dumps(shown, sort_keys=True) if shown else None}
    auth = authorise(gate, actor=actor, entity=entity, kind=kind, channel=channel,
                     purpose=purpose, extra={k: v for k, v in extra.items() if v})
    deleted = gate.deletions.current()
    if dataset is not None:
        selection = select_from_dataset(gate, dataset, filters, kind, deleted, progress)
    elif ids_path is not None:
        selection = select_id_file(ids_path, kind, deleted, gate.config.max_line_bytes,
                                   progress)
    else:
        raise BadInput("give --ids FILE or --dataset NAME")
    with selection:
        res = reserve(gate, auth, selection, kind=kind, allow_partial=allow_partial,
                      idempotency_key=idempotency_key,
                      request=(dataset, extra["filters"], purpose))
        n = res.deliverable(selection)
        held: list[Any] = [None]  # a large list's sorted IDs, for the R10 check after

        def deliver() -> None:
            if selection.dehydrated is not None:  # a whole dataset, from its sidecar
                manifest_stream.record_share(gate, res, selection.dehydrated.sorted_ids(n), n, kind,
                                         file=out.name)
                write_file(out, selection, n, chunk=WHOLE_BLOCK)
                return  # no IDs at hand: the R10 check reads the manifest if it must
            ids = held[0] = selection.manifest_ids(n)
            if ids is None:
                manifests.record_share(gate, res, selection.blocks(n), kind, file=out.name)
                write_file(out, selection, n)
            else:  # a large list granted whole: its manifest is made while the file is written
                manifests.record_share_alongside(
                    gate, res, ids, kind, lambda stored: write_file(out, selection, n, stored),
                    file=out.name)

        try:
            res.deliver(deliver, f"{n:,} IDs at {out}")
        except InsufficientStorage as exc:  # the manifest could not be stored
            raise InsufficientStorage(f"{exc}; {res.refund_words()}",
                                      settled=res.settled) from exc
        except OSError as exc:
            raise BadInput(f"{out}: cannot write the ID file ({exc.strerror or exc}); "
                           f"{res.refund_words()}", settled=res.settled) from exc
        # Delivered and committed: now, off its path, R10's re-delivery check (issue 15).
        redelivery.after_share(gate, res, held[0])
    return res
