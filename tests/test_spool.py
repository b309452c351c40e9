"""Files no path names (R7): spools vanish with their process, files appear only whole."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import pytest

from gatekeeper.domain import spool


def test_an_anonymous_spool_has_no_name_from_its_first_byte(tmp_path: Path) -> None:
    with spool.anonymous(tmp_path) as fh:
        fh.write(b"hydrated text")
        fh.flush()
        assert os.fstat(fh.fileno()).st_nlink == 0
        assert not list(tmp_path.iterdir())


def test_a_killed_process_leaves_no_byte_of_its_spool(tmp_path: Path) -> None:
    code = ("import os, signal, sys; from gatekeeper.domain import spool\n"
            "fh = spool.anonymous(sys.argv[1]); fh.write(b'MARKER-HYDRATED' * 1000); fh.flush()\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert proc.returncode == -9
    assert not list(tmp_path.iterdir())


def test_publish_names_the_file_only_once_complete_and_replaces_atomically(
    tmp_path: Path
) -> None:
    out = tmp_path / "ids.txt"
    out.write_bytes(b"old\n")
    seen: list[list[str]] = []

    def write(fh: IO[bytes]) -> None:
        fh.write(b"1\n2\n")
        seen.append(sorted(os.listdir(tmp_path)))

    spool.publish(out, write)

    assert seen == [["ids.txt"]] and out.read_bytes() == b"1\n2\n"
    assert sorted(os.listdir(tmp_path)) == ["ids.txt"]


def test_a_failing_writer_leaves_nothing_and_the_old_file_untouched(tmp_path: Path) -> None:
    out = tmp_path / "ids.txt"
    out.write_bytes(b"old\n")

    def write(fh: IO[bytes]) -> None:
        fh.write(b"1\n")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        spool.publish(out, write)
    assert sorted(os.listdir(tmp_path)) == ["ids.txt"] and out.read_bytes() == b"old\n"


def test_sweep_removes_leftover_spools_and_partial_files_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"
    data = tmp_path / "data"
    for d in (tmp, data):
        d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    (tmp / "gatekeeper-export-abc").mkdir()
    (tmp / "gatekeeper-export-abc" / "export.xlsx").write_bytes(b"PK hydrated")
    (tmp / "gatekeeper-ids-1.txt").write_bytes(b"1\n")
    (data / ".kpop.x1.tmp").write_bytes(b"{}")
    (data / ".out.txt.y2.part").write_bytes(b"1\n")
    keep = [tmp / "other.txt", data / "kpop.jsonl", data / "appendonly.aof"]
    for path in keep:
        path.write_bytes(b"x")

    removed = spool.sweep([data])

    assert sorted(p.name for p in removed) == [".kpop.x1.tmp", ".out.txt.y2.part",
                                               "gatekeeper-export-abc", "gatekeeper-ids-1.txt"]
    assert sorted(p.name for d in (tmp, data) for p in d.iterdir()) == sorted(
        p.name for p in keep)
