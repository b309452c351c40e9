"""PDF export: hydrated posts as a readable, paginated table (SPEC "Export files"; R5, R7-R9).

reportlab lays nothing out here: platypus splits one big table in O(n²), and its canvas keeps
every page in memory until it saves. Rows are measured and drawn here, and each page is written
to the stream as soon as it is full, so memory stays flat whatever the number of posts; reportlab
only reads the TrueType fonts and cuts the subsets that are embedded (see `exports.fonts`).

What only the end knows (how many posts, how many pages, how many characters were replaced) is
drawn through form XObjects that the pages name and that are written last: one pass, and still
"page N of M". Lines are broken on shaped widths, put in visual order (bidi), and their complex
scripts shaped by HarfBuzz (`exports.shaping`): conjuncts, reordered vowels, joined Arabic.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from bidi import get_base_level, get_display

from exports.columns import REFERENCED_KEY, about_rows, label, post_url
from exports.fonts import ESCAPE, Embedding, fontset, num
from exports.shaping import COMPLEX, JOINERS, shaper

PAGE_W, PAGE_H = 841.89, 595.28  # A4 landscape, in points
MARGIN = 28.0
SIZE = 7.5  # table text
LEADING = 9.5
PAD = 3.0  # inside each cell
FOOT = 6.5  # footer text
TITLE = 13.0
SHADE = "0.94 g"  # every other row, and the header row
RULE = "0.75 G 0.4 w"

FOOTER = ("hydrated X content for {recipient}: not to be made publicly available (R7); delete "
          "what is deleted on X within 24 hours (R9)")
# The title block: the About rows shared with the XLSX (exports.columns.about_rows), but for
# the one about the spreadsheet's columns; the notice rows go in the shaded box under it.
NOT_IN_PDF = {label("columns")}
NOTICE_ROWS = {label("notice"), "R7", "R8", "R9"}

RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc\U00010800-\U00010fff\U0001e800-"
                 "\U0001efff]")
CJK = ("\u2e80-\u2fff\u3000-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
       "\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff")
CLOSING = "、。，．：；！？）」』】〉》〕］｝ー々ゝゞ・…"  # never start a line (kinsoku)
# Where a line may break: after each CJK character (with the punctuation that must follow it),
# after a slash (URLs), after a space; a word longer than the line is cut anywhere.
TOKEN = re.compile(f"[{CJK}][{CLOSING}]*[^\\S\\n]*|[^\\s{CJK}/]*/+[^\\S\\n]*"
                   f"|[^\\s{CJK}]+[^\\S\\n]*|[^\\S\\n]+")


def _attached(ch: str) -> bool:
    """Whether `ch` belongs to the character before it (a mark, a joiner): no line break there."""
    return ch in JOINERS or unicodedata.category(ch)[0] == "M"


def _text(post: dict[str, Any]) -> str:
    """The post's text as written: the X API escapes &, < and > as HTML entities."""
    text = str(post.get("text") or "")
    if "&" in text:
        text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text


def _created(post: dict[str, Any]) -> str:
    c = str(post.get("created_at") or "")
    return f"{c[:10]} {c[11:19]}" if len(c) >= 19 and c[10] == "T" else c


def _author(post: dict[str, Any]) -> str:
    author = post.get("author") or {}
    handle = author.get("username")
    head = f"@{handle}" if handle else f"user {post.get('author_id') or author.get('id') or '?'}"
    return f"{head}\n{author['name']}" if author.get("name") else head


def _metric(key: str) -> Callable[[dict[str, Any]], str]:
    def value(post: dict[str, Any]) -> str:
        n = (post.get("public_metrics") or {}).get(key)
        return f"{n:,}" if isinstance(n, int) else ""
    return value


def _post_id(post: dict[str, Any]) -> str:
    """The post's ID; a post added because another references it says so, and how (the XLSX's
    ``referenced`` column)."""
    kind = post.get(REFERENCED_KEY)
    return f"{post['id']}\nreferenced ({str(kind).replace('_', ' ')})" if kind else str(post["id"])


@dataclass(frozen=True)
class Column:
    title: str
    width: float  # points, padding included
    value: Callable[[dict[str, Any]], str]
    right: bool = False  # right-aligned (numbers)


TEXT_COLUMN = 2  # the post's URL goes under its text, in LINK colour, as a link
LINK = "0.05 0.3 0.65 rg"
COLUMNS = (
    Column("created (UTC)", 54, _created),
    Column("author", 88, _author),
    Column("text", 0, _text),  # 0: the width that is left
    Column("lang", 24, lambda p: str(p.get("lang") or "")),
    Column("likes", 36, _metric("like_count"), right=True),
    Column("reposts", 36, _metric("retweet_count"), right=True),
    Column("post ID", 88, _post_id),
)


class _File:
    """PDF objects written as they come; the cross-reference table at the end."""

    CATALOG, PAGES, RESOURCES, FONTS, INFO = 1, 2, 3, 4, 5

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.pos = 0
        self.offsets: dict[int, int] = {}
        self.next = 6
        self._write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.pos += len(data)

    def reserve(self) -> int:
        self.next += 1
        return self.next - 1

    def obj(self, num: int, body: str) -> None:
        self.offsets[num] = self.pos
        self._write(b"%d 0 obj\n%s\nendobj\n" % (num, body.encode("latin-1")))

    def stream_obj(self, num: int, data: bytes, entries: str = "") -> None:
        data = zlib.compress(data, 6)
        self.offsets[num] = self.pos
        self._write(b"%d 0 obj\n<< /Length %d /Filter /FlateDecode %s >>\nstream\n"
                    % (num, len(data), entries.encode("latin-1")) + data + b"\nendstream\nendobj\n")

    def close(self) -> None:
        start = self.pos
        xref = [b"xref\n0 %d\n0000000000 65535 f \n" % self.next]
        xref += [b"%010d 00000 n \n" % self.offsets[n] for n in range(1, self.next)]
        self._write(b"".join(xref) + b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\n"
                    b"startxref\n%d\n%%%%EOF\n" % (self.next, self.CATALOG, self.INFO, start))


Cell = list[tuple[str, float]]  # (visual line, x offset inside the cell)


class PdfWriter:
    """Writes one PDF export to a binary stream, a post at a time: `add` each post, then
    `close` (which writes what only the end knows). `replaced` counts characters shown as
    [U+XXXX] because no embedded font has them."""

    def __init__(self, stream: IO[bytes], *, about: Mapping[str, str]) -> None:
        self.fonts = fontset()
        self.shaper = shaper(self.fonts)
        self.enc = Embedding(self.fonts)
        self.file = _File(stream)
        self.about = dict(about)
        self.recipient = str(self.about.get("recipient") or "the recipient")
        self.rows = 0
        self.replaced = 0
        self.pages: list[int] = []
        self.xobjects = {name: self.file.reserve() for name in ("Posts", "Pages", "Replaced")}
        self.ops: list[str] = []
        self.links: list[str] = []
        self.y = 0.0
        self.top = PAGE_H - MARGIN
        self.bottom = MARGIN + 14  # the footer lives below
        x, self.x = MARGIN, []
        flexible = PAGE_W - 2 * MARGIN - sum(c.width for c in COLUMNS)
        self.widths = [c.width or flexible for c in COLUMNS]
        for w in self.widths:
            self.x.append(x)
            x += w
        self.header = [self._lines(c.title, w - 2 * PAD, c.right)
                       for c, w in zip(COLUMNS, self.widths, strict=True)]
        header_height = max(map(len, self.header)) * LEADING + 2 * PAD
        self.capacity = int((self.top - header_height - self.bottom - 2 * PAD) // LEADING)
        self.closed = False

    # --- text -------------------------------------------------------------------------------

    def _lines(self, text: str, width: float, right: bool = False, size: float = SIZE) -> Cell:
        """`text` wrapped to `width` points: each line in visual order, complex scripts shaped
        (see `exports.shaping`), with its x offset."""
        limit = width * 1000 / size
        widths = self.fonts.widths()
        out: Cell = []
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        for para in text.split("\n"):
            para, replaced = self.fonts.clean(para)
            self.replaced += replaced
            rtl = RTL.search(para) is not None
            complex_ = rtl or (not para.isascii() and COMPLEX.search(para) is not None)
            base = "R" if rtl and get_base_level(para) == 1 else "L"
            measure = self.shaper.width if complex_ else None
            for line in self._wrap(para, limit, widths, measure):
                if rtl:  # mirrored brackets may be characters not seen yet
                    line = self.fonts.clean(get_display(line, base_dir=base))[0]
                if complex_:
                    line = self.shaper.shape_line(line)
                off = 0.0
                if right or base == "R":
                    off = max(0.0, width - sum(map(widths.__getitem__, line)) * size / 1000)
                out.append((line, off))
        return out

    @staticmethod
    def _wrap(para: str, limit: float, widths: dict[str, float],
              measure: Callable[[str], float] | None = None) -> list[str]:
        """Greedy line breaking of one paragraph; `limit` in 1/1000 em of the font size.
        `measure` gives the shaped width of a piece of text (complex scripts); without it a
        piece is as wide as its characters."""
        get = widths.__getitem__
        size: Callable[[str], float] = measure or (lambda s: sum(map(get, s)))
        if size(para) <= limit:
            return [para]
        lines: list[str] = []
        cur: list[str] = []
        x = 0.0
        for tok in TOKEN.findall(para):
            core = tok.rstrip()
            tail = tok[len(core):]
            wc = size(core)
            if cur and x + wc > limit:
                lines.append("".join(cur).rstrip())
                cur, x = [], 0.0
            if wc <= limit:
                cur.append(core)
                x += wc
            else:  # longer than a line: cut anywhere but inside a cluster
                for ch in core:
                    w = get(ch)
                    if cur and x + w > limit and not _attached(ch):
                        lines.append("".join(cur))
                        cur, x = [], 0.0
                    cur.append(ch)
                    x += w
            cur.append(tail)
            x += sum(map(get, tail))
        if cur or not lines:
            lines.append("".join(cur).rstrip())
        return lines

    # --- pages ------------------------------------------------------------------------------

    def _start_page(self) -> None:
        self.ops = [f"{RULE}\n"]
        self.links = []
        self.y = self.top
        number = len(self.pages) + 1
        if number == 1:
            self._title_block()
        self._row(self.header, shade=True, split=False)
        foot = FOOTER.format(recipient=self.recipient)
        self.ops.append(self._cell(self._lines(foot, PAGE_W * 0.7, size=FOOT), MARGIN,
                                   MARGIN, 0, 1, FOOT))
        label = f"page {number} of"
        x = PAGE_W - MARGIN - 40
        self.ops.append(self.enc.show(x - self._width(label, FOOT), MARGIN, label, FOOT))
        self.ops.append(f"q 1 0 0 1 {x + 2:.2f} {MARGIN:.2f} cm /Pages Do Q\n")

    def _end_page(self) -> None:
        content, page = self.file.reserve(), self.file.reserve()
        self.file.stream_obj(content, "".join(self.ops).encode("ascii"))
        annots = f" /Annots [{' '.join(self.links)}]" if self.links else ""
        self.file.obj(page, f"<< /Type /Page /Parent {_File.PAGES} 0 R /MediaBox [0 0 "
                            f"{num(PAGE_W)} {num(PAGE_H)}] /Resources {_File.RESOURCES} 0 R "
                            f"/Contents {content} 0 R{annots} >>")
        self.pages.append(page)
        self.ops = []

    def _width(self, text: str, size: float) -> float:
        text = self.fonts.clean(text)[0]
        return sum(map(self.fonts.widths().__getitem__, text)) * size / 1000

    def _cell(self, lines: Cell, x: float, top: float, start: int, count: int,
              size: float = SIZE) -> str:
        return "".join(self.enc.show(x + off, top - i * LEADING, text, size)
                       for i, (text, off) in enumerate(lines[start:start + count]))

    def _title_block(self) -> None:
        ops, width = self.ops, PAGE_W - 2 * MARGIN
        ops.append(self.enc.show(MARGIN, self.y - TITLE, "X posts, hydrated: PDF export", TITLE))
        self.y -= TITLE + 8
        label_w = 110.0
        items: list[tuple[str, str, str | None]] = []
        notice: list[str] = []
        for name, value in about_rows(self.about, {"posts": 0}):
            if name in NOTICE_ROWS:
                notice.append(str(value))
            elif name not in NOT_IN_PDF:
                if isinstance(value, datetime):
                    value = f"{value:%Y-%m-%d %H:%M:%S}"
                xobject = "Posts" if name == label("posts") else None
                items.append((name, "" if xobject else str(value), xobject))
        items.append(("Characters replaced", "", "Replaced"))
        for name, value, xobject in items:
            ops.append(self._cell(self._lines(name, label_w - PAD)[:1], MARGIN, self.y - SIZE,
                                  0, 1))
            lines = self._lines(value, width - label_w)
            ops.append(self._cell(lines, MARGIN + label_w, self.y - SIZE, 0, len(lines)))
            if xobject:
                ops.append(f"q 1 0 0 1 {MARGIN + label_w:.2f} {self.y - SIZE:.2f} cm "
                           f"/{xobject} Do Q\n")
            self.y -= len(lines) * LEADING
        notice_lines = self._lines(" ".join(notice), width - 2 * PAD)
        height = len(notice_lines) * LEADING + 2 * PAD
        self.y -= 6
        ops.append(f"q 1 0.97 0.85 rg {MARGIN:.2f} {self.y - height:.2f} {width:.2f} "
                   f"{height:.2f} re f Q\n")
        ops.append(self._cell(notice_lines, MARGIN + PAD, self.y - PAD - 7, 0,
                              len(notice_lines)))
        self.y -= height + 10

    # --- rows -------------------------------------------------------------------------------

    def _row(self, cells: list[Cell], *, shade: bool, split: bool = True,
             link: tuple[str, int] | None = None) -> None:
        """Draw a row under the last, on as many pages as it needs; `link` is a URL and the
        first line of the text cell that shows it."""
        n, start = max(map(len, cells)), 0
        while start < n:
            want = n - start
            fit = int((self.y - self.bottom - 2 * PAD) // LEADING)
            if want > fit and split and (want <= self.capacity or fit < 3):
                self._end_page()
                self._start_page()
                continue
            take = min(want, fit) if split else want
            height = take * LEADING + 2 * PAD
            bottom, top = self.y - height, self.y - PAD - 7
            ops = self.ops
            if shade:
                ops.append(f"q {SHADE} {MARGIN:.2f} {bottom:.2f} {PAGE_W - 2 * MARGIN:.2f} "
                           f"{height:.2f} re f Q\n")
            for i, (cell, x) in enumerate(zip(cells, self.x, strict=True)):
                if link and i == TEXT_COLUMN and link[1] < start + take:
                    first = max(link[1], start)  # the URL's first line on this page
                    first_y = top - (first - start) * LEADING
                    url = self._cell(cell, x + PAD, first_y, first, start + take - first)
                    ops.append(self._cell(cell, x + PAD, top, start, first - start))
                    ops.append(f"q {LINK} {url}Q\n")
                    rect = (f"{x:.2f} {top - (take - 1) * LEADING - 3:.2f} "
                            f"{x + self.widths[i]:.2f} {first_y + 7:.2f}")
                    self.links.append(f"<< /Type /Annot /Subtype /Link /Border [0 0 0] /Rect "
                                      f"[{rect}] /A << /S /URI /URI ({link[0].translate(ESCAPE)}"
                                      ") >> >>")
                else:
                    ops.append(self._cell(cell, x + PAD, top, start, take))
            ops.append(f"{MARGIN:.2f} {bottom:.2f} m {PAGE_W - MARGIN:.2f} {bottom:.2f} l S\n")
            self.y = bottom
            start += take
            if start < n:
                self._end_page()
                self._start_page()

    def add(self, post: dict[str, Any]) -> None:
        """Draw one post as a row of the table."""
        if not self.pages and not self.ops:
            self._start_page()
        cells = [self._lines(c.value(post), w - 2 * PAD, c.right)
                 for c, w in zip(COLUMNS, self.widths, strict=True)]
        url = post_url(post["id"], (post.get("author") or {}).get("username"))
        text = cells[TEXT_COLUMN]
        at = len(text)
        text += self._lines(url, self.widths[TEXT_COLUMN] - 2 * PAD)
        link = (url, at) if url.isascii() else None
        self._row(cells, shade=self.rows % 2 == 1, link=link)
        self.rows += 1

    def close(self) -> int:
        """Finish the file (what only the end knows, fonts, page tree); the rows written."""
        if self.closed:
            return self.rows
        self.closed = True
        if not self.pages and not self.ops:
            self._start_page()
        self._end_page()
        f = self.file
        for name, text in (("Posts", f"{self.rows:,}"), ("Pages", f"{len(self.pages):,}"),
                           ("Replaced", f"{self.replaced:,} (no embedded font has them; each "
                                        "is shown as [U+XXXX], its code point)")):
            body = self.enc.show(0, 0, text, FOOT if name == "Pages" else SIZE).encode("ascii")
            f.stream_obj(self.xobjects[name], body, "/Type /XObject /Subtype /Form /BBox "
                         f"[0 -3 {num(PAGE_W)} 12] /Resources << /Font {f.FONTS} 0 R >>")
        fonts = self.enc.write(f)
        f.obj(f.FONTS, "<< " + " ".join(f"/{k} {v} 0 R" for k, v in fonts.items()) + " >>")
        xobjects = " ".join(f"/{k} {v} 0 R" for k, v in self.xobjects.items())
        f.obj(f.RESOURCES, f"<< /Font {f.FONTS} 0 R /XObject << {xobjects} >> "
                           "/ProcSet [/PDF /Text] >>")
        kids = " ".join(f"{p} 0 R" for p in self.pages)
        f.obj(f.PAGES, f"<< /Type /Pages /Kids [{kids}] /Count {len(self.pages)} >>")
        f.obj(f.CATALOG, f"<< /Type /Catalog /Pages {f.PAGES} 0 R >>")
        stamp = datetime.now(UTC).strftime("D:%Y%m%d%H%M%SZ")
        f.obj(f.INFO, f"<< /Title (X posts, hydrated export) /Producer (gatekeeper) "
                      f"/CreationDate ({stamp}) >>")
        f.close()
        return self.rows


def write_pdf(posts: Iterable[dict[str, Any]], stream: IO[bytes], *,
              about: Mapping[str, str]) -> int:
    """Write `posts` to `stream` as a PDF table; return how many rows were written.

    `about` is shown in the title block as `exports.columns.about_rows` words it, in its order
    (``recipient``, a time, ``dataset``, ``filters`` and anything else; now if no time is given),
    then the count and the notice (R7-R9; ``notice`` replaces ours).
    """
    writer = PdfWriter(stream, about=about)
    for post in posts:
        writer.add(post)
    return writer.close()
