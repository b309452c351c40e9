"""Datasets in an S3-compatible object store (issue 14, "datasets beyond one disk").

`[datasets] dir` may be a URL such as
``s3://bucket/prefix?endpoint_override=host:9000&scheme=http&region=us-east-1``; several app
servers then share the datasets it holds. pyarrow reads and writes it (`pyarrow.fs`, the engine
that reads the Parquet index): the index is read column by column through ranged GETs and the
JSONL is read at the offsets the index gives. Credentials come only from the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, pyarrow's usual chain): pyarrow refuses a secret
in the URL, so none is ever written in config.toml.

An object appears whole when its upload completes, so a file is uploaded under its final key
only once its local spool is complete, and removed on any failure; the name is marked pending
in Redis first, so objects a store that dropped mid-add kept are removed once it is back (the
next add of the name, `gatekeeper store sweep`, start-up). The store failing at any point —
opening, mid-read, uploading — is one answer, DatasetStoreUnavailable with the store's URL:
nothing counted, nothing half-written, never a traceback. A directory flock cannot
serialise servers: a Redis lock does (SET NX PX with a token, kept alive while held, released
by compare-and-delete in a WATCH transaction — no Lua outside the ledger).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

import pyarrow as pa
import pyarrow.fs as pafs
import redis

from gatekeeper.ledger import keys
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules.errors import BadInput, Conflict, DatasetStoreUnavailable, NotFound

LOCK_MS = 30_000  # a crashed holder frees the lock after this; a live one renews it
RENEW_S = LOCK_MS / 3000
WAIT_S = 600.0  # how long an add or remove waits for another server's
REMOVE_TRIES = 3  # a failed add removes what it uploaded: tries, REMOVE_PAUSE_S apart
REMOVE_PAUSE_S = 0.5


class ObjectStore:
    """The dataset files under one prefix of an object store (flat: NAME.jsonl and its index)."""

    def __init__(self, url: str, client: redis.Redis) -> None:
        try:
            self.fs, base = pafs.FileSystem.from_uri(url)
        except (pa.ArrowException, ValueError) as exc:
            raise BadInput(f"[datasets] dir: {url.split('?')[0]!r} is not an object store "
                           f"pyarrow can open ({exc})", field="dir") from None
        self.base = base.rstrip("/")
        self.url = url.split("?")[0]  # what messages show: never the query
        self.client = client

    def key(self, file: str) -> str:
        if "/" in file or file in ("", ".", ".."):  # never outside the prefix
            raise NotFound(f"dataset file {file!r} is not inside {self.url}; refused")
        return f"{self.base}/{file}"

    def where(self, file: str) -> str:
        return f"{self.url.rstrip('/')}/{file}"

    def unavailable(self, exc: BaseException) -> DatasetStoreUnavailable:
        """The plain answer (HTTP 503, exit 5) for the store unreachable or refusing."""
        return DatasetStoreUnavailable(f"the dataset store {self.url} cannot be reached "
                                       f"({exc}); try again later", store=self.url)

    @staticmethod
    def failed(exc: BaseException) -> bool:
        """Whether pyarrow's error is the store's (every S3 error it raises names the AWS
        error; a damaged Parquet file never does)."""
        return isinstance(exc, OSError) and "AWS Error" in str(exc)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """The object store unreachable or refusing is said plainly (HTTP 503, exit 5), as
        Redis away is: the answer is no."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self.unavailable(exc) from None

    def info(self, file: str) -> pafs.FileInfo:
        with self._reaching():
            return self.fs.get_file_info(self.key(file))

    def exists(self, file: str) -> bool:
        return bool(self.info(file).type == pafs.FileType.File)

    def identity(self, file: str) -> dict[str, Any]:
        """What the index records of its JSONL, from one HEAD: an object is replaced whole,
        never edited in place. Size and modification time (whole seconds) do not tell a
        replacement of the same size in the same second: the ETag (and the version, in a
        versioned bucket) does — it changes with the content."""
        with self.open(file) as fh, self._reaching():
            meta = {k.lower(): v.decode() for k, v in (fh.native.metadata() or {}).items()}
            size = fh.native.size()
        modified = meta.get("last-modified")
        if modified is None:
            mtime_ns = self.info(file).mtime_ns  # another HEAD, for a store that said none
        else:
            at = datetime.fromisoformat(modified.replace("Z", "+00:00"))
            mtime_ns = int(at.timestamp()) * 10**9
        found = {"bytes": size, "mtime_ns": mtime_ns, "etag": meta.get("etag")}
        if meta.get("versionid"):
            found["version"] = meta["versionid"]
        return found

    def open(self, file: str) -> Reader:
        """A seekable reader of the object (ranged GETs)."""
        try:
            with self._reaching():
                return Reader(self, file, self.fs.open_input_file(self.key(file)))
        except FileNotFoundError:
            raise NotFound(f"{self.where(file)} is missing") from None

    def upload(self, src: IO[bytes], file: str) -> None:
        """Copy the complete local spool `src` under `file`: readers see
        the object only when the upload completes."""
        src.flush()
        # The spool is write-only and may have no name: read it again through /proc. No
        # compression: pyarrow would otherwise gzip a NAME.jsonl.gz again, told by its suffix.
        with self._reaching(), open(f"/proc/self/fd/{src.fileno()}", "rb") as spooled, \
                self.fs.open_output_stream(self.key(file), compression=None) as out:
            shutil.copyfileobj(spooled, out, 8 << 20)

    def remove(self, file: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._reaching():
            self.fs.delete_file(self.key(file))

    def remove_all(self, files: list[str], tries: int = REMOVE_TRIES) -> bool:
        """Remove `files`, trying a store that stopped answering a few times (a short
        outage); whether every one is gone."""
        for attempt in range(tries):
            try:
                for file in files:
                    self.remove(file)
                return True
            except DatasetStoreUnavailable:
                if attempt + 1 < tries:
                    time.sleep(REMOVE_PAUSE_S)
        return False

    # --- names an add is uploading (Redis), for what a dropped store keeps ------------------

    def mark_pending(self, name: str) -> None:
        """Before the first byte goes up: should the store drop mid-add and keep a part,
        this names what to remove once it is back (`Datasets.sweep_store`)."""
        with failing_closed():
            self.client.sadd(keys.DATASETS_PENDING, name)

    def unmark_pending(self, name: str) -> None:
        with failing_closed():
            self.client.srem(keys.DATASETS_PENDING, name)

    def pending(self) -> list[str]:
        with failing_closed():
            names = self.client.smembers(keys.DATASETS_PENDING)
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store's datasets locked against every server sharing this Redis."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + WAIT_S
        while True:
            with failing_closed():
                if self.client.set(keys.DATASETS_LOCK, token, nx=True, px=LOCK_MS):
                    break
            if time.monotonic() > deadline:
                raise Conflict(f"{self.url}: another server has held the datasets lock for "
                               f"{WAIT_S:.0f} s; try again")
            time.sleep(0.05)
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(token, stop), daemon=True,
                                   name="gatekeeper-datasets-lock")
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            self._if_held(token, lambda pipe: pipe.delete(keys.DATASETS_LOCK))

    def _renew(self, token: str, stop: threading.Event) -> None:
        while not stop.wait(RENEW_S):
            with contextlib.suppress(Exception):  # a missed renewal: the next one may land
                self._if_held(token, lambda pipe: pipe.pexpire(keys.DATASETS_LOCK, LOCK_MS))

    def _if_held(self, token: str, act: Any) -> None:
        """`act(pipe)` in a transaction, only while the lock still holds `token`."""
        with failing_closed(), self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.DATASETS_LOCK)
                held = pipe.get(keys.DATASETS_LOCK)
                if held is None or (held.decode() if isinstance(held, bytes) else held) != token:
                    return
                pipe.multi()
                act(pipe)
                pipe.execute()
            except redis.WatchError:
                return  # it changed hands meanwhile: not ours to touch


class Reader:
    """An object opened for reading (pyarrow's, `native`), whose failures mid-read — the
    store gone between two ranged GETs — are the store's plain answer, not an OSError that
    callers would take for a full disk or a damaged file."""

    def __init__(self, store: ObjectStore, file: str, native: pa.NativeFile) -> None:
        self.store, self.file, self.native = store, file, native

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError:  # removed meanwhile (remove by another server)
            raise NotFound(f"{self.store.where(self.file)} is missing") from None
        except OSError as exc:
            raise self.store.unavailable(exc) from None

    def read(self, n: int = -1) -> bytes:
        with self._reading():
            return bytes(self.native.read(None if n is None or n < 0 else n))

    def seek(self, offset: int, whence: int = 0) -> int:
        with self._reading():
            return int(self.native.seek(offset, whence))

    def tell(self) -> int:
        return int(self.native.tell())

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return bool(self.native.closed)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.native.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
