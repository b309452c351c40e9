"""Small things written once (issue 11, item 4): the Redis clock, the atomic file writer, the
pool root of an entity, a post's URL; and the library object typed where it is passed.

Each had two to seven copies that could drift apart (a copy that forgot `failing_closed`, a
writer that forgot to fsync). The scans below read the source, so a new copy fails here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import redis

from gatekeeper import config as config_mod
from gatekeeper.domain import checkpoints, monthly
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import clock
from gatekeeper.rules.errors import BadInput, StoreUnavailable

ROOT = Path(__file__).resolve().parents[1]


def sources(*packages: str) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
            for package in packages for p in sorted((ROOT / package).rglob("*.py"))}


def where(pattern: str, *packages: str) -> set[str]:
    return {name for name, text in sources(*packages).items() if re.search(pattern, text)}


# --- the Redis clock ----------------------------------------------------------------------------


def test_now_ms_is_the_redis_servers_clock(redis_client: redis.Redis) -> None:
    seconds, micros = redis_client.time()
    before = seconds * 1000 + micros // 1000
    now = clock.now_ms(redis_client)
    seconds, micros = redis_client.time()
    assert before <= now <= seconds * 1000 + micros // 1000


def test_now_ms_fails_closed_when_the_store_cannot_be_reached(tmp_path: Path) -> None:
    away = redis.Redis(unix_socket_path=str(tmp_path / "nothing.sock"))
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        clock.now_ms(away)


def test_only_the_clock_module_asks_redis_for_the_time() -> None:
    readers = where(r"client\)?\.time\(\)", "gatekeeper", "exports")
    assert readers == {"gatekeeper/ledger/clock.py"}


# --- the atomic file writer ---------------------------------------------------------------------


def test_only_the_spool_module_renames_a_file_into_place() -> None:
    renamers = where(r"os\.replace\(", "gatekeeper", "exports")
    # The ledger imports nothing of the domain (STYLE 11), so the refund file it owes
    # (ledger/pending.py) keeps its own small writer.
    assert renamers == {"gatekeeper/domain/spool.py",
                                              "gatekeeper/ledger/pending.py"}


def test_a_report_that_cannot_be_written_leaves_nothing_behind(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    def broken(report: object, stream: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(monthly, "write_pdf", broken)
    out = tmp_path / "reports" / "2026-10.pdf"
    with pytest.raises(BadInput, match=r"cannot write the report \(No space left on device\); "
                                       r"nothing was written"):
        monthly.write_file(None, out)  # type: ignore[arg-type]  # never read: write_pdf fails
    assert list((tmp_path / "reports").iterdir()) == []


def test_a_report_replaces_the_file_at_its_path_whole(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def two_pages(report: object, stream: object) -> int:
        stream.write(b"%PDF new")  # type: ignore[attr-defined]
        return 2

    monkeypatch.setattr(monthly, "write_pdf", two_pages)
    out = tmp_path / "2026-10.pdf"
    out.write_bytes(b"%PDF old, longer than the new one")
    assert monthly.write_file(None, out) == 2  # type: ignore[arg-type]
    assert out.read_bytes() == b"%PDF new"
    assert [p.name for p in tmp_path.iterdir()] == ["2026-10.pdf"]


def test_a_checkpoint_is_published_whole(redis_client: redis.Redis, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    written = checkpoints.write(redis_client, Ed25519PrivateKey.generate(), tmp_path / "cp")
    assert written.path is not None
    assert [p.name for p in (tmp_path / "cp").iterdir()] == [written.path.name]
    assert written.path.read_text(encoding="utf-8") == written.text


def test_a_checkpoint_that_cannot_be_written_is_refused_and_leaves_nothing(
        redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def failing_disk(fd: int) -> None:
        raise OSError(5, "I/O error")

    (tmp_path / "cp").mkdir()
    monkeypatch.setattr(os, "fsync", failing_disk)
    # BadInput, as when the directory cannot be made: a monthly report then says "none written"
    # instead of failing.
    with pytest.raises(BadInput, match=r"cannot write the checkpoint \(I/O error\)"):
        checkpoints.write(redis_client, Ed25519PrivateKey.generate(), tmp_path / "cp")
    assert list((tmp_path / "cp").iterdir()) == []


# --- the pool root of an entity -----------------------------------------------------------------


@pytest.fixture
def gate(redis_client: redis.Redis, tmp_path: Path) -> Gate:
    (tmp_path / "config.toml").write_text("[limits]\npost_ids_per_entity = 1000\n")
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    for name, parent in (("acme", None), ("acme-labs", "acme")):
        g.entities.add(name, kind="commercial", research=False, parent=parent, actor="t",
                       channel="cli")
    return g


def test_pool_root_of_a_root_is_itself_and_of_a_child_its_parent(gate: Gate) -> None:
    acme, labs = gate.entities.get("acme"), gate.entities.get("acme-labs")
    assert gate.entities.pool_root(acme) is acme
    assert gate.entities.pool_root(labs) == acme


def test_the_pool_root_is_looked_up_in_one_place() -> None:
    lookups = where(r"entities\.get\([a-z_.]*\.root\)", "gatekeeper")
    assert lookups == set()


# --- a post's URL -------------------------------------------------------------------------------


def test_a_posts_url_is_written_in_one_place() -> None:
    assert where(r"/status/", "gatekeeper", "exports") == {"exports/columns.py"}


# --- the library object, typed ------------------------------------------------------------------


def test_no_parameter_takes_the_gate_untyped() -> None:
    assert where(r"\bgate: Any\b", "gatekeeper", "exports") == set()

