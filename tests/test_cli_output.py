"""What the CLI prints for people (issue 13 item 6): aligned tables under headers, counted
nouns in the right number, "unlimited" said once, --json and --version, and a progress bar
only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gatekeeper.channels.cli import tables
from gatekeeper.channels.cli.main import main
from gatekeeper.channels.cli.tables import plural, table

Run = Callable[..., Result]
SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "samples"
pytestmark = pytest.mark.usefixtures("quick_password_hashes")


def ok(r: Result) -> str:
    assert r.exit_code == 0, r.output
    return r.output


def assert_aligned(text: str, headers: list[str]) -> list[str]:
    """`text` is a table whose first line is `headers` and whose cells start under them."""
    lines = text.rstrip("\n").splitlines()
    assert lines[0].split() == " ".join(headers).split()
    heads = [lines[0].index(h) for h in headers]
    for line in lines[1:]:
        for start in heads:
            assert line[start - 1:start] in ("", " "), (line, start)  # a cell starts here
    return lines


@pytest.fixture
def world(runner: Run, store_dir: Path) -> Path:
    """Entities of every shape, two users, a token."""
    ok(runner("entity", "add", "acme", "--kind", "commercial"))
    ok(runner("entity", "accept-terms", "acme", "--by", "Jane Doe"))
    ok(runner("entity", "add", "university-of-somewhere", "--kind", "academic", "--research"))
    ok(runner("user", "add", "dana", "--entity", "acme", "--role", "data", "--password-stdin",
              input="correct horse battery\n"))
    ok(runner("user", "add", "al", "--entity", "acme", "--role", "analyst", "--password-stdin",
              input="correct horse battery\n"))
    ok(runner("token", "create", "dana"))
    return store_dir


def test_table_aligns_columns_under_their_headers_and_numbers_to_the_right() -> None:
    text = table(["NAME", "POSTS", "NOTE"], [["a", 5, None], ["longer-name", 12_345, "x"]],
                 right=["POSTS"])
    assert text.splitlines() == [
        "NAME          POSTS  NOTE",
        "a                 5  -",
        "longer-name  12,345  x",
    ]


def test_table_with_no_rows_says_so_instead_of_a_lone_header() -> None:
    assert table(["NAME"], [], empty="no entities") == "no entities"


@pytest.mark.parametrize(("n", "word", "shown"), [
    (0, "post", "0 posts"), (1, "post", "1 post"), (2, "post", "2 posts"),
    (1_000, "entity", "1,000 entities"), (1, "entity", "1 entity"),
    (3, "repeated ID", "3 repeated IDs"),
])
def test_plural_counts_a_noun_in_the_right_number(n: int, word: str, shown: str) -> None:
    assert plural(n, word) == shown


def test_entity_list_is_an_aligned_table_with_headers(runner: Run, world: Path) -> None:
    lines = assert_aligned(ok(runner("entity", "list")),
                           ["NAME", "KIND", "POOL", "R3 EXEMPT", "R4 THROUGH", "R8 TERMS"])
    assert lines[1].split() == ["acme", "commercial", "acme", "no", "-", "Jane", "Doe"]
    assert lines[2].split()[:4] == ["university-of-somewhere", "academic",
                                    "university-of-somewhere", "yes"]


def test_user_list_is_an_aligned_table_with_headers(runner: Run, world: Path) -> None:
    lines = assert_aligned(ok(runner("user", "list")), ["NAME", "ENTITY", "ROLE", "STATUS"])
    assert sorted(line.split() for line in lines[1:]) == [
        ["al", "acme", "analyst", "enabled"], ["dana", "acme", "data", "enabled"]]
    assert "\t" not in "\n".join(lines)


def test_token_list_is_an_aligned_table_with_headers(runner: Run, world: Path) -> None:
    lines = assert_aligned(ok(runner("token", "list")),
                           ["USER", "ID", "PREFIX", "CREATED", "LAST USED"])
    [row] = json.loads(ok(runner("token", "list", "--json")))
    assert lines[1].split() == ["dana", row["id"], row["prefix"] + "…", row["created_at"],
                                "never"]


def test_dataset_list_is_an_aligned_table_with_counts_right_aligned(runner: Run,
                                                                    world: Path) -> None:
    ok(runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl")))
    ok(runner("dataset", "add", "geo", str(SAMPLES / "geo_tweets.jsonl")))
    lines = assert_aligned(ok(runner("dataset", "list")),
                           ["NAME", "POSTS", "LANGUAGES", "SKIPPED"])
    posts_end = lines[0].index("POSTS") + len("POSTS")
    assert [line[:posts_end].split() for line in lines[1:]] == [["geo", "2"], ["kpop", "100"]]
    assert "posts" not in "\n".join(lines[1:])  # the header says it once


def test_a_dataset_of_one_post_says_1_post(runner: Run, world: Path) -> None:
    page = json.loads((SAMPLES / "two_tweets.jsonl").read_text().splitlines()[0])
    one = world / "one.jsonl"
    one.write_text(json.dumps(page["data"][0]) + "\n")
    assert ok(runner("dataset", "add", "one", str(one))) == "dataset one: 1 post registered\n"
    assert ok(runner("dataset", "remove", "one")).startswith("dataset one removed: 1 post, ")


def test_quota_of_an_exempt_entity_says_unlimited_once_and_why(runner: Run,
                                                               world: Path) -> None:
    text = ok(runner("quota", "entity", "university-of-somewhere"))
    assert text.count("unlimited") == 1
    assert "  used       0 (unlimited: R3: academic, non-commercial research" in text
    assert "limit " not in text and "remaining" not in text
    assert "  User IDs   R2: used 0 (User IDs are recorded, not capped)" in text


def test_quota_of_a_capped_entity_shows_used_limit_remaining_and_releases(
        runner: Run, world: Path) -> None:
    (world / "ids.txt").write_text("11\n12\n13\n")
    ok(runner("share", "--as", "dana", "--entity", "acme", "--ids", "ids.txt", "--out", "o.txt"))
    text = ok(runner("quota", "entity", "acme"))
    assert "  used       3\n  limit      100\n  remaining  97\n" in text
    assert "unlimited" not in text
    head, row = text.split("capacity returns:\n")[1].splitlines()[:2]
    assert head.split() == ["AT", "FREES"] and row.split()[1] == "3"
    assert len(head) == len(row)  # FREES right-aligned under its header


def test_a_user_id_share_says_they_are_recorded_not_capped_once(runner: Run,
                                                                world: Path) -> None:
    (world / "users.txt").write_text("7\n")
    text = ok(runner("share", "--as", "dana", "--entity", "acme", "--kind", "users", "--ids",
                     "users.txt", "--out", "u.txt"))
    assert text.startswith("granted 1 of 1 User ID to acme -> u.txt\n")
    assert "R2: used 1 (User IDs are recorded, not capped)" in text
    assert "unlimited" not in text


def test_a_post_id_share_counts_in_the_right_number(runner: Run, world: Path) -> None:
    (world / "ids.txt").write_text("21\n21\n22\n")
    text = ok(runner("share", "--as", "dana", "--entity", "acme", "--ids", "ids.txt",
                     "--out", "o.txt"))
    assert text.startswith("granted 2 of 2 Post IDs to acme")
    assert "\n1 repeated ID was left out (each ID" in text


def test_version_is_the_installed_package_version(runner: Run) -> None:
    assert ok(runner("--version")) == f"gatekeeper {version('gatekeeper')}\n"


def test_store_status_answers_json(runner: Run, world: Path) -> None:
    report = json.loads(ok(runner("store", "status", "--json")))
    assert report["reachable"] is True and report["store"]["url"] == "embedded"


def test_piped_output_has_no_progress_bar(runner: Run, world: Path) -> None:
    add = runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl"))
    export = runner("audit", "export", "--out", "a.jsonl")
    for r in (add, export):
        assert r.exit_code == 0, r.output
        assert r.stderr == "" and "\r" not in r.output and "[#" not in r.output


def test_a_terminal_gets_a_progress_bar_on_stderr(runner: Run, world: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "on_terminal", lambda: True)
    # click draws only the label to a file that is not a TTY; make the captured one pass.
    monkeypatch.setattr("click._termui_impl.isatty", lambda _stream: True)
    add = runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl"))
    assert add.exit_code == 0, add.output
    assert "checking kpop.jsonl" in add.stderr and "100%" in add.stderr
    assert add.stdout == "dataset kpop: 100 posts registered\n"  # the bar never mixes in
    export = runner("audit", "export", "--out", "a.jsonl")
    assert export.exit_code == 0, export.output
    n = export.stdout.split()[0]
    assert export.stdout == f"{n} audit records written to a.jsonl (jsonl)\n"
    assert export.stderr.split("writing a.jsonl")[-1].split()[0].startswith(n)  # final count


def _share_in_a_process(cwd: Path, *args: str, terminal: bool) -> tuple[int, str, str]:
    """`gatekeeper share ARGS` in a process of its own, its stderr a real terminal (a pty) or
    a pipe; its exit status, stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    command = [sys.executable, "-m", "gatekeeper", "share", *args]
    if not terminal:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # every copy of the terminal's other side is closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave,
                          text=True) as proc:
        os.close(slave)
        out, _ = proc.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out, shown.decode()


def test_a_large_share_shows_a_bar_on_a_terminal_and_nothing_when_piped(
        runner: Run, world: Path) -> None:
    """Issue 13 item 6: `share` reads a large ID file for a while; a person at a terminal
    sees how far it got (the helper `dataset add` uses), a pipe gets nothing but the answer."""
    (world / "ids.txt").write_text("".join(f"{10**15 + i}\n" for i in range(200_000)))
    share = ("--as", "dana", "--entity", "acme", "--ids", "ids.txt")
    status, out, err = _share_in_a_process(world, *share, "--allow-partial", "--out", "a.txt",
                                           terminal=True)
    assert status == 0, (out, err)
    assert out.startswith("PARTIAL: granted 100 of 200,000 Post IDs to acme -> a.txt\n")
    assert "reading ids.txt" in err and "100%" in err and "\r" in err  # redrawn in place
    status, out, err = _share_in_a_process(world, *share, "--kind", "users", "--out", "b.txt",
                                           terminal=False)
    assert status == 0, (out, err)
    assert out.startswith("granted 200,000 of 200,000 User IDs to acme -> b.txt\n")
    assert err == ""


def test_a_dataset_share_counts_the_posts_read_on_a_terminal_only(
        runner: Run, world: Path) -> None:
    ok(runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl")))
    share = ("--as", "dana", "--entity", "acme", "--dataset", "kpop", "--kind", "users")
    status, out, err = _share_in_a_process(world, *share, "--out", "a.txt", terminal=True)
    assert status == 0, (out, err)
    authors = out.split()[1]
    assert out.startswith(f"granted {authors} of {authors} User IDs to acme -> a.txt")
    assert err.rstrip().endswith(f"reading dataset kpop: authors  {authors}\x1b[?25h")
    status, out, err = _share_in_a_process(world, *share, "--out", "b.txt", terminal=False)
    assert status == 0 and err == "", (out, err)


def test_the_readme_completion_command_prints_a_bash_completion_script() -> None:
    r = CliRunner().invoke(main, [], prog_name="gatekeeper",
                           env={"_GATEKEEPER_COMPLETE": "bash_source"})
    assert r.exit_code == 0 and "complete -o nosort -F _gatekeeper_completion gatekeeper" \
        in r.output
    assert '_GATEKEEPER_COMPLETE=bash_source gatekeeper' in (
        Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_counts_elsewhere_in_the_cli_are_in_the_right_number(runner: Run, world: Path) -> None:
    (world / "gone.txt").write_text("5\n")
    assert ok(runner("deletions", "add", "gone.txt", "--kind", "posts")).startswith(
        "R9: 1 post listed (1 newly hidden)")
    verified = ok(runner("audit", "verify"))
    assert "university-of-somewhere}:audit: 1 record, seq 1\n" in verified
    sweep = ok(runner("store", "sweep"))
    assert sweep.startswith("removed 0 leftover files\n") and "(s)" not in sweep


def test_report_is_quiet_when_piped_and_says_what_it_does_on_a_terminal(
        runner: Run, world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    piped = runner("report", "--out", "r.pdf")
    assert piped.exit_code == 0 and piped.stderr == "", piped.output
    assert piped.stdout.startswith("R11: compliance report for ")
    monkeypatch.setattr(tables, "on_terminal", lambda: True)
    shown = runner("report", "--out", "r2.pdf")
    assert shown.stderr.splitlines() == [
        "reading the audit log and counters for the previous month…", "laying out r2.pdf…"]


def test_a_permission_is_shown_through_its_last_day_as_typed_not_a_day_late(
        runner: Run, world: Path) -> None:
    """R4: `--until 2030-06-30` holds through that day; its exclusive end (the next midnight)
    read as "until 2030-07-01T00:00:00Z" a day late everywhere a person reads it."""
    said = ok(runner("entity", "permit", "acme", "--limit", "2000", "--until", "2030-06-30",
                     "--reference", "X-1"))
    assert "through 2030-06-30 (reference: X-1)" in said and "2030-07-01" not in said
    listed = ok(runner("entity", "list"))
    assert "2030-06-30" in listed and "2030-07-01" not in listed
    quota = ok(runner("quota", "entity", "acme"))
    assert "R4: 2,000 through 2030-06-30 (X-1)" in quota and "2030-07-01" not in quota
    # The machine-readable end stays the exclusive instant.
    [acme] = [e for e in json.loads(ok(runner("entity", "list", "--json")))
              if e["name"] == "acme"]
    assert acme["permission"]["until"] == "2030-07-01T00:00:00Z"
