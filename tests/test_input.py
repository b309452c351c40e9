"""Input that cannot hurt the service: capped lines, canonical IDs, whole-string names, and a
clear 4xx (or exit 2/5) for every hostile field — never a traceback, and nothing counted.

The library and the web run on fakeredis; the CLI on the real embedded store.
"""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from live import PASSWORD, build_gate, sign_in

from gatekeeper import config as config_mod
from gatekeeper.channels.web import api
from gatekeeper.channels.web.app import create_app
from gatekeeper.domain import formats, light, shares
from gatekeeper.domain.datasets import Datasets
from gatekeeper.domain.deletions import Deleted, Deletions
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules.errors import BadInput

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
MB = 1 << 20
NOTHING = Deleted(0, frozenset(), frozenset())
BOM = b"\xef\xbb\xbf"

Run = Callable[..., Result]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    """A Gate on fakeredis: kpop registered, acme (with R8 terms) with dan (data), cora
    (compliance) and ana (analyst)."""
    return build_gate(tmp_path, fakeredis.FakeRedis(), kpop=True, terms="Jane Doe",
                      config="[limits]\npost_ids_per_entity = 1000\n[server]\nmax_upload_mb = 128")


@pytest.fixture
def app(gate: Gate) -> Flask:
    # CSRF is off here: these tests are about what the forms carry, not where they come from.
    return create_app(gate, {"TESTING": True, "SECRET_KEY": "test", "WTF_CSRF_ENABLED": False})


def token(gate: Gate, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {gate.users.create_token(user, actor='t', channel='cli')}"}


def used(gate: Gate, entity: str = "acme") -> int:
    from gatekeeper.domain import quota

    return quota.entity_quota(gate, entity)["used"]


def cli_gate(store_dir: Path) -> Gate:
    return Gate(config_mod.load(store_dir / "config.toml"))


def post(pid: Any, author: Any = "42", **extra: Any) -> dict[str, Any]:
    return {"id": pid, "text": "hello", "author_id": author, **extra}


def jsonl(path: Path, *objs: Any) -> Path:
    path.write_bytes(b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n"
                              for o in objs))
    return path


# --- 1. one capped line reader ------------------------------------------------------------------


def gzip_with_long_line(path: Path, mb: int = 800) -> Path:
    """A .jsonl.gz whose line 1 is one post of `mb` MB. Written in 8 MB pieces, each ended by
    a full flush, so each compresses to the same ~8 KB: the file is under 1 MB, and neither
    the line nor the file is ever held whole."""
    piece = b"a" * (8 * MB)
    head, tail = b'{"id": "1", "author_id": "2", "text": "', b'"}\n'
    z = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the gzip frame is ours
    block = z.compress(piece) + z.flush(zlib.Z_FULL_FLUSH)
    crc, size = zlib.crc32(head), len(head) + mb // 8 * len(piece) + len(tail)
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03")
        z2 = zlib.compressobj(9, zlib.DEFLATED, -15)
        out.write(z2.compress(head) + z2.flush(zlib.Z_FULL_FLUSH))
        for _ in range(mb // 8):
            out.write(block)  # no back-references across a full flush: valid every time
            crc = zlib.crc32(piece, crc)
        out.write(z2.compress(tail) + z2.flush())
        out.write(struct.pack("<II", zlib.crc32(tail, crc), size & 0xFFFFFFFF))
    return path


@pytest.fixture(scope="module")
def huge_line_gz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gzip_with_long_line(tmp_path_factory.mktemp("huge") / "huge.jsonl.gz")


def test_the_800_mb_line_file_is_a_valid_gzip_under_one_mb(huge_line_gz: Path) -> None:
    assert huge_line_gz.stat().st_size < MB
    d, total = zlib.decompressobj(wbits=31), 0
    with open(huge_line_gz, "rb") as fh:
        while chunk := fh.read(MB):
            while chunk:
                total += len(d.decompress(chunk, 64 * MB))
                chunk = d.unconsumed_tail
    assert d.eof and total == 800 * MB + len(b'{"id": "1", "author_id": "2", "text": ""}\n')


# The command's own peak resident memory. Not ru_maxrss: Linux keeps it across exec, so the
# child would report the test runner's size; VmHWM belongs to the new image alone.
MEASURE = """
import json, re, sys
from gatekeeper.channels.cli.main import main
code = main(sys.argv[1:], prog_name="gatekeeper", standalone_mode=False)
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1])
print(json.dumps({"code": code, "peak_kb": peak}))
"""


def test_dataset_add_refuses_an_800_mb_line_naming_file_line_and_limit_in_bounded_memory(
        store_dir: Path, huge_line_gz: Path) -> None:
    # A process of its own, so its peak memory is this command's alone.
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, "--config", str(store_dir / "config.toml"), "dataset",
         "add", "huge", str(huge_line_gz)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ":".join(
            p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH"))
            if p)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 2
    assert f"{huge_line_gz}, line 1" in proc.stderr
    assert "16 MB" in proc.stderr and "datasets.max_line_mb" in proc.stderr
    assert "Traceback" not in proc.stderr
    # 1.7 GB before the cap; now the 16 MB line buffer and the interpreter.
    assert result["peak_kb"] < 200 * 1024, result
    assert not list((store_dir / "datasets").iterdir())
    assert cli_gate(store_dir).datasets.list() == []


@pytest.mark.parametrize("reader", [formats.iter_posts, formats.iter_users, light.light_posts],
                         ids=["iter_posts", "iter_users", "light_posts"])
def test_every_dataset_reader_refuses_the_800_mb_line(reader: Callable[[Path], Any],
                                                      huge_line_gz: Path) -> None:
    with pytest.raises(BadInput) as exc:
        list(reader(huge_line_gz))
    assert (exc.value.details["file"], exc.value.details["line"]) == (str(huge_line_gz), 1)
    assert exc.value.details["limit_bytes"] == 16 * MB
    assert exc.value.status == 413 and exc.value.exit_code == 2


def long_line_inputs(tmp_path: Path, cap: int) -> dict[str, Callable[[], Any]]:
    """Every reader of the service, each given the same file whose line 3 is cap + 1 bytes."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"1\n2\n" + b"7" * (cap + 1) + b"\n4\n")
    data = jsonl(tmp_path / "d.jsonl", post("1"), post("2"),
                 b'{"id": "3", "text": "' + b"x" * cap + b'"}')
    client = fakeredis.FakeRedis()
    return {
        "iter_posts": lambda: list(formats.iter_posts(data, max_line_bytes=cap)),
        "iter_users": lambda: list(formats.iter_users(data, max_line_bytes=cap)),
        "light_posts": lambda: list(light.light_posts(data, max_line_bytes=cap)),
        "Datasets.add": lambda: Datasets(client, Ledger(client), tmp_path / "ds",
                                         max_line_bytes=cap).add("d", data, actor="t",
                                                                 channel="cli"),
        "Deletions.add_file": lambda: Deletions(client, max_line_bytes=cap).add_file(
            ids, kind="posts", actor="t", channel="cli"),
        "select_id_file": lambda: shares.select_id_file(ids, "posts", NOTHING,
                                                        max_line_bytes=cap),
        "api.iter_lines": lambda: upload_lines(ids, cap),
    }


def upload_lines(path: Path, cap: int) -> list[bytes]:
    with open(path, "rb") as fh:
        return list(api.iter_lines(fh, str(path), cap))


@pytest.mark.parametrize("reader", ["iter_posts", "iter_users", "light_posts", "Datasets.add",
                                    "Deletions.add_file", "select_id_file", "api.iter_lines"])
def test_every_reader_refuses_a_line_over_the_cap_naming_file_and_line(
        reader: str, tmp_path: Path) -> None:
    with pytest.raises(BadInput) as exc:
        long_line_inputs(tmp_path, 4096)[reader]()
    assert exc.value.details["line"] == 3
    assert exc.value.details["limit_bytes"] == 4096
    assert "line 3" in exc.value.message and "4 KB" in exc.value.message


def test_a_line_of_exactly_the_cap_is_read(tmp_path: Path) -> None:
    from gatekeeper.domain import lines

    data = b"1\n" + b"2" * 100 + b"\n3"
    for size in (1, 7, 50, 100, 101, 1000):
        chunks = (data[i:i + size] for i in range(0, len(data), size))
        assert list(lines.split(chunks, "f", 100)) == [b"1", b"2" * 100, b"3"]


@given(st.lists(st.sampled_from([b"a", b"bb", b"\n", b"\r\n", BOM, b" ", b"\xef"]),
                max_size=40),
       st.lists(st.integers(1, 9), min_size=1, max_size=10), st.integers(1, 12))
def test_the_line_reader_splits_like_bytes_split_whatever_the_chunks(
        parts: list[bytes], cuts: list[int], cap: int) -> None:
    from gatekeeper.domain import lines

    data = b"".join(parts)
    chunks, i, k = [], 0, 0
    while i < len(data):
        chunks.append(data[i:i + cuts[k % len(cuts)]])
        i, k = i + cuts[k % len(cuts)], k + 1
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    too_long = [n for n, line in enumerate(expected, 1) if len(line) > cap]  # BOM counted
    if expected:
        expected[0] = expected[0].removeprefix(BOM)
    if too_long:
        with pytest.raises(BadInput) as exc:
            list(lines.split(iter(chunks), "f", cap))
        assert exc.value.details["line"] == too_long[0]
    else:
        assert list(lines.split(iter(chunks), "f", cap)) == expected


class Body(io.RawIOBase):
    """A request body made as it is read: `size` bytes of "1", then a newline and one ID.
    Counts how much the service read of it."""

    def __init__(self, size: int) -> None:
        self.content = (size, b"\n12345\n")
        self.pos = self.read_bytes = 0

    @property
    def length(self) -> int:
        return self.content[0] + len(self.content[1])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.length + offset if whence == 2 else \
            self.pos + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf: Any) -> int:
        size, tail = self.content
        n = min(len(buf), self.length - self.pos)
        ones = max(0, min(n, size - self.pos))
        buf[:ones] = b"1" * ones
        rest = n - ones
        if rest:
            start = self.pos + ones - size
            buf[ones:n] = tail[start:start + rest]
        self.pos += n
        self.read_bytes += n
        return n


@pytest.mark.parametrize("path", ["/api/v1/shares?entity=acme", "/api/v1/deletions?kind=posts"])
def test_a_99_mb_line_in_an_upload_is_refused_413_after_reading_little_past_the_cap(
        gate: Gate, client: FlaskClient, path: str) -> None:
    body = Body(99 * MB)
    user = "dan" if "shares" in path else "cora"
    resp = client.post(path, input_stream=body, content_type="text/plain",
                    headers=token(gate, user))
    assert resp.status_code == 413, resp.get_data(as_text=True)
    err = resp.get_json()
    assert (err["error"], err["file"], err["line"], err["limit_bytes"]) == (
        "too_large", "upload", 1, 16 * MB)
    assert "upload, line 1" in err["message"] and "16 MB" in err["message"]
    # The line is refused once it passes the cap: the other 80 MB are never read, so the
    # line buffer is never rebuilt (before: 99 copies of a growing buffer, 8-17 s of CPU).
    assert body.read_bytes <= 16 * MB + 2 * api.READ
    assert used(gate) == 0
    assert gate.deletions.current().posts == frozenset()


def test_max_line_mb_from_the_config_reaches_every_reader(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[datasets]\ndir = "ds"\nmax_line_mb = 2\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=fakeredis.FakeRedis())
    long_post = post("5", text="x" * (MB + MB // 2))  # 1.5 MB: under 2, over a 1 MB cap
    g.datasets.add("d", jsonl(tmp_path / "d.jsonl", long_post, post("6")), actor="t",
                   channel="cli")
    assert list(g.datasets.post_ids("d")) == ["5", "6"]  # read back under the same cap
    assert list(g.datasets.author_ids("d")) == ["42"]
    with pytest.raises(BadInput, match=r"line 1.*2 MB"):
        g.datasets.add("e", jsonl(tmp_path / "e.jsonl", post("5", text="x" * 3 * MB)),
                       actor="t", channel="cli")
    bad = tmp_path / "del.txt"
    bad.write_bytes(b"1\n" + b"2" * (3 * MB) + b"\n")
    with pytest.raises(BadInput, match=r"line 2.*2 MB"):
        g.deletions.add_file(bad, kind="posts", actor="t", channel="cli")


# --- 2. canonical IDs in datasets ---------------------------------------------------------------

V1 = {"id_str": "1050118621198921728", "full_text": "hi", "lang": "en",
      "user": {"id_str": "6253282", "screen_name": "TwitterAPI"}}
BAD_IDS = ["0", "007", "-5", "12a", "", " 42", "4 2", "١٢", str(2**63), "1" * 20]


def page(posts: list[Any], users: list[Any]) -> dict[str, Any]:
    return {"data": posts, "includes": {"users": users}}


def bad_lines(value: Any) -> dict[str, tuple[Any, str]]:
    """Line 2 of a dataset, per place an ID lives, with `value` there: (line, field named)."""
    user = {"id": "42", "username": "alice"}
    return {
        "post id": (post(value), '"id"'),
        "author_id": (post("1", value), '"author_id"'),
        "embedded author.id": ({"id": "1", "text": "x", "author": {"id": value}},
                               '"author.id"'),
        "v1.1 id_str": ({**V1, "id_str": value}, '"id_str"'),
        "v1.1 user.id_str": ({**V1, "user": {"id_str": value, "screen_name": "u"}},
                             '"user.id_str"'),
        "page data id": (page([post(value)], [user]), 'data[0]: "id"'),
        "page author_id": (page([post("1", value)], [user]), 'data[0]: "author_id"'),
        "includes.users id": (page([post("1")], [user, {"id": value, "username": "bo"}]),
                              'includes.users[1]: "id"'),
        "user lookup id": ({"data": [{"id": value, "username": "u"}]}, 'data[0]: "id"'),
    }


@pytest.mark.parametrize("value", BAD_IDS)
@pytest.mark.parametrize("where", list(bad_lines("1")))
def test_dataset_add_refuses_a_non_canonical_id_naming_line_field_and_value(
        tmp_path: Path, where: str, value: str) -> None:
    obj, field = bad_lines(value)[where]
    source = jsonl(tmp_path / "d.jsonl", post("1"), obj)
    client = fakeredis.FakeRedis()
    datasets = Datasets(client, Ledger(client), tmp_path / "ds")
    with pytest.raises(BadInput) as exc:
        datasets.add("d", source, actor="t", channel="cli")
    assert f"{source}, line 2" in exc.value.message
    assert field in exc.value.message and repr(value) in exc.value.message
    assert exc.value.details["line"] == 2 and exc.value.details["value"] == value
    assert datasets.list() == [] and not list((tmp_path / "ds").iterdir())


@pytest.mark.parametrize("value", [0, -5, 2**63, 1.5, True, None, [], {}])
def test_ids_that_are_json_values_but_not_ids_are_refused(tmp_path: Path, value: Any) -> None:
    source = jsonl(tmp_path / "d.jsonl", post(value))
    with pytest.raises(BadInput, match='line 1: "id" must be'):
        list(formats.iter_posts(source))


def test_an_embedded_author_must_be_the_author_id(tmp_path: Path) -> None:
    source = jsonl(tmp_path / "d.jsonl", {**post("1", "42"), "author": {"id": "43"}})
    with pytest.raises(BadInput, match=r"line 1.*author.id.*'43'.*author_id.*'42'"):
        list(formats.iter_posts(source))


def test_numbers_that_are_ids_are_taken_as_their_decimal_strings(tmp_path: Path) -> None:
    source = jsonl(tmp_path / "d.jsonl", post(2**63 - 1, 42), {**V1, "user": {
        "id": 6253282, "screen_name": "u"}})
    assert [(p["id"], p["author_id"]) for p in formats.iter_posts(source)] == [
        (str(2**63 - 1), "42"), (V1["id_str"], "6253282")]


def test_a_dataset_with_a_non_numeric_author_never_reaches_deletions_or_the_report(
        runner: Run, store_dir: Path) -> None:
    source = jsonl(store_dir / "d.jsonl", {"id": "1", "text": "x", "author": {"id": "bob"}})
    r = runner("dataset", "add", "d", str(source))
    assert r.exit_code == 2 and "'bob'" in r.output
    ids = store_dir / "tweets_compliance.txt"
    ids.write_text("1\n")
    r = runner("deletions", "add", str(ids))  # before: ingested, then a traceback
    assert r.exit_code == 0, r.output
    assert cli_gate(store_dir).datasets.list() == []


def test_the_samples_still_pass_the_id_checks(tmp_path: Path) -> None:
    for name in ("kpop.jsonl", "two_tweets.jsonl", "geo_tweets.jsonl", "users.jsonl"):
        list(formats.iter_users(SAMPLES / name))
        list(formats.iter_posts(SAMPLES / name))


# --- 3. dataset remove --------------------------------------------------------------------------


def test_dataset_remove_unregisters_deletes_the_file_and_audits_r11(
        runner: Run, store_dir: Path) -> None:
    assert runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl")).exit_code == 0
    assert sorted(p.name for p in (store_dir / "datasets").iterdir()) == [
        "kpop.ids", "kpop.index.parquet", "kpop.jsonl"]
    r = runner("dataset", "remove", "kpop", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["name"] == "kpop"
    assert not list((store_dir / "datasets").iterdir())
    g = cli_gate(store_dir)
    assert g.datasets.list() == []
    last = [f for _i, f in g.client.xrange(keys.SYS_AUDIT)][-1]
    assert (last[b"kind"], last[b"rule"], last[b"dataset"]) == (b"dataset.remove", b"R11",
                                                                 b"kpop")
    assert runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl")).exit_code == 0


def test_dataset_remove_of_an_unknown_name_is_exit_2(runner: Run) -> None:
    r = runner("dataset", "remove", "nope")
    assert r.exit_code == 2 and "no dataset named 'nope'" in r.output


def test_a_remove_that_dies_before_the_unlink_leaves_nothing_served(
        gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    path = gate.datasets.path("kpop")

    def crash(self: Path, missing_ok: bool = False) -> None:
        raise KeyboardInterrupt  # the process dies between unregistering and unlinking

    monkeypatch.setattr(Path, "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        gate.datasets.remove("kpop", actor="t", channel="cli")
    monkeypatch.undo()
    assert path.exists()  # the orphan stays on disk, but nothing serves it
    assert gate.datasets.list() == []
    with pytest.raises(Exception, match="no dataset named 'kpop'"):
        gate.datasets.path("kpop")
    info = gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    assert gate.datasets.path("kpop").name == info.file  # a new add replaces the orphan


# --- 4. names are whole strings -----------------------------------------------------------------

BAD_NAMES = ["acme\n", "acme\r\n", "\nacme", "ac\x00me", "acme\t", "acme\x7f", "acme\u2028"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_with_control_characters_are_refused_everywhere(gate: Gate, name: str,
                                                              tmp_path: Path) -> None:
    assert not keys.valid_name(name)
    with pytest.raises(BadInput, match="entity name"):
        gate.entities.add(name, kind="commercial", research=False, parent=None, actor="t",
                          channel="cli")
    with pytest.raises(BadInput, match="user name"):
        gate.users.add(name, entity="acme", role="data", password=PASSWORD, actor="t",
                       channel="cli")
    with pytest.raises(BadInput, match="dataset name"):
        gate.datasets.add(name, SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    assert gate.entities.names() == ["acme"]


def test_cli_refuses_an_entity_named_like_another_with_a_trailing_newline(
        runner: Run, store_dir: Path) -> None:
    assert runner("entity", "add", "acme", "--kind", "commercial").exit_code == 0
    r = runner("entity", "add", "acme\n", "--kind", "commercial")  # its own 1.5M before (R2/R10)
    assert r.exit_code == 2 and "entity name 'acme\\n' is not valid" in r.output
    r = runner("user", "add", "dana\n", "--entity", "acme", "--role", "data", "--password-stdin",
            input=PASSWORD + "\n")
    assert r.exit_code == 2
    r = runner("dataset", "add", "kpop\n", str(SAMPLES / "kpop.jsonl"))
    assert r.exit_code == 2
    g = cli_gate(store_dir)
    assert g.entities.names() == ["acme"] and list(g.client.hkeys(keys.USERS)) == []


def test_api_shares_to_a_name_with_a_newline_reach_no_entity_and_count_nothing(
        gate: Gate, client: FlaskClient) -> None:
    headers = token(gate, "dan")
    resp = client.post("/api/v1/shares", json={"entity": "acme\n", "dataset": "kpop"},
                    headers=headers)
    assert resp.status_code == 404
    resp = client.post("/api/v1/shares?entity=acme%0A", data="1\n", content_type="text/plain",
                    headers=headers)
    assert resp.status_code == 404
    resp = client.post("/api/v1/shares", json={"entity": "acme", "dataset": "kpop\n"},
                    headers=headers)
    assert resp.status_code == 404
    assert client.get("/api/v1/quota/entities/acme%0A", headers=headers).status_code == 404
    assert used(gate) == 0


def test_web_forms_take_no_name_with_a_newline(gate: Gate, client: FlaskClient) -> None:
    sign_in(client, "cora", PASSWORD)
    assert client.get("/entities/acme%0A").status_code == 404
    resp = client.post("/entities/acme/parent", data={"parent": "acme\x00", "reason": "same"})
    assert resp.status_code in (400, 404)
    assert gate.entities.get("acme").parent is None


# --- 5. hostile fields --------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", [5, ["a"], {"a": 1}, True, "x" * 1001],
                         ids=["number", "list", "object", "true", "1001-chars"])
def test_a_purpose_that_is_not_text_of_at_most_1000_characters_is_400_in_json(
        gate: Gate, client: FlaskClient, purpose: Any) -> None:
    resp = client.post("/api/v1/shares", json={"entity": "acme", "dataset": "kpop",
                                            "purpose": purpose}, headers=token(gate, "dan"))
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["field"] == "purpose"
    assert "1,000 characters" in resp.get_json()["message"]
    assert used(gate) == 0


def test_a_purpose_of_1001_characters_is_400_in_the_query_and_1000_is_taken(
        gate: Gate, client: FlaskClient) -> None:
    headers = token(gate, "dan")
    resp = client.post(f"/api/v1/shares?entity=acme&purpose={'x' * 1001}", data="1\n",
                    content_type="text/plain", headers=headers)
    assert resp.status_code == 400 and resp.get_json()["field"] == "purpose"
    assert used(gate) == 0
    resp = client.post(f"/api/v1/shares?entity=acme&purpose={'x' * 1000}", data="1\n",
                    content_type="text/plain", headers=headers)
    assert resp.status_code == 200 and used(gate) == 1
    resp.close()  # releases the spooled IDs (call_on_close)


def test_cli_refuses_a_purpose_over_1000_characters(runner: Run, store_dir: Path) -> None:
    runner("entity", "add", "acme", "--kind", "commercial")
    runner("entity", "accept-terms", "acme", "--by", "Jane Doe")
    runner("user", "add", "dana", "--entity", "acme", "--role", "data", "--password-stdin",
        input=PASSWORD + "\n")
    ids = store_dir / "ids.txt"
    ids.write_text("1\n2\n")
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(ids), "--out", "o.txt",
            "--purpose", "x" * 1001)
    assert r.exit_code == 2 and "1,000 characters" in r.output
    assert not (store_dir / "o.txt").exists()


@pytest.mark.parametrize("body", ["[" * 100_000, '{"entity": ' + "[" * 100_000,
                                  '{"entity": "acme", "dataset": "kpop", "filters": '
                                  + '{"a": ' * 50_000], ids=["arrays", "in-entity", "in-filters"])
def test_deeply_nested_json_in_an_api_body_is_400(gate: Gate, client: FlaskClient,
                                                  body: str) -> None:
    resp = client.post("/api/v1/shares", data=body, content_type="application/json",
                    headers=token(gate, "dan"))
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "bad_request"


def test_a_deeply_nested_dataset_line_is_refused_naming_the_line(tmp_path: Path) -> None:
    source = jsonl(tmp_path / "d.jsonl", post("1"), b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BadInput, match="line 2: not valid JSON"):
        list(formats.iter_posts(source))


@pytest.mark.parametrize("filters", [[], 0, False, "", ["lang"]])
def test_filters_that_are_not_an_object_are_400(gate: Gate, client: FlaskClient,
                                                filters: Any) -> None:
    resp = client.post("/api/v1/shares", json={"entity": "acme", "dataset": "kpop",
                                            "filters": filters}, headers=token(gate, "dan"))
    assert resp.status_code == 400 and '"filters"' in resp.get_json()["message"]
    assert used(gate) == 0


EDGE_TIMES = ["9999-12-31T23:59:59.9999", "0001-01-01T00:00:00+01:00",
              "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("when", EDGE_TIMES)
def test_a_filter_time_at_the_end_of_the_calendar_is_400(gate: Gate, client: FlaskClient,
                                                         when: str) -> None:
    resp = client.post("/api/v1/shares", json={"entity": "acme", "dataset": "kpop",
                                            "filters": {"since": when}},
                    headers=token(gate, "dan"))
    assert resp.status_code == 400 and resp.get_json()["field"] == "since"
    sign_in(client, "ana", PASSWORD)
    assert client.get("/export", query_string={"dataset": "kpop", "until": when}
                   ).status_code < 500


@pytest.mark.parametrize("when", EDGE_TIMES)
def test_a_created_at_at_the_end_of_the_calendar_is_refused_naming_the_line(
        tmp_path: Path, when: str) -> None:
    source = jsonl(tmp_path / "d.jsonl", post("1"), post("2", created_at=when))
    with pytest.raises(BadInput, match=r"line 2: \"created_at\""):
        list(formats.iter_posts(source))


@pytest.mark.parametrize("body", [{"entity": 5, "dataset": "kpop"},
                                  {"entity": None, "dataset": "kpop"},
                                  {"entity": "acme", "dataset": ["kpop"]},
                                  {"entity": "acme", "dataset": "kpop", "kind": 1},
                                  {"entity": "acme", "dataset": "kpop", "kind": None},
                                  {"entity": "acme", "dataset": "kpop", "allow_partial": []},
                                  {"entity": "acme", "dataset": "kpop", "allow_partial": 2},
                                  {"entity": "acme", "dataset": "kpop",
                                   "filters": {"lang": 5}},
                                  {"entity": "acme", "dataset": "kpop",
                                   "filters": {"since": None, "until": []}},
                                  ["acme"], "acme", 5, None])
def test_wrong_types_in_a_json_share_are_400(gate: Gate, client: FlaskClient, body: Any) -> None:
    resp = client.post("/api/v1/shares", data=json.dumps(body), content_type="application/json",
                    headers=token(gate, "dan"))
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "bad_request"
    assert used(gate) == 0


@pytest.mark.parametrize("month", ["9999-12", "0000-01", "2026-13", "2026-10\n", "1969-12",
                                   "２０２６-10"])
def test_a_report_month_out_of_range_is_400_naming_it(gate: Gate, client: FlaskClient,
                                                      month: str) -> None:
    sign_in(client, "cora", PASSWORD)
    resp = client.get("/report", query_string={"month": month})
    assert resp.status_code == 400
    assert repr(month).replace("'", "&#39;") in resp.get_data(as_text=True)


@pytest.mark.parametrize("month", ["9999-12", "0000-01", "2026-13"])
def test_cli_report_refuses_a_month_out_of_range_with_exit_2(runner: Run, month: str) -> None:
    r = runner("report", "--month", month, "--out", "r.pdf")
    assert r.exit_code == 2 and repr(month) in r.output
    assert "Traceback" not in r.output


def test_uploads_with_a_utf8_bom_are_read_without_it(gate: Gate, client: FlaskClient,
                                                     tmp_path: Path) -> None:
    resp = client.post("/api/v1/shares?entity=acme", data=BOM + b"123\r\n456\n",
                    content_type="text/plain", headers=token(gate, "dan"))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_data().split() == [b"123", b"456"]
    resp.close()  # releases the spooled IDs (call_on_close)
    resp = client.post("/api/v1/deletions?kind=posts", data=BOM + b"123\n456\n",
                    content_type="text/plain", headers=token(gate, "cora"))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["listed"] == 2
    ids = tmp_path / "ids.txt"
    ids.write_bytes(BOM + b"7\n8\n")
    with shares.select_id_file(ids, "posts", NOTHING) as sel:
        assert sel.count == 2
    assert gate.deletions.add_file(ids, kind="users", actor="t", channel="cli").listed == 2


class FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def full_disk_for(monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    """Make os.fdopen hand out full-disk files for paths containing `marker`."""
    real = os.fdopen

    def fdopen(fd: int, *args: Any, **kw: Any) -> Any:
        fh = real(fd, *args, **kw)
        return FullDisk(fh) if marker in os.readlink(f"/proc/self/fd/{fd}") else fh

    monkeypatch.setattr(os, "fdopen", fdopen)
    sendfile = os.sendfile

    def full_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        if marker in os.readlink(f"/proc/self/fd/{out_fd}"):  # the kernel's copy: full too
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", full_sendfile)


def test_a_full_disk_during_dataset_add_is_a_clear_exit_5_and_leaves_no_temp_file(
        runner: Run, store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full_disk_for(monkeypatch, "/datasets/")  # the unnamed copy (O_TMPFILE) made there
    r = runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl"))
    assert r.exit_code == 5, r.output
    assert "No space left on device" in r.output and "nothing was registered" in r.output
    assert not list((store_dir / "datasets").iterdir())
    monkeypatch.undo()
    assert cli_gate(store_dir).datasets.list() == []


def test_a_full_disk_while_writing_the_id_file_is_clear_and_counts_nothing(
        runner: Run, store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner("entity", "add", "acme", "--kind", "commercial")
    runner("entity", "accept-terms", "acme", "--by", "Jane Doe")
    runner("user", "add", "dana", "--entity", "acme", "--role", "data", "--password-stdin",
        input=PASSWORD + "\n")
    ids = store_dir / "ids.txt"
    ids.write_text("1\n2\n")
    full_disk_for(monkeypatch, "/out/")  # the anonymous file (O_TMPFILE) made there
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(ids), "--out",
            "out/o.txt")
    assert r.exit_code in (2, 5) and "No space left on device" in r.output
    assert not list((store_dir / "out").iterdir())
    monkeypatch.undo()
    assert used(cli_gate(store_dir)) == 0


def test_a_full_disk_under_an_api_upload_is_507(gate: Gate, client: FlaskClient,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from gatekeeper.domain import spool

    headers = token(gate, "dan")
    anonymous = spool.anonymous
    monkeypatch.setattr(spool, "anonymous", lambda *a: FullDisk(anonymous(*a)))
    resp = client.post("/api/v1/shares?entity=acme", data="1\n2\n", content_type="text/plain",
                    headers=headers)
    assert resp.status_code == 507
    assert resp.get_json()["error"] == "insufficient_storage"
    assert used(gate) == 0


# --- other 500s found by hunting ----------------------------------------------------------------


@pytest.mark.parametrize("form", [{"limit": "²", "until": "2030-01-01"},
                                  {"limit": "1" * 5000, "until": "2030-01-01"},
                                  {"limit": str(2**63), "until": "2030-01-01"},
                                  {"limit": "10", "until": "9999-12-31"},
                                  {"limit": "10", "until": "２０３０-01-01"}])
def test_a_permission_form_with_an_impossible_limit_or_date_is_400(
        gate: Gate, client: FlaskClient, form: dict[str, str]) -> None:
    sign_in(client, "cora", PASSWORD)
    resp = client.post("/entities/acme/permission", data={**form, "reference": "X-1"})
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert 'id="form-error"' in resp.get_data(as_text=True)  # the form, with the R4 refusal
    assert gate.entities.get("acme").permission is None


@pytest.mark.parametrize("page", ["²", "9" * 5000, "-1", "x"],
                         ids=["superscript", "5000-digits", "negative", "letter"])
def test_a_dashboard_page_number_that_is_no_number_shows_the_first_page(
        client: FlaskClient, page: str) -> None:
    sign_in(client, "cora", PASSWORD)
    assert client.get("/dashboard", query_string={"page": page, "upage": page}).status_code == 200


@pytest.mark.parametrize("until", ["9999-12-31", "0001-01-01"])
def test_cli_permit_until_the_end_of_the_calendar_is_exit_2(runner: Run, until: str) -> None:
    runner("entity", "add", "acme", "--kind", "commercial")
    r = runner("entity", "permit", "acme", "--limit", "10", "--until", until, "--reference", "X")
    assert r.exit_code == 2, r.output
