"""Posts read back at their index places (`gatekeeper.domain.dsread`): each line parsed once."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from gatekeeper.domain import dsread


def _page(first: int, n: int) -> bytes:
    data = [{"id": str(first + i), "text": f"post {first + i}", "author_id": "7"}
            for i in range(n)]
    return json.dumps({"data": data, "includes": {"users": [{"id": "7", "username": "u"}]}}
                      ).encode() + b"\n"


@pytest.mark.parametrize("gz", [False, True])
def test_many_posts_of_one_line_are_read_with_one_parse_of_it(
        monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    # An export of every 8th post of 100-post pages read each page once per post it wanted
    # (12 parses of ~34 KB for one page): 50,000 posts took 70 s at 1M posts.
    lines = [_page(1000 * (k + 1), 100) for k in range(3)]
    raw = b"".join(lines)
    offsets = [sum(map(len, lines[:k])) for k in range(3)]
    places = [(row, offsets[k], len(lines[k]), p)
              for row, (k, p) in enumerate((k, p) for k in range(3) for p in range(0, 100, 8))]
    parsed: list[int] = []
    real_load = dsread.load

    def counting_load(line: bytes, name: str, number: int) -> object:
        parsed.append(len(line))
        return real_load(line, name, number)

    monkeypatch.setattr(dsread, "load", counting_load)
    fh = io.BytesIO(gzip.compress(raw) if gz else raw)
    got = list(dsread.posts_at(fh, "d.jsonl", places, 1 << 20))
    assert [(row, post["id"]) for row, post in got] == [
        (row, str(1000 * (k + 1) + p)) for row, (k, p) in
        enumerate((k, p) for k in range(3) for p in range(0, 100, 8))]
    assert len(parsed) == 3  # one parse a line, not one a post
