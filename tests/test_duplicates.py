"""Issue 12 item 4: a post or ID present several times in one selection leaves and counts once,
and every channel says how many repeats were dropped (ID shares here; hydrated exports below)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import Result
from flask.testing import FlaskClient
from live import form_token, sign_in
from openpyxl import load_workbook

from gatekeeper import config as config_mod
from gatekeeper.domain import quota
from gatekeeper.domain.datasets import Datasets
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.hydrated import Selection
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


# --- hydrated exports ---------------------------------------------------------------------------


def export_page(client: FlaskClient) -> str:
    """Signed in as ana, terms accepted: the export form previewing dataset kpop."""
    assert sign_in(client, "ana", PASSWORD) == 302
    page = client.get("/terms").get_data(as_text=True)
    assert client.post("/terms", data={"agree": "yes", "csrf_token": form_token(page)}
                       ).status_code == 302
    resp = client.get("/export", query_string={"dataset": "kpop"})
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def download(client: FlaskClient, page: str) -> bytes:
    """Click Export (XLSX) on the previewed form; the file."""
    form = page[page.index('id="export-form"'):]
    resp = client.post("/export", data={
        "csrf_token": form_token(form), "ticket": form_token(form, "ticket"),
        "dataset": "kpop", "format": "xlsx", "users": ""})
    try:
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_data()
    finally:
        resp.close()


def web_audit(gate: Gate) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(keys.audit("acme"))]


def overlapping(path: Path) -> tuple[Path, list[str], int]:
    """kpop.jsonl's page as two pages whose posts overlap (two searches that met): the file,
    its distinct post IDs in first-seen order, and how many posts it holds twice."""
    page = json.loads((SAMPLES / "kpop.jsonl").read_text().splitlines()[0])
    data = page["data"]
    first, second = {**page, "data": data[:60]}, {**page, "data": data[40:]}
    path.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    return path, [p["id"] for p in data], 20


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    (tmp_path / "config.toml").write_text(
        '[limits]\nhydrated_per_recipient = 1000\npost_ids_per_entity = 1000\n'
        '[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)  # fake and real
    g.datasets.add("kpop", overlapping(tmp_path / "twice.jsonl")[0], actor="test",
                   channel="cli")
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.users.add("ana", entity="acme", role="analyst", password=PASSWORD, actor="t",
                channel="cli")
    return g


def test_an_export_of_overlapping_collections_writes_and_counts_each_post_once(
        client: FlaskClient, gate: Gate, tmp_path: Path) -> None:
    _, ids, twice = overlapping(tmp_path / "again.jsonl")
    page = export_page(client)
    assert (f"{len(ids)} posts match ({twice} duplicates dropped: each post is exported and "
            "counted once)") in page
    book = load_workbook(io.BytesIO(download(client, page)), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    about = dict(book["About this export"].iter_rows(values_only=True))
    book.close()
    assert [r[list(rows[0]).index("id")] for r in rows[1:]] == ids
    assert str(about["Duplicates dropped"]) == str(twice)
    assert str(about["Posts"]) == str(len(ids))
    assert quota.user_quota(gate, "ana")["used"] == len(ids)
    granted = [a for a in web_audit(gate)
               if a.get("kind") == "export.xlsx" and a["outcome"] == "granted"]
    assert granted[0]["duplicates"] == str(twice)


def test_a_preview_with_a_users_sheet_counts_distinct_posts_and_authors(
        gate: Gate, tmp_path: Path) -> None:
    from gatekeeper.domain import hydrated

    _, ids, twice = overlapping(tmp_path / "again.jsonl")
    selection = Selection("kpop", Filters(), gate.deletions.current())
    shown = hydrated.preview(gate, gate.users.get("ana"), selection, with_users=True)
    authors = {p["author_id"] for p in json.loads(
        (SAMPLES / "kpop.jsonl").read_text().splitlines()[0])["data"]}
    assert (shown["posts"], shown["users"], shown["duplicates"]) == (len(ids), len(authors),
                                                                    twice)
    assert shown["objects"] == len(ids) + len(authors)


def test_the_first_n_of_an_export_are_n_distinct_posts(gate: Gate, tmp_path: Path) -> None:
    _, ids, _ = overlapping(tmp_path / "again.jsonl")
    selection = Selection("kpop", Filters(), gate.deletions.current(), limit=70)
    assert [p["id"] for p in selection.posts(gate)] == ids[:70]
    tally = selection.tally(gate, with_users=False)
    assert (tally.posts, tally.duplicates) == (70, 20)  # 0-59, then 40-59 again, then 60-69


# --- repeats recorded when a dataset is added ---------------------------------------------------


def test_a_dataset_records_the_posts_it_holds_twice_and_shares_use_that(
        redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dataset add` finds the repeated posts while it reads the file (usually none), so a share
    of the dataset leaves their later copies out without the after-the-fact pass over every ID
    (Selection.distinct); a dataset added before that was recorded still gets the pass."""
    from gatekeeper.domain import shares
    from gatekeeper.ledger.ledger import Ledger
    from gatekeeper.rules.r9 import Deleted

    path, ids, twice = overlapping(tmp_path / "both.jsonl")
    datasets = Datasets(redis_client, Ledger(redis_client), tmp_path / "ds")
    gate = type("G", (), {"datasets": datasets})()
    info = datasets.add("both", path, actor="t", channel="cli")
    assert info.repeated_posts is not None and len(info.repeated_posts) == twice
    assert datasets.add("once", SAMPLES / "kpop.jsonl", actor="t",
                        channel="cli").repeated_posts == []
    nothing = Deleted(0, frozenset(), frozenset())

    def no_pass(self: Any) -> None:
        raise AssertionError("the after-the-fact pass ran for a dataset that records repeats")

    with monkeypatch.context() as m:
        m.setattr(shares.Selection, "distinct", no_pass)
        with shares.select_from_dataset(gate, "both", Filters(), "posts", nothing) as sel:
            assert b"".join(sel.head(sel.count)).decode().split() == ids
            assert sel.repeats == twice
    # A dataset registered before repeats were recorded: the pass finds them.
    record = json.loads(redis_client.hget(keys.DATASETS, "both"))
    del record["repeated_posts"]
    redis_client.hset(keys.DATASETS, "both", json.dumps(record))
    with shares.select_from_dataset(gate, "both", Filters(), "posts", nothing) as sel:
        assert b"".join(sel.head(sel.count)).decode().split() == ids
        assert sel.repeats == twice
