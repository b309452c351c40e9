"""A share between counting and delivering: retries, failed writes and a store that goes away.

On fakeredis and on a real Redis server, through the same library calls the CLI makes
(`shares.share_to_file`). Issue 9 reproduced each of these on the code before: a retry was
served "already shared" against a reservation that was then refunded (1,499,900 IDs delivered,
0 counted); a store dying after the file was written printed "nothing was released"; a refund
that could not reach the store was lost.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import redis

from gatekeeper import config as config_mod
from gatekeeper.domain import shares
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules.errors import BadInput, InProgress, StoreUnavailable
from gatekeeper.rules.limits import Counter, Limit, post_id_window

pytestmark = pytest.mark.usefixtures("quick_password_hashes")
N = 500


@pytest.fixture
def gate(redis_client: redis.Redis, tmp_path: Path) -> Gate:
    (tmp_path / "config.toml").write_text('[redis]\ndata_dir = "var"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("acme", by="Pat Signer", actor="t", channel="cli")
    g.users.add("dan", entity="acme", role="data", password="correct horse battery",
                actor="t", channel="cli")
    return g


@pytest.fixture
def ids(tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in range(1, N + 1)))
    return path


def share(gate: Gate, ids: Path, out: Path, key: str | None = "job-1") -> Any:
    return shares.share_to_file(gate, actor="dan", entity="acme", ids_path=ids, out=out,
                                purpose="test", idempotency_key=key)


def r2_used(gate: Gate) -> int:
    counter = Counter(keys.counter("acme", "r2", "acme"), "R2",
                      post_id_window(gate.config.limits), Limit(None))
    return gate.ledger.peek([counter])[1][0].used


def outcomes(gate: Gate) -> list[str]:
    return [f[b"outcome"].decode() for _, f in gate.client.xrange(keys.audit("acme"))
            if f.get(b"kind", b"").startswith(b"share.")]


def test_a_retry_racing_a_failing_first_delivery_is_in_progress_and_delivers_nothing(
    gate: Gate, ids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish = shares.spool.publish
    retry_out = tmp_path / "retry.txt"
    seen: list[BaseException] = []

    def first_write_fails(out: Path, write: Any) -> None:
        # While the first share is writing, the same request arrives again...
        monkeypatch.setattr(shares.spool, "publish", publish)
        try:
            share(gate, ids, retry_out)
        except InProgress as exc:
            seen.append(exc)
        # ...and then the first one's disk is full.
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shares.spool, "publish", first_write_fails)
    with pytest.raises(BadInput) as failed:
        share(gate, ids, tmp_path / "first.txt")

    [refusal] = seen
    assert refusal.status == 409 and refusal.exit_code == 4
    assert "in progress" in refusal.message and refusal.details["retry_after"] >= 1
    assert not retry_out.exists()  # the retry delivered nothing
    assert "nothing was delivered or counted" in failed.value.message
    assert r2_used(gate) == 0
    # A retry now is a new request, delivered and counted once.
    again = share(gate, ids, retry_out)
    assert again.grant.status == "granted"
    assert len(retry_out.read_text().split()) == N
    assert r2_used(gate) == N
    assert outcomes(gate) == ["granted", "in_progress", "refunded", "granted", "delivered"]


def test_a_retry_after_the_first_is_delivered_is_replayed_and_counted_once(
    gate: Gate, ids: Path, tmp_path: Path
) -> None:
    share(gate, ids, tmp_path / "a.txt")
    again = share(gate, ids, tmp_path / "b.txt")

    assert again.grant.status == "replay"
    assert (tmp_path / "b.txt").read_text() == (tmp_path / "a.txt").read_text()
    assert r2_used(gate) == N


def test_the_store_dying_after_the_file_is_written_says_it_was_delivered_and_stays_counted(
    gate: Gate, ids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def store_gone(*_a: object, **_k: object) -> str:
        raise StoreUnavailable("Redis is unreachable")

    monkeypatch.setattr(Ledger, "settle", store_gone)
    out = tmp_path / "out.txt"
    with pytest.raises(StoreUnavailable) as stopped:
        share(gate, ids, out)
    monkeypatch.undo()

    assert len(out.read_text().split()) == N
    message = stopped.value.message
    assert f"{N:,} IDs at {out}" in message and "delivered" in message
    assert "stays counted" in message and "nothing was released" not in message
    assert stopped.value.exit_code == 5
    assert r2_used(gate) == N  # the open reservation keeps them counted


def test_a_refund_the_store_cannot_take_waits_on_disk_and_is_sent_when_it_is_back(
    gate: Gate, ids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle = Ledger.settle

    def store_gone_for_refunds(self: Ledger, *a: Any, delivered: bool, **k: Any) -> str:
        if not delivered:
            raise StoreUnavailable("Redis is unreachable")
        return settle(self, *a, delivered=delivered, **k)

    def disk_full(out: Path, write: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Ledger, "settle", store_gone_for_refunds)
    monkeypatch.setattr(shares.spool, "publish", disk_full)
    with pytest.raises(BadInput) as failed:
        share(gate, ids, tmp_path / "out.txt")
    monkeypatch.undo()

    assert "refunded as soon as the store is back" in failed.value.message
    assert r2_used(gate) == N  # still reserved: nothing uncounted meanwhile
    assert len(list(gate.pending_dir.glob("*.json"))) == 1

    assert gate.recover() == {"settled": 1, "left": 0}
    assert r2_used(gate) == 0
    assert not list(gate.pending_dir.iterdir())
    assert outcomes(gate)[-1] == "refunded"
    assert gate.recover() == {"settled": 0, "left": 0}


def test_the_id_spool_and_the_published_file_never_have_a_partial_name(
    gate: Gate, ids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names: list[list[str]] = []
    head = shares.Selection.head

    def watching(self: shares.Selection, n: int, chunk: int = 1 << 16) -> Any:
        assert os.fstat(self._fh.fileno()).st_nlink == 0  # the spool has no name
        for piece in head(self, n, chunk):
            names.append(sorted(os.listdir(tmp_path)))
            yield piece

    monkeypatch.setattr(shares.Selection, "head", watching)
    share(gate, ids, tmp_path / "out.txt", key=None)

    # datasets/ holds the share's manifest (gatekeeper.domain.manifests), also named whole.
    assert names and all([n for n in listing if n != "datasets"] == ["config.toml", "ids.txt"]
                         for listing in names)
    assert sorted(os.listdir(tmp_path)) == ["config.toml", "datasets", "ids.txt", "out.txt"]
    assert [p.suffix for p in (tmp_path / "datasets" / "manifests").glob("*/*")] == [".gkm"]


def test_an_api_retry_while_the_first_is_unsettled_is_409_with_retry_after(
    gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gatekeeper.channels.web.app import create_app
    from gatekeeper.ledger.reservation import Reservation

    client = create_app(gate).test_client()
    token = gate.users.create_token("dan", actor="t", channel="cli")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain",
               "Idempotency-Key": "job-7"}
    body = "".join(f"{i}\n" for i in range(1, N + 1))
    commit = Reservation.commit_before_sending
    retried: list[Any] = []

    def retry_first(self: Reservation) -> None:
        if not retried:  # the same request arrives while the first is not yet settled
            retried.append(client.post("/api/v1/shares?entity=acme", data=body,
                                       headers=headers))
        commit(self)

    monkeypatch.setattr(Reservation, "commit_before_sending", retry_first)
    first = client.post("/api/v1/shares?entity=acme", data=body, headers=headers)

    [retry] = retried
    assert retry.status_code == 409 and int(retry.headers["Retry-After"]) >= 1
    assert retry.get_json()["error"] == "in_progress" and retry.get_json()["rule"] == "R2"
    assert retry.get_data() and b"\n1\n" not in retry.get_data()  # no ID file
    assert first.status_code == 200 and len(first.get_data().split()) == N
    assert r2_used(gate) == N
    # Once the first is settled, a retry gets its IDs again, counted once.
    again = client.post("/api/v1/shares?entity=acme", data=body, headers=headers)
    assert again.status_code == 200 and again.headers["X-Share-Status"] == "replay"
    assert again.get_data() == first.get_data() and r2_used(gate) == N
    for resp in (retry, first, again):
        resp.close()  # releases the spooled IDs (call_on_close)


def test_an_idempotency_key_ending_in_a_newline_is_refused_and_counts_nothing(
    gate: Gate, ids: Path, tmp_path: Path
) -> None:
    with pytest.raises(BadInput) as refused:
        share(gate, ids, tmp_path / "out.txt", key="job-1\n")
    assert "idempotency key" in refused.value.message
    assert r2_used(gate) == 0 and not (tmp_path / "out.txt").exists()
