"""Trace (issue 15 item 4): `trace(gate, id)` and `gatekeeper trace` find exactly the deliveries
(CLI share, API share, hydrated export) whose manifests hold an ID — at a block's edges too, in
version 1 manifests, with and without the spans kept in Redis — and nothing else (both
backends)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from live import PASSWORD, api_share, build_gate, export_spanish, sign_in

from gatekeeper.channels.cli.context import Context, Group
from gatekeeper.channels.cli.trace import trace_cmd
from gatekeeper.domain import manifests, shares
from gatekeeper.domain.formats import iter_posts
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.trace import trace
from gatekeeper.ledger import keys
from gatekeeper.rules.errors import BadInput
from tests.test_s3 import _admin, moto_endpoint, store_url  # noqa: F401 - fixtures

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
BASE = 1_600_000_000_000_000_000


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Gate:
    monkeypatch.setattr(manifests, "BLOCK_IDS", 100)  # many blocks: their edges are tested
    return build_gate(tmp_path, redis_client, terms="Jane Doe", kpop=True, config=(
        "[limits]\nhydrated_per_recipient = 1000\npost_ids_per_entity = 100000\n"))


def share_file(gate: Gate, tmp_path: Path, ids: list[int], name: str) -> str:
    """A CLI share of `ids` to acme, written to `name`; its share id."""
    path = tmp_path / f"{name}.in"
    path.write_text("".join(f"{i}\n" for i in ids))
    res = shares.share_to_file(gate, actor="dan", entity="acme", ids_path=path,
                               out=tmp_path / name, purpose="t")
    return res.grant.share_id


def deliveries(gate: Gate, ident: int, **kw: Any) -> list[str]:
    return [h.delivery for h in trace(gate, ident, **kw)]


def test_trace_finds_exactly_the_shares_that_held_an_id_at_every_block_edge(
        gate: Gate, tmp_path: Path, client: FlaskClient) -> None:
    evens = [BASE + 2 * i for i in range(1000)]  # 10 blocks of 100
    threes = [BASE + 3 * i for i in range(700)]  # 21 blocks
    later = [BASE + 10**9 + i for i in range(250)]  # outside the others' spans
    a = share_file(gate, tmp_path, evens, "evens.txt")
    b = api_share(gate, client, threes)
    c = share_file(gate, tmp_path, later, "later.txt")
    held = {a: set(evens), b: set(threes), c: set(later)}
    edges = {i for ids in (evens, threes, later) for k in range(0, len(ids), 100)
             for i in (ids[k], ids[min(k + 99, len(ids) - 1)], ids[k] - 1, ids[k] + 1)}
    probes = edges | {BASE - 1, BASE + 2101, BASE + 10**9 + 250, BASE + 5 * 10**8}
    for ident in sorted(probes):
        want = [d for d in (a, b, c) if ident in held[d]]
        assert deliveries(gate, ident) == want, ident
        assert deliveries(gate, ident, use_spans=False) == want, ident
        assert deliveries(gate, ident, kind="users") == []  # ID shares of posts hold no users


def test_a_hit_says_when_to_whom_how_and_which_file(gate: Gate, tmp_path: Path,
                                                    client: FlaskClient) -> None:
    a = share_file(gate, tmp_path, [BASE, BASE + 7], "acme-ids.txt")
    b = api_share(gate, client, [BASE + 7])
    first, second = trace(gate, str(BASE + 7))
    assert (first.delivery, first.channel, first.kind, first.file) == (
        a, "cli", "share.posts", "acme-ids.txt")
    assert (second.delivery, second.channel, second.file) == (b, "api", None)
    for hit in (first, second):
        assert (hit.recipient, hit.entity, hit.actor, hit.held_as) == ("acme", "acme", "dan",
                                                                       "post")
        assert hit.manifest.endswith(hit.delivery) and hit.at.endswith("Z")
    assert first.at_ms <= second.at_ms


def test_a_large_list_recorded_while_its_file_is_written_names_its_file(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [BASE + 5 * i for i in range(shares.EXACT_FROM)]  # its manifest made alongside
    alongside = manifests.record_share_alongside
    calls: list[str | None] = []

    def spy(*args: Any, **kw: Any) -> None:
        calls.append(kw.get("file"))
        alongside(*args, **kw)

    monkeypatch.setattr(manifests, "record_share_alongside", spy)
    a = share_file(gate, tmp_path, ids, "large.txt")
    assert calls == ["large.txt"]
    for ident in (ids[0], ids[99], ids[100], ids[-1]):
        [hit] = trace(gate, ident)
        assert (hit.delivery, hit.file, hit.channel) == (a, "large.txt", "cli")
    assert trace(gate, ids[-1] + 1) == []


def test_a_dataset_share_names_its_dataset(gate: Gate, tmp_path: Path) -> None:
    res = shares.share_to_file(gate, actor="dan", entity="acme", dataset="kpop",
                               out=tmp_path / "kpop-ids.txt", purpose="t")
    post = int((tmp_path / "kpop-ids.txt").read_text().split()[0])
    [hit] = trace(gate, post)
    assert (hit.delivery, hit.dataset, hit.file) == (res.grant.share_id, "kpop",
                                                     "kpop-ids.txt")


def test_an_export_is_traced_to_the_person_by_its_posts_and_its_authors(
        gate: Gate, client: FlaskClient) -> None:
    export_spanish(client)
    spanish = [p for p in iter_posts(SAMPLES / "kpop.jsonl") if p.get("lang") == "es"]
    other = next(p for p in iter_posts(SAMPLES / "kpop.jsonl") if p.get("lang") != "es"
                 and p["author_id"] not in {s["author_id"] for s in spanish})
    [hit] = trace(gate, spanish[0]["id"])
    assert (hit.recipient, hit.entity, hit.channel, hit.kind, hit.dataset, hit.held_as) == (
        "ana", "acme", "web", "export.xlsx", "kpop", "post")
    assert hit.file is not None and hit.file.startswith("kpop-ana-") and hit.file.endswith(
        ".xlsx")
    [by_author] = trace(gate, spanish[0]["author_id"], kind="users")
    assert (by_author.delivery, by_author.held_as) == (hit.delivery, "user")
    assert trace(gate, other["id"]) == [] and trace(gate, other["author_id"], kind="users") == []


def test_a_user_id_share_is_found_by_user_id_only(gate: Gate, tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"{BASE + 5}\n")
    res = shares.share_to_file(gate, actor="dan", entity="acme", ids_path=path, kind="users",
                               out=tmp_path / "u.txt", purpose="t")
    assert deliveries(gate, BASE + 5, kind="users") == [res.grant.share_id]
    assert deliveries(gate, BASE + 5) == []


def test_a_version_1_manifest_without_spans_is_still_traced(gate: Gate) -> None:
    at = 1_764_400_000_000
    data = manifests.encode_v1([BASE + 1, BASE + 9], [77], {
        "delivery": "f" * 32, "at_ms": at, "recipient": "acme", "entity": "acme",
        "channel": "cli", "kind": "share.posts", "actor": "dan"})
    name = manifests.name_of("f" * 32, at)
    gate.manifests.store(name, at, data, 2, 1)
    gate.client.hdel(keys.MANIFEST_SPANS, name)  # as one stored before spans were kept
    assert manifests.decode(gate.manifests.read_bytes(name)).posts.tolist() == [BASE + 1,
                                                                                BASE + 9]
    assert deliveries(gate, BASE + 9) == ["f" * 32]
    assert deliveries(gate, 77, kind="users") == ["f" * 32]
    assert deliveries(gate, BASE + 5) == []


def test_a_manifest_outside_an_ids_span_is_never_opened(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share_file(gate, tmp_path, [BASE + 10, BASE + 20], "a.txt")
    share_file(gate, tmp_path, [BASE + 30, BASE + 40], "b.txt")
    opened: list[str] = []
    find = manifests.Manifests.find

    def spy(self: manifests.Manifests, name: str, *args: Any) -> Any:
        opened.append(name)
        return find(self, name, *args)

    monkeypatch.setattr(manifests.Manifests, "find", spy)
    assert len(trace(gate, BASE + 20)) == 1 and len(opened) == 1
    assert trace(gate, BASE + 25) == [] and len(opened) == 1  # between the two: neither
    assert trace(gate, BASE + 35) == [] and len(opened) == 2  # inside b's span, not in it


def test_a_corrupt_manifest_is_an_error_not_a_gap(gate: Gate, tmp_path: Path) -> None:
    share_file(gate, tmp_path, [BASE + 10, BASE + 20], "a.txt")
    [name] = gate.manifests.listed()
    path = Path(gate.manifests.where(name))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # in the frame
    path.write_bytes(bytes(data))
    with pytest.raises(manifests.BadManifest, match=re.escape(path.name)):
        trace(gate, BASE + 20)


def test_a_swept_manifest_no_longer_indexed_is_passed_by(gate: Gate, tmp_path: Path) -> None:
    share_file(gate, tmp_path, [BASE + 10], "a.txt")
    [name] = gate.manifests.listed()
    names = gate.manifests.listed
    Path(gate.manifests.where(name)).unlink()  # the sweep removed it while trace listed it
    gate.manifests.unindex([name])
    assert gate.client.hget(keys.MANIFEST_SPANS, name) is None
    gate.manifests.listed = lambda *a: [name]  # type: ignore[method-assign]
    assert trace(gate, BASE + 10) == []
    gate.manifests.listed = names  # type: ignore[method-assign]


def test_manifests_in_the_object_store_are_traced_by_header_and_block(
        tmp_path: Path, redis_client: redis.Redis, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gatekeeper import config as config_mod

    monkeypatch.setattr(manifests, "BLOCK_IDS", 100)
    url = request.getfixturevalue("store_url")
    build_gate(tmp_path, redis_client, terms="Jane Doe")
    (tmp_path / "config.toml").write_text(f'[datasets]\ndir = "{url}"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    a = share_file(g, tmp_path, [BASE + 3 * i for i in range(450)], "a.txt")
    assert not (tmp_path / "datasets" / "manifests").exists()
    for ident in (BASE, BASE + 297, BASE + 300, BASE + 3 * 449):
        assert deliveries(g, ident) == [a] == deliveries(g, ident, use_spans=False)
    assert deliveries(g, BASE + 298) == []


@pytest.mark.parametrize("bad", ["12a", "-5", "", "9" * 20, str(2**63), "１２"])
def test_what_is_not_an_id_is_bad_input(gate: Gate, bad: str) -> None:
    with pytest.raises(BadInput, match="ID is up to 19 decimal digits"):
        trace(gate, bad)


# --- the CLI ------------------------------------------------------------------------------------


def run_cli(gate: Gate, *args: str) -> Result:
    """`gatekeeper trace …` through a throwaway group wired like cli.main, over `gate`."""

    @click.group(cls=Group)
    @click.pass_context
    def root(ctx: click.Context) -> None:
        obj = Context(None)
        obj._gate = gate
        ctx.obj = obj

    root.add_command(trace_cmd)
    return CliRunner().invoke(root, list(args), catch_exceptions=False)


def test_cli_trace_prints_a_table_for_people_and_json_for_scripts(
        gate: Gate, tmp_path: Path) -> None:
    a = share_file(gate, tmp_path, [BASE, BASE + 7], "acme-ids.txt")
    r = run_cli(gate, "trace", str(BASE + 7), "--as", "cora")
    assert r.exit_code == 0, r.output
    head, columns, row = r.output.splitlines()
    assert head == f"1 delivery held post {BASE + 7}:"
    assert columns.split() == ["delivered", "(UTC)", "to", "entity", "by", "channel", "kind",
                               "delivery", "file", "dataset", "as"]
    assert row.split()[1:] == ["acme", "acme", "dan", "cli", "share.posts", a,
                               "acme-ids.txt", "-", "post"]
    r = run_cli(gate, "trace", str(BASE + 7), "--as", "cora", "--json")
    got = json.loads(r.output)
    assert got["id"] == str(BASE + 7) and got["kind"] == "posts"
    assert [d["delivery"] for d in got["deliveries"]] == [a]
    assert got["deliveries"][0]["file"] == "acme-ids.txt"
    r = run_cli(gate, "trace", str(BASE + 3), "--as", "cora")
    assert (r.exit_code, r.output.strip()) == (
        0, f"no delivery in the manifests held post {BASE + 3}")
    r = run_cli(gate, "trace", str(BASE + 3), "--user", "--as", "cora", "--json")
    assert json.loads(r.output) == {"id": str(BASE + 3), "kind": "users", "deliveries": []}


def test_cli_trace_is_for_compliance_and_refuses_bad_ids(gate: Gate, tmp_path: Path) -> None:
    share_file(gate, tmp_path, [BASE], "a.txt")
    for who in ("ana", "dan"):
        r = run_cli(gate, "trace", str(BASE), "--as", who)
        assert r.exit_code == 4 and "trace needs role compliance or admin" in r.output
        assert str(BASE) not in r.output.replace(f"trace {BASE}", "")
    r = run_cli(gate, "trace", "12x", "--as", "cora", "--json")
    assert r.exit_code == 2 and json.loads(r.output.split("\ngatekeeper:")[0])["error"]
    assert run_cli(gate, "trace", str(BASE), "--as", "nobody").exit_code != 0


def test_the_trace_page_shows_compliance_every_delivery_that_held_an_id(
        gate: Gate, tmp_path: Path, client: FlaskClient) -> None:
    a = share_file(gate, tmp_path, [BASE, BASE + 7], "acme-ids.txt")
    b = api_share(gate, client, [BASE + 7])
    assert sign_in(client, "cora", PASSWORD) == 302
    page = client.get("/trace", query_string={"id": str(BASE + 7)}).get_data(as_text=True)
    assert f"Post {BASE + 7}: 2 deliveries" in page
    rows = re.findall(r"<tr><td>(.*?)</td></tr>", page[page.index('id="trace-hits"'):])
    assert [re.findall(r"<code>(\w+)</code>", r) for r in rows] == [[a], [b]]
    assert "acme-ids.txt" in rows[0] and "<td>cli</td>" in rows[0] and "<td>api</td>" in rows[1]
    one = client.get("/trace", query_string={"id": str(BASE)}).get_data(as_text=True)
    assert f"Post {BASE}: 1 delivery" in one and b not in one
    none = client.get("/trace", query_string={"id": str(BASE + 1), "kind": "users"})
    assert none.status_code == 200 and 'id="trace-none"' in none.get_data(as_text=True)
    bad = client.get("/trace", query_string={"id": "12x"})
    assert bad.status_code == 400 and "not &#39;12x&#39;" in bad.get_data(as_text=True)
    assert client.get("/trace").status_code == 200  # the form alone


def test_the_trace_page_is_for_compliance_only(gate: Gate, client: FlaskClient) -> None:
    assert client.get("/trace", query_string={"id": "1"}).status_code == 302  # sign in first
    assert sign_in(client, "ana", PASSWORD) == 302
    assert client.get("/trace", query_string={"id": "1"}).status_code == 403
