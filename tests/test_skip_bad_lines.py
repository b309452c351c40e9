"""Issue 12 item 5: `dataset add --skip-bad-lines` keeps every complete post of a collection that
was cut off (a plain file cut mid-line, a gzip stream cut mid-member, a bad line in the middle),
lists each line it left out, records the count with the dataset, and the lines left out never
reach an export, a share or R9. Without the flag the file is refused as before."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import Result

from gatekeeper import config as config_mod
from gatekeeper.domain import salvage
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.formats import iter_posts
from gatekeeper.domain.gate import Gate, ingest_deletions
from gatekeeper.domain.hydrated import Selection
from gatekeeper.domain.salvage import Skipped
from gatekeeper.domain.shares import select_from_dataset
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules.errors import BadInput

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"

Run = Callable[..., Result]


def sample_lines() -> list[bytes]:
    """geo_tweets.jsonl's two pages, then kpop.jsonl's one: real twarc2 output, as bytes."""
    return [line for name in ("geo_tweets.jsonl", "kpop.jsonl")
            for line in (SAMPLES / name).read_bytes().splitlines() if line.strip()]


def ids_of(lines: list[bytes]) -> list[str]:
    """The post IDs of whole twarc2 lines, read with the stdlib."""
    return [p["id"] for line in lines for p in json.loads(line)["data"]]


def cut_mid_line(path: Path) -> tuple[Path, list[bytes]]:
    """The samples with the last page cut off half-way, as an interrupted `twarc2 search`
    leaves it: the file and the lines that are whole."""
    lines = sample_lines()
    last = lines[-1]
    path.write_bytes(b"".join(line + b"\n" for line in lines[:-1]) + last[:len(last) // 2])
    return path, lines[:-1]


def today_error(path: Path) -> str:
    """The message the reader gives for the file's first bad line (what `add` always said)."""
    with pytest.raises(BadInput) as caught:
        list(iter_posts(path))
    return caught.value.message


def stored_lines(store: Path, name: str) -> list[bytes]:
    [path] = (store / "datasets").glob(f"{name}.jsonl*")
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return [line for line in raw.splitlines() if line]


def sys_audit(store: Path) -> list[dict[str, str]]:
    client = EmbeddedServer(store / "var").client(decode_responses=True)
    return [f for _id, f in client.xrange(keys.SYS_AUDIT) if f.get("kind") == "dataset.add"]


@pytest.fixture
def store(store_dir: Path) -> Path:
    (store_dir / "config.toml").write_text(
        '[redis]\ndata_dir = "var"\n[limits]\npost_ids_per_entity = 100\n'
        '[datasets]\ndir = "datasets"\n')
    return store_dir


def test_a_file_cut_mid_line_is_refused_without_the_flag_exactly_as_before(
        runner: Run, store: Path) -> None:
    source, _ = cut_mid_line(store / "cut.jsonl")
    r = runner("dataset", "add", "cut", str(source))
    assert r.exit_code == 2
    assert today_error(source) in r.output and "line 3: not valid JSON" in r.output
    assert runner("dataset", "list").output.strip() == "no datasets"
    assert not (store / "datasets").exists() or not list((store / "datasets").iterdir())


def test_skip_bad_lines_keeps_every_whole_page_of_a_file_cut_mid_line(
        runner: Run, store: Path) -> None:
    source, whole = cut_mid_line(store / "cut.jsonl")
    r = runner("dataset", "add", "cut", str(source), "--skip-bad-lines")
    assert r.exit_code == 0, r.output
    posts = len(ids_of(whole))
    assert f"dataset cut: {posts:,} posts registered\n1 bad line skipped:\n  line 3: " \
           "not valid JSON (" in r.output
    assert stored_lines(store, "cut") == whole
    shown = json.loads(runner("dataset", "show", "cut", "--json").output)
    assert (shown["posts"], shown["skipped_lines"]) == (posts, 1)
    assert shown["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    [stored] = (store / "datasets").glob("cut.jsonl")
    assert shown["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert shown["bytes"] == stored.stat().st_size
    [listed] = json.loads(runner("dataset", "list", "--json").output)
    assert listed["skipped_lines"] == 1
    assert runner("dataset", "list").output.split("\n")[1].split()[-3:] == ["1", "bad", "line"]
    [record] = sys_audit(store)
    assert record["skipped_lines"] == "1"
    assert "1 bad line skipped (--skip-bad-lines)" in record["message"]


def test_the_json_answer_lists_each_skipped_line_with_its_reason(runner: Run, store: Path
                                                                 ) -> None:
    source, whole = cut_mid_line(store / "cut.jsonl")
    r = runner("dataset", "add", "cut", str(source), "--skip-bad-lines", "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    [entry] = body["skipped"]
    assert entry["line"] == 3 and entry["reason"].startswith("not valid JSON (")
    assert body["skipped_lines"] == 1 and body["posts"] == len(ids_of(whole))


def test_a_whole_file_with_the_flag_is_stored_byte_for_byte_and_skips_nothing(
        runner: Run, store: Path) -> None:
    r = runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl"), "--skip-bad-lines",
               "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert (body["skipped_lines"], body["skipped"], body["source_sha256"]) == (0, [], None)
    [stored] = (store / "datasets").glob("kpop.jsonl")
    assert stored.read_bytes() == (SAMPLES / "kpop.jsonl").read_bytes()


def test_a_gzip_stream_cut_mid_member_keeps_what_was_whole_before_the_cut(
        runner: Run, store: Path) -> None:
    lines = sample_lines()
    packed = gzip.compress(b"".join(line + b"\n" for line in lines))
    cut = packed[:len(packed) * 3 // 4]
    source = store / "cut.jsonl.gz"
    source.write_bytes(cut)
    # What a stdlib reader recovers before the break: its complete lines are what is kept.
    recovered = zlib.decompressobj(wbits=31).decompress(cut)
    whole = recovered.split(b"\n")[:-1]
    assert 0 < len(whole) < len(lines)

    r = runner("dataset", "add", "cut", str(source))
    assert r.exit_code == 2 and "the gzip data ends early (truncated file?)" in r.output

    r = runner("dataset", "add", "cut", str(source), "--skip-bad-lines", "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["file"] == "cut.jsonl.gz" and body["posts"] == len(ids_of(whole))
    [entry] = body["skipped"]
    assert entry["line"] == len(whole) + 1
    assert entry["reason"].startswith("not valid JSON (")
    assert entry["reason"].endswith("; the gzip data ends early (truncated file?)")
    assert stored_lines(store, "cut") == whole  # a valid gzip file again
    assert body["source_sha256"] == hashlib.sha256(cut).hexdigest()


def test_a_gzip_stream_cut_between_members_says_what_could_not_be_read(
        runner: Run, store: Path) -> None:
    lines = sample_lines()
    source = store / "cut.jsonl.gz"
    source.write_bytes(gzip.compress(lines[0] + b"\n") + gzip.compress(lines[1] + b"\n")[:6])
    r = runner("dataset", "add", "cut", str(source), "--skip-bad-lines", "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["posts"] == len(ids_of(lines[:1]))
    assert body["skipped"] == [{"line": 2, "reason": "the gzip data ends early (truncated "
                                                     "file?): nothing after line 1 could be read"}]
    assert stored_lines(store, "cut") == lines[:1]


def test_only_the_first_lines_skipped_are_listed_and_the_rest_counted(
        runner: Run, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(salvage, "MAX_LISTED", 3)
    good = sample_lines()[0]
    source = store / "noisy.jsonl"
    source.write_bytes(good + b"\n" + b"".join(b"{oops\n" for _ in range(5)))
    r = runner("dataset", "add", "noisy", str(source), "--skip-bad-lines")
    assert r.exit_code == 0, r.output
    assert "5 bad lines skipped:" in r.output
    assert [n for n in range(2, 7) if f"  line {n}: not valid JSON" in r.output] == [2, 3, 4]
    assert "  … and 2 more (not listed)" in r.output
    shown = json.loads(runner("dataset", "show", "noisy", "--json").output)
    assert shown["skipped_lines"] == 5


def test_a_file_of_bad_lines_only_still_holds_no_posts(runner: Run, store: Path) -> None:
    source = store / "bad.jsonl"
    source.write_bytes(b"{oops\n[1, 2]\n")
    r = runner("dataset", "add", "bad", str(source), "--skip-bad-lines")
    assert r.exit_code == 2
    assert "holds no posts (a user-lookup or empty file?); 2 bad lines skipped" in r.output


# --- skipped lines reach nothing ----------------------------------------------------------------


BAD_POST = "1555555555555555555"  # on a line that is left out: it must appear nowhere


@pytest.fixture
def gate(redis_client: redis.Redis, tmp_path: Path) -> Gate:
    (tmp_path / "config.toml").write_text(
        '[limits]\npost_ids_per_entity = 1000000\nhydrated_per_recipient = 1000000\n'
        '[datasets]\ndir = "datasets"\n')
    return Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)


def middle_bad(path: Path) -> tuple[Path, list[bytes], list[dict[str, Any]]]:
    """A page, a page with one post that is not one (its text a number), a line of garbage,
    and the last page: the file, the lines kept, and the lines left out as `add` lists them."""
    first, second, last = sample_lines()
    page = json.loads(second)
    page["data"][0] = {**page["data"][0], "id": BAD_POST, "text": 5}
    path.write_bytes(first + b"\n" + json.dumps(page).encode() + b"\n{\"data\": [\n" + last
                     + b"\n")
    return path, [first, last], [{"line": 2, "reason": 'data[0]: "text" must be a string'},
                                 {"line": 3, "reason": "not valid JSON"}]


def test_bad_lines_in_the_middle_are_skipped_and_listed_and_the_rest_kept(
        gate: Gate, tmp_path: Path) -> None:
    source, kept, listed = middle_bad(tmp_path / "middle.jsonl")
    with pytest.raises(BadInput) as refused:
        gate.datasets.add("m", source, actor="t", channel="cli")
    assert refused.value.message == today_error(source)
    skipped = Skipped()
    info = gate.datasets.add("m", source, actor="t", channel="cli", skipped=skipped)
    assert [(s["line"], s["reason"][:len(w["reason"])]) for s, w in zip(
        skipped.lines, listed, strict=True)] == [(w["line"], w["reason"]) for w in listed]
    assert (info.posts, info.skipped_lines) == (len(ids_of(kept)), 2)
    assert gate.datasets.info("m").skipped_lines == 2


def test_skipped_lines_never_reach_an_export_a_share_or_r9(gate: Gate, tmp_path: Path) -> None:
    source, kept, _ = middle_bad(tmp_path / "middle.jsonl")
    gate.datasets.add("m", source, actor="t", channel="cli", skipped=Skipped())
    expected = ids_of(kept)
    deleted = gate.deletions.current()
    with select_from_dataset(gate, "m", Filters(), "posts", deleted) as sel:
        assert b"".join(sel.head(sel.count)).decode().split() == expected
    exported = [p["id"] for p in Selection("m", Filters(), deleted).posts(gate)]
    assert exported == expected and BAD_POST not in exported
    listing = tmp_path / "gone.txt"
    listing.write_text(f"{BAD_POST}\n{expected[0]}\n")
    report = ingest_deletions(gate, listing, kind="posts", actor="cora", channel="cli")
    assert report.datasets == {"m": 1}  # the kept post; the skipped one is in no dataset


def test_a_gzip_stream_cut_in_its_header_holds_no_posts_and_says_why(runner: Run, store: Path
                                                                     ) -> None:
    source = store / "cut.jsonl.gz"
    source.write_bytes(gzip.compress(sample_lines()[0])[:6])
    r = runner("dataset", "add", "cut", str(source), "--skip-bad-lines")
    assert r.exit_code == 2
    assert "holds no posts (a user-lookup or empty file?); 1 bad line skipped" in r.output
    skipped = Skipped()
    with open(source, "rb") as fh:
        assert list(salvage.read(fh.read, "cut", 1 << 20, skipped)) == []
    assert skipped.lines == [{"line": 1, "reason": "the gzip data ends early (truncated file?): "
                                                   "nothing could be read"}]
