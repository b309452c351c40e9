"""Files no path names: the spools of ID shares and hydrated exports, and files published whole.

R7: hydrated content must never be left where someone could find it. A spool is an anonymous
file (``O_TMPFILE`` on Linux: it never has a name, and the kernel frees it when the last
descriptor closes — also when the process is killed), so a crash leaves no readable byte
behind. A file that must appear under a name (``share --out``, a dataset copy) is written
anonymously and linked into place only when complete, so a crash leaves either nothing or the
whole file, never a ``.part``. `sweep` removes what older versions, or systems without
``O_TMPFILE``, may have left.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

BUFFER = 1 << 20
# What earlier versions named their spools (tempfile.mkstemp/mkdtemp prefixes).
LEGACY = ("gatekeeper-ids-", "gatekeeper-export-")


def anonymous(directory: str | os.PathLike[str] | None = None,
              buffering: int = BUFFER) -> IO[bytes]:
    """A read-write spool file without a name (closed: gone, whatever ends the process)."""
    # tempfile uses O_TMPFILE where the kernel and file system have it, and otherwise unlinks
    # the file the moment it is created.
    return tempfile.TemporaryFile("w+b", buffering=buffering, dir=directory)


def _unnamed(directory: Path) -> int | None:
    """A descriptor of an anonymous file in `directory` that can later be linked into it."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # no O_TMPFILE here: fall back to a named temporary file
        raise


class Unnamed:
    """A file being written in `directory` that no path names until `name_as` gives it its
    name, whole; closed without a name, it is gone (so is it when the process dies)."""

    def __init__(self, directory: Path) -> None:
        # Folders made here (a manifest's first of a month): their names are synced with the
        # file's, else a crash could lose the folder and the file in it (issue 15).
        self._made = list(itertools.takewhile(lambda d: not d.exists(),
                                              (directory, *directory.parents)))
        directory.mkdir(parents=True, exist_ok=True)
        fd = _unnamed(directory)
        self._tmp: str | None = None
        if fd is None:  # no O_TMPFILE: a named temporary, removed on any failure
            fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=".gatekeeper-",
                                             suffix=".part")
        self.file: IO[bytes] = os.fdopen(fd, "wb", buffering=BUFFER)

    def name_as(self, out: Path) -> None:
        """Make the complete, synced file appear at `out` (replacing what is there)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        if self._tmp is None:
            _link(self.file.fileno(), out)  # syncs its folder
        else:
            os.replace(self._tmp, out)
            self._tmp = None
            sync_dir(out.parent)  # the rename is on disk only once its folder is
        for made in self._made:
            sync_dir(made.parent)

    def close(self) -> None:
        self.file.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)

    def __enter__(self) -> Unnamed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sync_dir(directory: Path) -> None:
    """fsync a folder: the names made, renamed or removed in it are then on disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(out: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through `write` and make it appear at `out` only once complete and on
    disk: before that no path names it (a crash or an error leaves nothing behind)."""
    with Unnamed(out.parent) as unnamed:
        write(unnamed.file)
        unnamed.name_as(out)


def _link(fd: int, out: Path) -> None:
    """Give the anonymous file `fd` the name `out`, replacing any file there atomically."""
    # linkat(AT_SYMLINK_FOLLOW) through /proc names the open file itself; os.link only uses
    # linkat (not link(2), which would link the /proc symlink) when given a directory fd.
    source = f"/proc/self/fd/{fd}"
    directory = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            os.link(source, out.name, dst_dir_fd=directory, follow_symlinks=True)
        except FileExistsError:
            # Replacing a file: link beside it, then rename over it in one step.
            tmp = f".{out.name}.{uuid.uuid4().hex}.part"
            os.link(source, tmp, dst_dir_fd=directory, follow_symlinks=True)
            try:
                os.replace(tmp, out.name, src_dir_fd=directory, dst_dir_fd=directory)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=directory)
                raise
        try:
            os.fsync(directory)
        except BaseException:
            # The caller treats a failure as "nothing was written" (a share then refunds):
            # take the name away again, so that no file is there to be used uncounted.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out.name, dir_fd=directory)
            raise
    finally:
        os.close(directory)


def sweep(directories: Iterable[Path]) -> list[Path]:
    """Remove spools and partial files a crash left (older versions named them; so does the
    fallback where O_TMPFILE is missing): what was removed."""
    removed: list[Path] = []
    for directory in {Path(tempfile.gettempdir()), *map(Path, directories)}:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                name = entry.name
                if not (name.startswith(LEGACY) or (name.startswith(".")
                        and name.endswith((".part", ".tmp")))):
                    continue
                path = Path(entry.path)
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    removed.append(path)
    return removed
