"""Issue 12 item 4: a post or ID present several times in one selection leaves and counts once,
and every channel says how many repeats were dropped (ID shares here; hydrated exports below)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
PASSWORD = "correct horse battery"

Run = Callable[..., Result]


def audit(store_dir: Path, root: str) -> list[dict[str, str]]:
    client = EmbeddedServer(store_dir / "var").client(decode_responses=True)
    return [fields for _id, fields in client.xrange(keys.audit(root))]


def kpop_ids() -> list[str]:
    """kpop.jsonl's post IDs in file order, read with the stdlib."""
    return [p["id"] for line in (SAMPLES / "kpop.jsonl").read_text().splitlines() if line
            for p in json.loads(line)["data"]]


@pytest.fixture
def acme(runner: Run, store_dir: Path) -> Path:
    """Entity acme (with R8 terms, R2 limit 100) and data-team user dana; the store dir."""
    assert runner("entity", "add", "acme", "--kind", "commercial").exit_code == 0
    assert runner("entity", "accept-terms", "acme", "--by", "Jane Doe").exit_code == 0
    r = runner("user", "add", "dana", "--entity", "acme", "--role", "data", "--password-stdin",
               input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    return store_dir


def used(runner: Run, entity: str) -> int:
    r = runner("quota", "entity", entity, "--json")
    assert r.exit_code == 0, r.output
    return int(json.loads(r.output)["used"])


def test_an_id_list_with_repeats_delivers_and_counts_each_id_once_and_says_so(
        runner: Run, acme: Path) -> None:
    ids = [1001, 1002, 1001, 1003, 1002, 1001, 1004]
    (acme / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(acme / "ids.txt"),
               "--out", "o.txt", "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert (body["requested"], body["granted"], body["repeats"]) == (4, 4, 3)
    assert (acme / "o.txt").read_text().split() == ["1001", "1002", "1003", "1004"]
    assert used(runner, "acme") == 4
    granted = [a for a in audit(acme, "acme") if a.get("kind") == "share.posts"]
    assert granted[0]["outcome"] == "granted" and granted[0]["repeats"] == "3"

    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(acme / "ids.txt"),
               "--out", "p.txt")
    assert r.exit_code == 0, r.output
    assert "3 repeated IDs were left out (each ID is delivered and counted once)" in r.output
    assert used(runner, "acme") == 8


def test_a_list_without_repeats_reports_none(runner: Run, acme: Path) -> None:
    (acme / "ids.txt").write_text("7\n8\n")
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(acme / "ids.txt"),
               "--out", "o.txt", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["repeats"] == 0
    granted = [a for a in audit(acme, "acme") if a.get("kind") == "share.posts"]
    assert "repeats" not in granted[0]


def test_a_dataset_holding_posts_twice_shares_and_counts_each_once(runner: Run, acme: Path
                                                                   ) -> None:
    """Overlapping collections: the same page twice, as two runs of a search that overlap."""
    page = (SAMPLES / "kpop.jsonl").read_text().splitlines()[0]
    (acme / "twice.jsonl").write_text(f"{page}\n{page}\n")
    assert runner("entity", "add", "uni", "--kind", "academic", "--research").exit_code == 0
    assert runner("entity", "accept-terms", "uni", "--by", "Prof. X").exit_code == 0
    assert runner("dataset", "add", "twice", str(acme / "twice.jsonl")).exit_code == 0
    r = runner("share", "--as", "dana", "--entity", "uni", "--dataset", "twice", "--out",
               "all.txt", "--json")
    assert r.exit_code == 0, r.output
    ids = kpop_ids()
    assert (acme / "all.txt").read_text().split() == ids
    body = json.loads(r.output)
    assert (body["requested"], body["granted"], body["repeats"]) == (len(ids), len(ids),
                                                                      len(ids))
    assert used(runner, "uni") == len(ids)
    granted = [a for a in audit(acme, "uni") if a.get("kind") == "share.posts"]
    assert granted[0]["repeats"] == str(len(ids))
