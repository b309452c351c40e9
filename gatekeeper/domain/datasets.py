"""Datasets: named files of posts in one directory, registered in Redis (SPEC "Datasets").

The files are read by `gatekeeper.domain.formats`; this module names them, keeps them inside the
dataset directory, selects posts with `Filters` (the same in CLI, API and web form) and reports
what an R9 deletion list hides in them.

Over ~400 lines for a reason: adding a dataset copies it, checks it and builds its index
(`dsindex`) in one pass under one lock, and the lazy rebuild of a missing or stale index takes
the same lock and identity check — kept together so that no reader sees a half-registered
dataset. Reading the index is `dsquery`/`dsread`'s.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from gatekeeper.domain import dsids, lines, salvage
from gatekeeper.domain.entities import check_name
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.formats import iter_posts, load, read_records, records
from gatekeeper.domain.lines import CHUNK, GZIP_MAGIC, MAX_LINE_BYTES
from gatekeeper.domain.seen import SeenIds
from gatekeeper.domain.spool import Unnamed
from gatekeeper.ledger import chain, keys
from gatekeeper.ledger.ledger import Ledger, iso
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules.errors import (
    BadInput,
    Conflict,
    DatasetStoreUnavailable,
    InsufficientStorage,
    NotFound,
    StoreUnavailable,
)
from gatekeeper.rules.r9 import Deleted, Light, author_id_of

if TYPE_CHECKING:  # imported where used: a command that reads no dataset loads no pyarrow
    import pyarrow.parquet as pq

    from gatekeeper.domain import dsindex, dsquery, dsstore

SUFFIXES = (".jsonl", ".jsonl.gz")
T = TypeVar("T")


def iter_post_ids(path: Path, filters: Filters | None = None,
                  max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Every post's ID in file order (repeats kept, as `twarc2 dehydrate`), optionally filtered."""
    from gatekeeper.domain.light import light_records  # msgspec: not for a share's import

    if filters is None or filters.is_empty:
        for light in light_records(path, retweets=False, max_line_bytes=max_line_bytes):
            yield light[0]
        return
    for post in iter_posts(path, max_line_bytes):
        if filters.matches(post):
            yield post["id"]


# --- the registry -------------------------------------------------------------------------------


MAX_REPEATED = 1_000  # repeated post IDs a dataset records; past this, shares find them


@dataclass(frozen=True)
class DatasetInfo:
    """What `Datasets.add` found in a file and recorded about it."""

    name: str
    file: str  # NAME.jsonl or NAME.jsonl.gz inside the dataset directory
    posts: int
    users: int  # distinct authors
    languages: tuple[str, ...]
    first_created_at: str | None
    last_created_at: str | None
    sha256: str
    bytes: int
    added_at: str
    added_by: str
    # `add --skip-bad-lines`: lines left out, and the sha256 of the file as given (`sha256` and
    # `bytes` are then those of the copy, which holds only the lines kept).
    skipped_lines: int = 0
    source_sha256: str | None = None
    # The IDs of posts the file holds more than once (overlapping collections), so that an ID
    # share of it drops their later copies without remembering every ID it met; None when not
    # known (a dataset added before this was recorded, or more than MAX_REPEATED of them).
    repeated_posts: list[str] | None = None
    # The index `add` built (`gatekeeper.domain.dsindex`): its version and the JSONL's identity
    # (size, mtime, sampled fingerprint). None for a dataset added before indexes existed.
    index: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as stored in Redis and shown by the CLI and the API."""
        return {**asdict(self), "languages": list(self.languages)}

    @staticmethod
    def from_json(raw: builtins.bytes | str) -> DatasetInfo:  # `bytes` here is the field
        """Read a record as to_dict() stored it (fields added later are ignored)."""
        data = json.loads(raw)
        known = {f.name for f in fields(DatasetInfo)}
        data["languages"] = tuple(data.get("languages") or ())
        return DatasetInfo(**{k: v for k, v in data.items() if k in known})


def _reporting(read: Callable[[int], bytes], progress: Callable[[int], None]
               ) -> Callable[[int], bytes]:
    """`read`, telling `progress` how many bytes each call returned."""
    def counted(n: int) -> bytes:
        data = read(n)
        progress(len(data))
        return data
    return counted


class _Tee:
    """A reader that copies every byte it reads into `out` and hashes it. A thread writes and
    hashes (both release the GIL) while the caller parses what was read; `close` waits for it
    and raises what a write raised (a full disk)."""

    def __init__(self, src: Any, out: Any, name: str) -> None:
        self.src, self.out, self.name = src, out, name
        self.sha = hashlib.sha256()
        self.size = 0
        self.head = b""  # the first bytes: gzip or not
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # ~8 MB ahead
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="dataset-copy", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (data := self._chunks.get()) is not None:
            if self._error is None:
                try:
                    self.out.write(data)
                    self.sha.update(data)
                except BaseException as exc:  # raised in the reader's thread
                    self._error = exc

    def read(self, n: int) -> bytes:
        if self._error is not None:
            raise self._error
        try:
            data = self.src.read(n)
        except OSError as exc:
            raise BadInput(f"{self.name}: cannot read the dataset file ({exc.strerror})",
                           file=self.name) from None
        if not self.size:
            self.head = data[:2]
        if data:
            self._chunks.put(data)
        self.size += len(data)
        return data

    def close(self) -> None:
        """Every byte read written and hashed, or what a write raised."""
        self.stop()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """The thread gone, once it wrote what it was given; idempotent, raises nothing."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()


def _indexed(read: Callable[[int], bytes], name: str, max_line_bytes: int,
             builder: dsindex.Builder) -> Iterator[tuple[dict[str, Any], int, str | None]]:
    """`dsindex.placed_records`' posts, each with its ID as an int and `author_id_of` it,
    computed once for the add and the index: the readers checked both are IDs (or absent)."""
    for number, start, line in lines.placed(read, name, max_line_bytes):
        if not line or line.isspace():
            continue
        position = 0
        for is_post, post in records(load(line, name, number), (name, number)):
            if is_post:
                pid, author_id = int(post["id"]), author_id_of(post)
                builder.row(post, pid, None if author_id is None else int(author_id), start,
                            len(line), position)
                position += 1
                yield post, pid, author_id


class Datasets:
    """The registered datasets: files in one directory or object-store prefix, described in
    Redis (``{sys}`` slot)."""

    def __init__(self, client: redis.Redis, ledger: Ledger, directory: Path | str,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.client = client
        self.ledger = ledger
        # An object store (gatekeeper.domain.dsstore) shared by several servers; `directory`
        # is then only where an add spools its copy before the upload.
        self.remote: dsstore.ObjectStore | None = None
        if isinstance(directory, str) and "://" in directory:  # config's datasets_url
            from gatekeeper.domain import dsstore
            self.remote = dsstore.ObjectStore(directory, client)
        self.directory = Path(tempfile.gettempdir()) if self.remote else Path(directory)
        # One cap for validating and for reading back: a file added under it reads under it.
        self.max_line_bytes = max_line_bytes

    def add(self, name: str, source: Path, *, actor: str, channel: str,
            skipped: salvage.Skipped | None = None,
            progress: Callable[[int], None] | None = None) -> DatasetInfo:
        """Validate `source` whole, copy it in atomically and register it, audited (R11).

        Nothing is visible until the file is complete and every line has parsed: the copy is
        written to a file no path names (O_TMPFILE), named only under the directory lock.
        Given `skipped` (--skip-bad-lines), a bad line is left out and listed there instead of
        refusing the file, and the copy holds only the lines kept (`gatekeeper.domain.salvage`).
        `progress`, if given, is told how many more bytes of `source` were read (a CLI bar).
        """
        from gatekeeper.domain import dsindex
        check_name(name, "dataset")
        self._refuse_taken(name)  # before reading what may be gigabytes
        if self.remote is not None:
            return self._add_remote(self.remote, name, Path(source), actor=actor,
                                    channel=channel, skipped=skipped, progress=progress)
        # The copy has no name until it is complete and registered under the lock, so no
        # crash leaves a partial copy behind (gatekeeper.domain.spool).
        with Unnamed(self.directory) as copy, Unnamed(self.directory) as index, \
                Unnamed(self.directory) as ids:
            # The index (and its ID sidecar) is built in the same pass, unless bad lines are
            # skipped: the copy is then rewritten, and indexed once named (a second pass, on
            # that rare path).
            builder = None
            try:
                with self._writing(name, source):
                    builder = dsindex.Builder(index.file, ids.file) if skipped is None else None
                    scan = self._scan(Path(source), copy.file, skipped, progress, builder)
                    copy.file.flush()
                with self._locked() as dir_fd:
                    self._refuse_taken(name)
                    final = self.directory / (name + scan["suffix"])
                    indexed = dsindex.index_path(self.directory, name)
                    sidecar = dsids.sidecar_path(self.directory, name)
                    for suffix in (*SUFFIXES, dsindex.SUFFIX, dsids.SUFFIX):
                        # Under the lock, with the name unregistered, such a file can only be
                        # left over from an add that died between its naming and its
                        # registration.
                        with contextlib.suppress(FileNotFoundError):
                            (self.directory / (name + suffix)).unlink()
                    try:
                        with self._writing(name, source):
                            copy.name_as(final)
                            if builder is None:
                                scan["index"] = dsindex.build(final, indexed,
                                                              self.max_line_bytes, ids=sidecar)
                            else:
                                scan["index"] = dsindex.identity(final)
                                builder.finish(scan["index"])
                                index.name_as(indexed)
                                ids.name_as(sidecar)
                        os.fsync(dir_fd)
                        return self._register(name, final.name, scan, actor, channel)
                    except BaseException:
                        final.unlink(missing_ok=True)
                        indexed.unlink(missing_ok=True)
                        sidecar.unlink(missing_ok=True)
                        raise
            finally:
                if builder is not None:
                    builder.abandon()  # nothing once finished; else the unnamed file goes

    def remove(self, name: str, *, actor: str, channel: str) -> DatasetInfo:
        """Unregister a dataset and delete its file, audited (R11); what it was.

        Unregistered first, in one transaction with its audit record; the file goes after.
        A crash in between leaves a file that nothing serves (`path` reads the registry) and
        the next `add` of the name replaces; never a registered dataset without its file.
        A share already reading the file finishes: an open file outlives its unlink.
        """
        from gatekeeper.domain import dsindex
        self.info(name)  # NotFound before taking the lock
        if self.remote is not None:
            with self.remote.locked():
                info = self._unregister(name, actor, channel)
                self.remote.remove(info.file)
                self.remote.remove(name + dsindex.SUFFIX)
            return info
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked() as dir_fd:  # not between another add's rename and registration
            info = self._unregister(name, actor, channel)
            root = self.directory.resolve()
            path = (root / info.file).resolve()
            if path.parent == root:  # never delete outside the directory, whatever is recorded
                path.unlink(missing_ok=True)
                dsindex.index_path(root, name).unlink(missing_ok=True)
                dsids.sidecar_path(root, name).unlink(missing_ok=True)
                os.fsync(dir_fd)
        return info

    def _unregister(self, name: str, actor: str, channel: str) -> DatasetInfo:
        """Drop the record, with its audit record, in one transaction (under the lock)."""
        info = self.info(name)
        with failing_closed():
            now_ms = self.ledger.clock.now_ms()
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(keys.DATASETS, name)
            chain.append(pipe, keys.SYS_AUDIT, {
                "time": now_ms, "actor": actor,
                "channel": channel, "kind": "dataset.remove", "outcome": "changed",
                "rule": "R11", "dataset": name,
                "message": f"dataset {name}: removed ({info.posts:,} posts by "
                           f"{info.users:,} users in {info.file}, sha256 "
                           f"{info.sha256[:12]})"}, at_ms=self.ledger.clock.fixed_ms)
            pipe.execute()
        return info

    def _add_remote(self, store: dsstore.ObjectStore, name: str, source: Path, *, actor: str,
                    channel: str, skipped: salvage.Skipped | None,
                    progress: Callable[[int], None] | None) -> DatasetInfo:
        """`add` into an object store: spooled and indexed locally as for a directory, then
        uploaded under the store's lock — the JSONL first, the index once it names the
        uploaded object; on any failure both objects go, so a failed add leaves none. The
        name is marked pending first: a store that drops mid-add and keeps a part has it
        removed once it is back (`sweep_store`), if the retried removal here cannot."""
        from gatekeeper.domain import dsindex
        with Unnamed(self.directory) as copy, Unnamed(self.directory) as index:
            builder = None
            try:
                with self._writing(name, source):
                    builder = dsindex.Builder(index.file) if skipped is None else None
                    scan = self._scan(source, copy.file, skipped, progress, builder)
                    copy.file.flush()
                with store.locked():
                    self._refuse_taken(name)
                    file, indexed = name + scan["suffix"], name + dsindex.SUFFIX
                    store.mark_pending(name)
                    for suffix in (*SUFFIXES, dsindex.SUFFIX):
                        store.remove(name + suffix)  # left by an add that died, as above
                    try:
                        with self._uploading(name, source):
                            store.upload(copy.file, file)
                            if builder is None:
                                scan["index"] = self._build_remote(store, file, indexed)
                            else:
                                scan["index"] = store.identity(file)
                                builder.finish(scan["index"])
                                store.upload(index.file, indexed)
                        info = self._register(name, file, scan, actor, channel)
                    except BaseException as exc:
                        if store.remove_all([file, indexed]):
                            store.unmark_pending(name)
                        elif isinstance(exc, DatasetStoreUnavailable):
                            raise DatasetStoreUnavailable(
                                f"{exc.message}; dataset {name} was not registered, and what "
                                f"of it reached the store is removed once the store is back "
                                f"(the next add of {name}, `gatekeeper store sweep` or "
                                "start-up)", store=store.url) from None
                        raise
                    with contextlib.suppress(StoreUnavailable):  # a stale mark only unmarks
                        store.unmark_pending(name)
                    return info
            finally:
                if builder is not None:
                    builder.abandon()

    def sweep_store(self) -> list[str]:
        """What adds left in the object store when it dropped mid-add (their names still
        marked pending), removed now that it answers; their URLs. A store still away keeps
        its marks for the next sweep. A directory's adds leave nothing (unnamed copies)."""
        from gatekeeper.domain import dsindex
        store = self.remote
        if store is None or not store.pending():
            return []
        removed: list[str] = []
        with store.locked():
            for name in store.pending():
                with failing_closed():
                    registered = self.client.hexists(keys.DATASETS, name)
                if not registered:  # registered: it completed before the mark went
                    try:
                        for file in (name + suffix for suffix in (*SUFFIXES, dsindex.SUFFIX)):
                            if store.exists(file):
                                store.remove(file)
                                removed.append(store.where(file))
                    except DatasetStoreUnavailable:
                        return removed
                store.unmark_pending(name)
        return removed

    def _build_remote(self, store: dsstore.ObjectStore, file: str, indexed: str
                      ) -> dict[str, Any]:
        """(Re)build the index of an object-store JSONL, read through pyarrow, and upload it
        whole; what it records of the JSONL (`dsindex.build` for a directory)."""
        from gatekeeper.domain import dsindex
        source = store.identity(file)
        with Unnamed(self.directory) as out:
            builder = dsindex.Builder(out.file)
            try:
                with store.open(file) as fh:
                    for _ in dsindex.placed_records(fh.read, store.where(file),
                                                    self.max_line_bytes, builder):
                        pass
            except BaseException:
                builder.abandon()
                raise
            if store.identity(file) != source:
                builder.abandon()
                raise BadInput(f"{store.where(file)}: changed while it was being indexed; the "
                               "index was not written", file=store.where(file))
            builder.finish(source)
            store.upload(out.file, indexed)
        return source

    @contextlib.contextmanager
    def _uploading(self, name: str, source: Path) -> Iterator[None]:
        """Uploading to the object store: a refusal is said plainly (the caller cleans up)."""
        try:
            yield
        except OSError as exc:  # pyarrow says an S3 error as OSError
            raise InsufficientStorage(
                f"{self.remote.url if self.remote else self.directory}: cannot store the copy "
                f"of {source} for dataset {name} ({exc}); nothing was registered",
                file=str(source)) from None

    def _scan(self, source: Path, out: Any, skipped: salvage.Skipped | None = None,
              progress: Callable[[int], None] | None = None,
              builder: dsindex.Builder | None = None) -> dict[str, Any]:
        """Copy `source` into `out` while checking every line; what add() records about it.
        Given `builder`, every post also goes to the index, in the same pass."""
        posts, langs, first, last = 0, set(), None, None
        authors: set[Any] = set()
        seen = SeenIds()  # ~7 bytes a post, while the file is read once
        repeated: set[str] = set()
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise BadInput(f"{source}: cannot read the dataset file ({exc.strerror})",
                           file=str(source)) from None
        tee = _Tee(src, out, str(source))
        with src, contextlib.ExitStack() as stack:
            stack.callback(tee.stop)  # on a bad line too: no thread left writing
            read = tee.read if progress is None else _reporting(tee.read, progress)
            stream = ((post, int(post["id"]), author_id_of(post)) for is_post, post in
                      salvage.read(read, str(source), self.max_line_bytes, skipped)
                      if is_post) if builder is None else \
                _indexed(read, str(source), self.max_line_bytes, builder)
            for post, pid, author_id in stream:
                posts += 1
                authors.add(author_id)
                if not seen.add(pid) and len(repeated) <= MAX_REPEATED:
                    repeated.add(post["id"])
                if post.get("lang"):
                    langs.add(str(post["lang"]))
                created = post.get("created_at")
                if created is not None:
                    first = created if first is None or created < first else first
                    last = created if last is None or created > last else last
            while skipped is not None and read(CHUNK):
                pass  # past a broken gzip stream too: source_sha256 is the whole file's
            tee.close()
        if posts == 0:
            what = f"; {salvage.words(skipped.count)}" if skipped and skipped.count else ""
            raise BadInput(f"{source}: holds no posts (a user-lookup or empty file?){what}; "
                           "nothing was registered", file=str(source))
        authors.discard(None)
        gz = tee.head == GZIP_MAGIC
        scan = {"suffix": ".jsonl.gz" if gz else ".jsonl", "posts": posts,
                "users": len(authors), "languages": tuple(sorted(langs)), "first": first,
                "last": last, "sha256": tee.sha.hexdigest(), "bytes": tee.size,
                "skipped": 0, "source_sha256": None,
                "repeated": sorted(repeated, key=int) if len(repeated) <= MAX_REPEATED else None}
        if skipped is not None and skipped.count:
            sha, size = self._rewrite(source, out, skipped, gz, tee.sha.hexdigest())
            scan.update(sha256=sha, bytes=size, skipped=skipped.count,
                        source_sha256=tee.sha.hexdigest())
        return scan

    def _rewrite(self, source: Path, out: Any, skipped: salvage.Skipped, gz: bool,
                 source_sha: str) -> tuple[str, int]:
        """Replace the copy by the source's kept lines; refused if the source changed since."""
        out.seek(0)
        out.truncate()
        again = hashlib.sha256()
        with open(source, "rb") as src:

            def read(n: int) -> bytes:
                data = src.read(n)
                again.update(data)
                return data

            written = salvage.rewrite(read, str(source), self.max_line_bytes, skipped, out, gz)
            while read(CHUNK):
                pass
        if again.hexdigest() != source_sha:
            raise BadInput(f"{source}: changed while it was being added; nothing was "
                           "registered", file=str(source))
        return written

    @contextlib.contextmanager
    def _writing(self, name: str, source: Path) -> Iterator[None]:
        """Writing the copy: a full disk is said plainly (the caller removes the copy)."""
        try:
            yield
        except OSError as exc:
            raise InsufficientStorage(
                f"{self.directory}: cannot write the copy of {source} for dataset {name} "
                f"({exc.strerror}); nothing was registered", file=str(source)) from None

    def _register(self, name: str, file: str, scan: dict[str, Any], actor: str,
                  channel: str) -> DatasetInfo:
        from gatekeeper.domain import dsindex
        now_ms = self.ledger.clock.now_ms()
        info = DatasetInfo(name=name, file=file, posts=scan["posts"], users=scan["users"],
                           languages=scan["languages"], first_created_at=scan["first"],
                           last_created_at=scan["last"], sha256=scan["sha256"],
                           bytes=scan["bytes"], added_at=iso(now_ms), added_by=actor,
                           skipped_lines=scan["skipped"], source_sha256=scan["source_sha256"],
                           repeated_posts=scan["repeated"],
                           index={"version": dsindex.VERSION, **scan["index"]})
        skipped = (f"; {salvage.words(info.skipped_lines)} (--skip-bad-lines), source "
                   f"sha256 {scan['source_sha256'][:12]}" if info.skipped_lines else "")
        # "set", not "create": record.lua's create refuses when the *hash* exists, and this
        # hash holds every dataset. The name was checked free under the directory lock.
        self.ledger.record(
            keys.DATASETS, keys.SYS_AUDIT, mode="set",
            fields={name: json.dumps(info.to_dict(), ensure_ascii=False)},
            audit={"actor": actor, "channel": channel, "kind": "dataset.add",
                   "outcome": "changed", "rule": "R11", "dataset": name,
                   "skipped_lines": str(info.skipped_lines) if info.skipped_lines else None,
                   "message": f"dataset {name}: {info.posts:,} posts by {info.users:,} users "
                              f"in {file} (sha256 {info.sha256[:12]}){skipped}"},
            now_ms=now_ms)
        return info

    def _refuse_taken(self, name: str) -> None:
        with failing_closed():
            taken = self.client.hexists(keys.DATASETS, name)
        if taken:
            raise Conflict(f"a dataset named {name!r} already exists")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The dataset directory locked (flock on the directory itself: no lock file to leave
        behind, and a crashed holder releases it)."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def list(self) -> list[DatasetInfo]:
        """Every registered dataset, by name."""
        with failing_closed():
            raw = self.client.hgetall(keys.DATASETS)
        return sorted((DatasetInfo.from_json(v) for v in raw.values()), key=lambda i: i.name)

    def info(self, name: str) -> DatasetInfo:
        """One dataset's record; NotFound when no dataset has that name."""
        if not keys.valid_name(name):
            raise NotFound(f"no dataset named {name!r}")
        with failing_closed():
            raw = self.client.hget(keys.DATASETS, name)
        if raw is None:
            raise NotFound(f"no dataset named {name!r}")
        return DatasetInfo.from_json(raw)

    def check(self, name: str) -> None:
        """NotFound unless the dataset is registered and its file is there."""
        self._file(name)

    def _file(self, name: str) -> str:
        """The dataset's file name, checked there (in the directory or the object store)."""
        if self.remote is None:
            return self.path(name).name
        file = self.info(name).file
        if not self.remote.exists(file):
            raise NotFound(f"dataset {name!r} is registered but its file "
                           f"{self.remote.where(file)} is missing")
        return file

    def _open(self, file: str) -> Any:
        """A seekable binary reader of a dataset file (a context manager)."""
        if self.remote is not None:
            return self.remote.open(file)
        return open(self.directory.resolve() / file, "rb")  # closed by the caller's with

    def _identity(self, file: str) -> dict[str, Any]:
        from gatekeeper.domain import dsindex
        if self.remote is not None:
            return self.remote.identity(file)
        return dsindex.identity(self.directory.resolve() / file)

    def _describes(self, indexed: str, source: dict[str, Any]) -> bool:
        import pyarrow as pa

        from gatekeeper.domain import dsindex
        if self.remote is None:
            return dsindex.describes(self.directory.resolve() / indexed, source)
        try:
            with self.remote.open(indexed) as fh:
                return dsindex.describes(fh, source)
        except (NotFound, OSError, pa.ArrowException):
            return False

    def path(self, name: str) -> Path:
        """The dataset's file, which is always inside the dataset directory (a directory's
        datasets only: an object store's have no local path)."""
        if self.remote is not None:
            raise NotFound(f"dataset {name!r} is in {self.remote.url}, not a local file")
        root = self.directory.resolve()
        path = (root / self.info(name).file).resolve()
        if path.parent != root:
            raise NotFound(f"dataset {name!r} is registered outside {root}; refused")
        if not path.is_file():
            raise NotFound(f"dataset {name!r} is registered but its file {path} is missing")
        return path

    def posts(self, name: str, filters: Filters | None = None
              ) -> Generator[dict[str, Any], None, None]:
        """The dataset's posts that match `filters`, authors attached, in file order (close it
        to close the file)."""
        file = self._file(name)  # here, so an unknown name fails at the call, not later
        posts = iter_posts(self.path(name), self.max_line_bytes) if self.remote is None \
            else self._remote_posts(file)
        if filters is None or filters.is_empty:
            return posts
        return (post for post in posts if filters.matches(post))

    def _remote_posts(self, file: str) -> Generator[dict[str, Any], None, None]:
        with self._open(file) as fh:
            for is_post, obj in read_records(fh.read, self._where(file), self.max_line_bytes):
                if is_post:
                    yield obj

    def _where(self, file: str) -> str:
        """A dataset file as messages name it."""
        if self.remote is not None:
            return self.remote.where(file)
        return str(self.directory.resolve() / file)

    # --- read through the index (gatekeeper.domain.dsindex) ----------------------------------

    def reindex(self, name: str, *, force: bool = False) -> None:
        """Rebuild the dataset's index when it is missing, of another version or not of the
        JSONL as it is now (or always, with `force`), under the directory lock."""
        from gatekeeper.domain import dsindex
        if self.remote is not None:
            with self.remote.locked():
                file, key = self._file(name), name + dsindex.SUFFIX
                if force or not self._describes(key, self._identity(file)):
                    self._build_remote(self.remote, file, key)
            return
        with self._locked():
            path = self.path(name)
            indexed = dsindex.index_path(path.parent, name)
            sidecar = dsids.sidecar_path(path.parent, name)
            source = dsindex.identity(path)
            if force or not dsindex.describes(indexed, source) \
                    or not dsids.describes(sidecar, source):
                dsindex.build(path, indexed, self.max_line_bytes, ids=sidecar)

    def id_sidecar(self, name: str) -> dsids.Sidecar | None:
        """The dataset's ID sidecar (`dsids`), checked against its JSONL first and rebuilt
        with the index when it does not describe it: never a stale answer. None for an
        object store's dataset, or one whose IDs are not all plain (read the index then)."""
        if self.remote is not None:
            return None
        path = self.path(name)
        sidecar = dsids.sidecar_path(path.parent, name)
        if not dsids.describes(sidecar, dsids.identity(path)):
            self.reindex(name)
        opened = dsids.Sidecar(sidecar)
        if not opened.meta.get("plain"):
            opened.close()
            return None
        return opened

    @contextlib.contextmanager
    def index(self, name: str) -> Iterator[pq.ParquetFile]:
        """The dataset's index, checked against its JSONL first (and rebuilt when it does not
        describe it): never a stale answer."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from gatekeeper.domain import dsindex, dsquery
        indexed = name + dsindex.SUFFIX
        if self.remote is not None:
            # Fewer round trips: one HEAD says the JSONL is there and what it is, and the
            # index is opened once, for the check and for the read.
            source = self.remote.identity(self.info(name).file)
            fh = self._remote_index(self.remote, indexed, source)
            if fh is None:
                self.reindex(name)
                fh = self._open(indexed)
            with fh:
                try:
                    yield pq.ParquetFile(fh.native, read_dictionary=dsquery.DICTIONARY)
                except (OSError, pa.ArrowException) as exc:  # the store gone mid-read
                    if self.remote.failed(exc):
                        raise self.remote.unavailable(exc) from None
                    raise  # a damaged index: `indexed` rebuilds it
            return
        file = self._file(name)
        if not self._describes(indexed, self._identity(file)):
            self.reindex(name)
        with self._open(indexed) as fh:
            yield pq.ParquetFile(fh, read_dictionary=dsquery.DICTIONARY)

    @staticmethod
    def _remote_index(store: dsstore.ObjectStore, indexed: str, source: dict[str, Any]
                      ) -> Any:
        """The object-store index opened, if it describes `source` (`dsindex.describes`
        reads its footer through the reader: the store failing there is its plain answer,
        not a reason to rebuild); else None."""
        from gatekeeper.domain import dsindex
        try:
            fh = store.open(indexed)
        except NotFound:
            return None
        try:
            if dsindex.describes(fh, source):
                return fh
        except BaseException:
            fh.close()
            raise
        fh.close()
        return None

    def indexed(self, name: str, read: Callable[[pq.ParquetFile], T]) -> T:
        """`read(index)`; an index damaged past its footer fails to read: it is rebuilt and
        read once more."""
        import pyarrow as pa
        try:
            with self.index(name) as pf:
                return read(pf)
        except (pa.ArrowException, OSError):  # pyarrow says "can't deserialize" as OSError
            self.reindex(name, force=True)
        with self.index(name) as pf:
            return read(pf)

    def count(self, name: str, filters: Filters, deleted: Deleted, *, limit: int | None = None,
              referenced: bool = False, with_users: bool = False,
              rows: bool = True) -> dsquery.Counted:
        """What an export of this selection holds, from the index (`dsquery.count`)."""
        from gatekeeper.domain import dsquery
        repeated = self.info(name).repeated_posts
        return self.indexed(name, lambda pf: dsquery.count(
            pf, filters, deleted, limit=limit, referenced=referenced, with_users=with_users,
            repeated=repeated, rows=rows))

    def fetch(self, name: str, rows: Iterable[int]
              ) -> Generator[tuple[int, dict[str, Any]], None, None]:
        """(index row, post) of the given rows (ascending), read from the JSONL at the places
        the index gives: only their lines are parsed (and, gzip aside, read)."""
        import numpy as np

        from gatekeeper.domain import dsquery, dsread
        file = self._file(name)
        wanted = np.fromiter(rows, np.int64)
        with self.index(name) as pf, self._open(file) as fh:
            yield from dsread.posts_at(fh, self._where(file), dsquery.places(pf, wanted),
                                       self.max_line_bytes)

    def post_ids(self, name: str, filters: Filters | None = None) -> Iterator[str]:
        """The IDs of the matching posts in file order (a post stored twice comes twice)."""
        self._file(name)  # here, so an unknown name fails at the call, not later
        return self._post_ids(name, filters)

    def _post_ids(self, name: str, filters: Filters | None) -> Iterator[str]:
        from gatekeeper.domain import dsquery
        with self.index(name) as pf:
            for batch in dsquery.batches(pf, filters or Filters(), ["pid"]):
                yield from map(str, batch["pid"].to_pylist())

    def light(self, name: str, filters: Filters | None = None, *,
              retweets: bool = True) -> Iterator[Light]:
        """The `Light` records (what R9 decides on) of the matching posts, in file order."""
        self._file(name)
        return self._light(name, filters, retweets)

    def _light(self, name: str, filters: Filters | None, retweets: bool) -> Iterator[Light]:
        from gatekeeper.domain import dsquery
        cols = ["pid", "author", "rt", "rt_author"] if retweets else ["pid", "author"]
        with self.index(name) as pf:
            for batch in dsquery.batches(pf, filters or Filters(), cols):
                yield from zip(*(dsquery.light_column(batch[c]) if c in batch.schema.names
                                 else [None] * batch.num_rows
                                 for c in ("pid", "author", "rt", "rt_author")), strict=True)

    def author_ids(self, name: str, filters: Filters | None = None) -> Iterator[str]:
        """The distinct author User IDs of the matching posts, in first-seen order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from gatekeeper.domain import dsquery
        authors: list[Any] = []
        with self.index(name) as pf:
            for batch in dsquery.batches(pf, filters or Filters(), ["author"]):
                authors.append(pc.unique(batch["author"]))
        if not authors:
            return iter(())
        return (str(a) for a in pc.unique(pa.chunked_array(authors)).to_pylist()
                if a is not None)

    def affected(self, deleted: Deleted, before: Deleted | None = None) -> dict[str, int]:
        """R9: per dataset, how many stored posts `deleted` hides — or, given `before`, how
        many it hides that `before` did not (what one deletion list newly hides)."""
        from gatekeeper.domain import dsquery
        out: dict[str, int] = {}
        if not deleted.listed:
            return out
        for info in self.list():
            n = self.indexed(info.name, lambda pf: dsquery.newly_hidden(pf, deleted, before))
            if n:
                out[info.name] = n
        return out
