"""Reading the dashboard's tables back from its HTML, for the dashboard, R10-link and cluster
tests (a support module: no test module imports another)."""

from __future__ import annotations

from html.parser import HTMLParser


class Tables(HTMLParser):
    """Every <table id=...> of a page as rows of (tr attributes, cell texts)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[dict[str, str], list[str]]]] = {}
        self.ids: dict[str, str] = {}  # element id -> its text
        self._table: str | None = None
        self._row: tuple[dict[str, str], list[str]] | None = None
        self._header = False
        self._cell: list[str] | None = None
        self._open: list[tuple[str, str, list[str]]] = []  # (tag, id, text) with ids
        self._svg = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self._svg += 1
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row, self._header = (a, []), False
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._header = self._header or tag == "th"
        if a.get("id") and tag not in ("input", "br", "meta"):
            self._open.append((tag, a["id"], []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg -= 1
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if self._row[1] and not self._header:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        if self._open and self._open[-1][0] == tag:
            _, ident, text = self._open.pop()
            self.ids[ident] = " ".join("".join(text).split())

    def handle_data(self, data: str) -> None:
        if self._svg:
            return  # chart labels are checked through their titles, not as page text
        if self._cell is not None:
            self._cell.append(data)
        for _, _, text in self._open:
            text.append(data)

    def rows(self, table: str) -> list[list[str]]:
        return [cells for _attrs, cells in self.tables[table]]

    def by(self, table: str, attr: str) -> dict[str, list[str]]:
        return {attrs[attr]: cells for attrs, cells in self.tables[table] if attr in attrs}


def entity_rows(html: str) -> dict[str, dict[str, str]]:
    t = Tables(html)
    head = ["entity", "used", "remaining", "ratio", "pool", "release", "basis", "terms", "days"]
    return {name: dict(zip(head, cells, strict=True))
            for name, cells in t.by("entities", "data-entity").items()}
