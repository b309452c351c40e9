"""Deletion notices (issue 15 item 2, R9): an ingested deletion list opens one notice per
recipient of a delivery that held what it newly hides — the entity of an ID share, the person
of a hydrated export — and no other; compliance acknowledges one (both backends)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from live import PASSWORD, api_share, build_gate, export_spanish, share_ids

from gatekeeper import config as config_mod
from gatekeeper.domain import notices as notices_mod
from gatekeeper.domain.gate import Gate, ingest_deletion_stream
from gatekeeper.domain.notices import Notice
from gatekeeper.ledger import keys
from gatekeeper.rules.errors import BadInput, Conflict, Forbidden, NotFound
from tests.test_s3 import _admin, moto_endpoint, objects, store_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

A = 1_600_000_000_000_000_000  # acme's first share
B = 1_610_000_000_000_000_000  # beta's share
C = 1_620_000_000_000_000_000  # acme's second share, which no list touches
D = 1_630_000_000_000_000_000  # a share to beta that was refunded
ORIGINAL = "1440691114135080963"  # kpop: the post three Spanish posts retweet
RETWEETS = ("1440717170493689866", "1440717144166068233", "1440715952857837570")
SPANISH_ALONE = "1440717124545114123"  # kpop: a Spanish post, no retweet; by AUTHOR
AUTHOR = "34643836"


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    g = build_gate(tmp_path, redis_client, terms="Jane Doe", kpop=True, config=(
        "[limits]\nhydrated_per_recipient = 1000\npost_ids_per_entity = 100000\n"))
    g.entities.add("beta", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("beta", by="Bo Beta", actor="t", channel="cli")
    return g


def share_list(gate: Gate, tmp_path: Path, entity: str, ids: list[int | str]) -> str:
    from gatekeeper.domain import shares

    path = tmp_path / f"ids-{entity}-{len(list(tmp_path.iterdir()))}.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    res = shares.share_to_file(gate, actor="dan", entity=entity, ids_path=path,
                               out=tmp_path / "out.txt", purpose="t")
    return str(res.grant.share_id)


def refunded_share(gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A share to beta of D.. whose file could not be written: its manifest is stored, its
    reservation refunded — nothing left."""
    monkeypatch.setenv("GATEKEEPER_FAILPOINT", "share.writing:enospc")
    with pytest.raises(BadInput, match="the reservation was refunded"):
        share_ids(gate, tmp_path, "beta", 50, start=D)
    monkeypatch.delenv("GATEKEEPER_FAILPOINT")
    # Its manifest left the index with the refund (Ledger.settle); the refund's record names it.
    [name] = [f[b"manifest"].decode() for _i, f in gate.client.xrange(keys.audit("beta"))
              if f.get(b"outcome") == b"refunded"]
    assert gate.manifests.read(name).posts.tolist()[:1] == [D]
    assert name not in gate.manifests.listed()
    return name.split("/")[1]


def ingest(gate: Gate, lines: list[str], kind: str = "posts") -> Any:
    return ingest_deletion_stream(gate, [line.encode() + b"\n" for line in lines], kind=kind,
                                  source=f"list-{kind}.txt", actor="cora", channel="cli")


def by_recipient(gate: Gate) -> dict[tuple[str, str], Notice]:
    found = {(n.recipient_kind, n.recipient): n for n in gate.notices.listing()}
    assert len(found) == len(gate.notices.listing())  # one notice per recipient
    return found


def ids_of(gate: Gate, notice: Notice) -> tuple[list[int], list[int]]:
    got = gate.notices.ids(notice.id)
    return got.posts().tolist(), got.users().tolist()


def test_a_deletion_list_opens_one_notice_per_recipient_that_holds_what_it_newly_hides(
        gate: Gate, client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    cli_a = share_ids(gate, tmp_path, "acme", 100, start=A).grant.share_id
    api_a = api_share(gate, client, [A + 5, A + 500, A + 501])
    cli_b = share_ids(gate, tmp_path, "beta", 100, start=B).grant.share_id
    share_ids(gate, tmp_path, "acme", 100, start=C)  # held by no list
    refunded = refunded_share(gate, tmp_path, monkeypatch)
    export_spanish(client)
    assert gate.notices.listing() == []

    # Every shape R9 reads: plain IDs, and batch-compliance records (hide, scrub_geo,
    # reversal); a listed ID no delivery holds; the refunded delivery's; the original of
    # three retweets ana's export holds whole.
    report = ingest(gate, [
        str(A + 5), json.dumps({"id": str(A + 7), "action": "delete", "reason": "deleted"}),
        json.dumps({"id": str(B + 1), "action": "delete", "reason": "suspended"}),
        json.dumps({"id": str(C + 1), "action": "delete", "reason": "scrub_geo"}),
        json.dumps({"id": str(C + 2), "action": "undelete"}),
        str(D + 3), str(A + 10**9), ORIGINAL])
    found = by_recipient(gate)
    assert set(found) == {("entity", "acme"), ("entity", "beta"), ("person", "ana")}
    assert sorted(report.notices) == sorted(n.id for n in found.values())

    acme = found[("entity", "acme")]
    assert {d.delivery for d in acme.deliveries} == {cli_a, api_a}
    assert {d.delivery: (d.posts, d.channel) for d in acme.deliveries} == {
        cli_a: (2, "cli"), api_a: (1, "api")}
    assert ids_of(gate, acme) == ([A + 5, A + 7], [])
    assert gate.notices.ids(acme.id).by_delivery[api_a][0].tolist() == [A + 5]
    beta = found[("entity", "beta")]
    assert [d.delivery for d in beta.deliveries] == [cli_b] and refunded not in {
        d.delivery for d in beta.deliveries}
    assert ids_of(gate, beta) == ([B + 1], [])
    ana = found[("person", "ana")]
    assert [d.kind for d in ana.deliveries] == ["export.xlsx"]
    assert re.fullmatch(r"kpop-ana-\d{8}T\d{6}\.xlsx", str(ana.deliveries[0].file))
    # R9's exits' rules: the original, and the retweets that carry its content.
    assert ids_of(gate, ana) == (sorted(int(i) for i in (ORIGINAL, *RETWEETS)), [])

    for n in found.values():
        # 24 hours from the ingest, which came just before the notice was opened
        assert n.state == "open" and 0 <= n.opened_ms + 86_400_000 - n.deadline_ms < 60_000
        assert n.entity == ("acme" if n.recipient != "beta" else "beta")
        assert n.sources == ("list-posts.txt",)
    opened = [r for r in audit(gate) if r.get("kind") == "notices.open"]
    assert sorted(r["request_id"] for r in opened) == sorted(report.notices)
    assert all(r["rule"] == "R9" and r["actor"] == "cora" for r in opened)

    # The same list again newly hides nothing: no notice.
    assert ingest(gate, [str(A + 5), ORIGINAL]).notices == []
    assert len(gate.notices.listing()) == 3


def audit(gate: Gate) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(keys.SYS_AUDIT)]


def test_a_users_deletion_reaches_their_posts_in_exports_and_in_id_shares_the_datasets_know(
        gate: Gate, client: FlaskClient, tmp_path: Path) -> None:
    export_spanish(client)
    share_list(gate, tmp_path, "beta", [SPANISH_ALONE, A + 1])  # a kpop post, and another
    share_ids(gate, tmp_path, "acme", 10, start=A)
    report = ingest(gate, [json.dumps({"id": AUTHOR, "action": "delete",
                                       "reason": "protected"})], kind="users")
    found = by_recipient(gate)
    assert set(found) == {("entity", "beta"), ("person", "ana")}
    assert sorted(report.notices) == sorted(n.id for n in found.values())
    # The export recorded the author: their User ID and their post.
    assert ids_of(gate, found[("person", "ana")]) == ([int(SPANISH_ALONE)], [int(AUTHOR)])
    # The ID share recorded Post IDs only: the post is theirs by the dataset's index.
    assert ids_of(gate, found[("entity", "beta")]) == ([int(SPANISH_ALONE)], [])


def test_a_share_of_user_ids_is_told_of_those_users(gate: Gate, tmp_path: Path) -> None:
    from gatekeeper.domain import shares

    path = tmp_path / "users.txt"
    path.write_text(f"{AUTHOR}\n528719507\n")
    shares.share_to_file(gate, actor="dan", entity="acme", ids_path=path,
                         out=tmp_path / "out.txt", purpose="t", kind="users")
    ingest(gate, [AUTHOR], kind="users")
    [notice] = gate.notices.listing()
    assert (notice.recipient, notice.users, notice.posts) == ("acme", 1, 0)
    assert ids_of(gate, notice) == ([], [int(AUTHOR)])


def test_the_api_lists_gets_and_finds_each_recipients_open_notices(
        gate: Gate, client: FlaskClient, tmp_path: Path) -> None:
    share_ids(gate, tmp_path, "acme", 10, start=A)
    export_spanish(client)
    first = ingest(gate, [str(A + 1)]).notices
    second = ingest(gate, [str(A + 2), ORIGINAL]).notices
    assert len(first) == 1 and len(second) == 2  # a second ingest: a notice of its own
    [acme_2] = [i for i in second if gate.notices.get(i).recipient == "acme"]
    assert [n.id for n in gate.notices.open_for_entity("acme")] == [acme_2, first[0]]
    assert gate.notices.open_for_entity("beta") == []
    [ana] = gate.notices.open_for_person("ana")
    assert ana.recipient_kind == "person" and ana.id in second
    assert gate.notices.open_for_person("dan") == []
    assert [n.id for n in gate.notices.listing(open_only=True)] == sorted(
        [*first, *second], key=lambda i: (gate.notices.get(i).deadline_ms, i))
    assert len(gate.notices.listing()) == 3
    with pytest.raises(NotFound):
        gate.notices.get("0" * 32)
    with pytest.raises(NotFound):
        gate.notices.get("not-an-id")
    d = gate.notices.get(first[0]).to_dict()
    assert d["ids"] == 1 and d["state"] == "open" and d["deliveries"][0]["ids"] == 1
    assert d["deadline"].endswith("Z")


def test_compliance_acknowledges_a_notice_once_and_others_may_not(
        gate: Gate, tmp_path: Path) -> None:
    share_ids(gate, tmp_path, "acme", 10, start=A)
    [ident] = ingest(gate, [str(A + 1)]).notices
    for who in ("ana", "dan"):
        with pytest.raises(Forbidden, match="R12"):
            gate.notices.ack(ident, by="Jane Doe", actor=who, channel="cli")
    with pytest.raises(BadInput, match="--by"):
        gate.notices.ack(ident, by="  ", actor="cora", channel="cli")
    assert gate.notices.get(ident).open
    done = gate.notices.ack(ident, by="Jane Doe (acme DPO)", note="ticket 42", actor="cora",
                            channel="cli")
    assert (done.state, done.acked_by, done.acked_note, done.acked_actor) == (
        "acknowledged", "Jane Doe (acme DPO)", "ticket 42", "cora")
    assert done.acked_ms is not None and not done.overdue(done.acked_ms)
    assert gate.notices.open_for_entity("acme") == []
    assert gate.notices.listing(open_only=True) == []
    assert [n.id for n in gate.notices.listing()] == [ident]
    with pytest.raises(Conflict, match="acknowledged by Jane Doe"):
        gate.notices.ack(ident, by="again", actor="cora", channel="cli")
    [record] = [r for r in audit(gate) if r.get("kind") == "notices.ack"]
    assert record["request_id"] == ident and record["actor"] == "cora"
    assert "Jane Doe (acme DPO)" in record["message"] and record["rule"] == "R9"


def test_a_scan_that_died_before_opening_its_notices_is_finished_by_the_next(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share_ids(gate, tmp_path, "acme", 10, start=A)
    share_ids(gate, tmp_path, "beta", 10, start=B)
    for point in ("notices.batched", "notices.written"):
        monkeypatch.setenv("GATEKEEPER_FAILPOINT", f"{point}:enospc")
        report = ingest(gate, [str(A + 1) if point == "notices.batched" else str(B + 1)])
        assert report.notices == [] and "notices scan" in str(report.notices_error)
        assert gate.notices.listing() == []
        assert gate.client.get(keys.NOTICES_LOCK) is None
    monkeypatch.delenv("GATEKEEPER_FAILPOINT")
    scan = gate.notices.scan(actor="cora", channel="cli")
    assert {(n.recipient, ids_of(gate, n)[0][0]) for n in scan.opened} == {
        ("acme", A + 1), ("beta", B + 1)}
    assert gate.notices.scan(actor="cora", channel="cli").opened == []
    assert gate.notices.pending() == 0


def test_common_finds_exactly_the_ids_in_both() -> None:
    import numpy as np

    rng = np.random.default_rng(15)
    for _ in range(50):
        a = np.unique(rng.integers(1, 10**6, rng.integers(0, 300))).astype(np.uint64)
        b = np.unique(rng.integers(1, 10**6, rng.integers(0, 300))).astype(np.uint64)
        assert notices_mod.common(a, b).tolist() == sorted(set(a.tolist()) & set(b.tolist()))


def test_a_refunded_delivery_opens_no_notice_after_its_share_record_expired(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The share record lives the quota window and a day; a manifest lives 90 days: then the
    pool's audit record of how the reservation ended says it."""
    refunded = refunded_share(gate, tmp_path, monkeypatch)
    # As if the store had dropped between the refund and its manifest's leaving the index.
    [name] = [f[b"manifest"].decode() for _i, f in gate.client.xrange(keys.audit("beta"))
              if f.get(b"outcome") == b"refunded"]
    gate.client.zadd(keys.MANIFESTS, {name: int(gate.manifests.read(name).meta["at_ms"])})
    kept = share_ids(gate, tmp_path, "beta", 10, start=D + 100).grant.share_id
    for share in (refunded, kept):
        assert gate.client.delete(keys.share("beta", share)) == 1
    [ident] = ingest(gate, [str(D + 1), str(D + 101)]).notices
    assert [d.delivery for d in gate.notices.get(ident).deliveries] == [kept]


# --- the CLI (the embedded store) ----------------------------------------------------------------


def test_the_cli_lists_shows_exports_and_acknowledges_a_notice(
        runner: Any, acme: Path) -> None:
    from pypdf import PdfReader

    r = runner("user", "add", "cora", "--entity", "acme", "--role", "compliance",
               "--password-stdin", input=PASSWORD + "\n")  # the same as conftest's
    assert r.exit_code == 0, r.output
    (acme / "ids.txt").write_text("".join(f"{A + i}\n" for i in range(20)))
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", "ids.txt", "--out", "o.txt")
    assert r.exit_code == 0, r.output
    assert runner("notices", "list").output.strip() == "no deletion notices"
    (acme / "tweets_deleted.jsonl").write_text("".join(
        json.dumps({"id": str(A + i), "action": "delete", "reason": "deleted"}) + "\n"
        for i in (3, 4)) + f"{A + 10**6}\n")
    r = runner("deletions", "add", "tweets_deleted.jsonl")
    assert r.exit_code == 0 and "1 deletion notice opened" in r.output, r.output
    r = runner("notices", "list", "--open", "--json")
    [listed] = json.loads(r.output)
    ident = listed["id"]
    assert (listed["recipient"], listed["recipient_kind"], listed["posts"]) == ("acme",
                                                                                "entity", 2)
    r = runner("notices", "show", ident)
    assert r.exit_code == 0 and "to entity acme" in r.output and "open" in r.output, r.output
    assert runner("notices", "show", "f" * 32).exit_code == 2

    r = runner("notices", "export", ident, "--out", "letter", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    ids_file = acme / "letter" / f"notice-{ident}-posts.txt"
    assert ids_file.read_text() == f"{A + 3}\n{A + 4}\n" and ids_file.name in str(out["files"])
    pdf = PdfReader(acme / "letter" / f"notice-{ident}.pdf")
    words = " ".join(page.extract_text() for page in pdf.pages)
    for expected in ("Deletion notice", "entity acme", "Delete by", str(A + 3), "24 hours",
                     ident):
        assert expected in words
    # The deliveries table: each cell on one line (a share id, a time, a header word whole).
    lines = words[words.index("What was delivered"):].splitlines()
    shown = set(re.findall(r"\b[0-9a-f]{32}\b", runner("notices", "show", ident).output))
    assert len(shown - {ident}) == 1  # the one delivery, o.txt
    for expected in ("Channel", "Posts", "Users", *(shown - {ident})):
        assert expected in lines, (expected, lines)

    r = runner("notices", "ack", ident, "--by", "Jane Doe", "--as", "dana")
    assert r.exit_code == 4 and "R12" in r.output, r.output
    r = runner("notices", "ack", ident, "--by", "Jane Doe", "--note", "by mail", "--as", "cora")
    assert r.exit_code == 0 and "confirmed by Jane Doe" in r.output, r.output
    assert runner("notices", "list", "--open").output.strip() == "no open deletion notices"
    r = runner("notices", "ack", ident, "--by", "Jane Doe", "--as", "cora")
    assert r.exit_code != 0 and "acknowledged by Jane Doe" in r.output
    r = runner("audit", "export", "--format", "jsonl", "--out", "audit.jsonl")
    assert r.exit_code == 0, r.output
    kinds = [json.loads(line).get("kind") for line in
             (acme / "audit.jsonl").read_text().splitlines()]
    assert {"notices.open", "notices.export", "notices.ack"} <= set(kinds)
    r = runner("notices", "scan", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["opened"] == [], r.output


def test_a_notices_ids_go_to_the_object_store_beside_the_manifests(
        tmp_path: Path, redis_client: redis.Redis, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("store_url")
    build_gate(tmp_path, redis_client, terms="Jane Doe")
    (tmp_path / "config.toml").write_text(f'[datasets]\ndir = "{url}"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    share_ids(g, tmp_path, "acme", 30, start=A)
    [ident] = ingest(g, [str(A + 2), str(A + 29)]).notices
    notice = g.notices.get(ident)
    month = notice.file.split("/")[0]
    assert objects(url.replace("/data?", f"/data/notices/{month}?")) == [f"{ident}.gkn"]
    assert ids_of(g, notice) == ([A + 2, A + 29], [])
    assert not (tmp_path / "datasets" / "notices").exists()


def test_one_scan_at_a_time_and_a_dead_scanners_lock_is_taken_over(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    share_ids(gate, tmp_path, "acme", 10, start=A)
    here = socket.gethostname()
    monkeypatch.setattr(notices_mod.Notices, "scan", lambda self, **kw: notices_mod.Scan())
    assert ingest(gate, [str(A + 1)]).notices == []  # (its scan did not run)
    monkeypatch.undo()
    for holder in (f"{here} {os.getpid()} t", "elsewhere 1 t"):  # alive here; another host
        gate.client.set(keys.NOTICES_LOCK, holder)
        assert gate.notices.scan(actor="cora", channel="cli").busy
        assert gate.notices.listing() == [] and gate.notices.pending() == 1
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    gate.client.set(keys.NOTICES_LOCK, f"{here} {dead} t")  # a scanner of this host, gone
    [notice] = gate.notices.scan(actor="cora", channel="cli").opened
    assert ids_of(gate, notice) == ([A + 1], []) and gate.client.get(keys.NOTICES_LOCK) is None
