"""XLSX export: posts (and, opt-in, users) as a spreadsheet, streamed, with an About sheet.

The package is written here, part by part, with `zipfile` straight into the caller's stream:
SpreadsheetML with inline strings (``t="inlineStr"``), so no shared-strings table grows with
the rows, no temporary file is made, and memory stays flat whatever the row count. Doing the
XML by hand is what makes it fast: openpyxl's write-only mode spends most of its time building
and serialising one element per cell. Sheets, in tab order: "Posts" (the one the file
opens on), "Users" (only when users are given), "About this export" (written last, once the
counts are known).

Cells (types come from `exports.columns`):

- ``str`` is an inline string cell, text exact: XML-escaped, ``\\r`` as a character reference
  (XML would turn it into ``\\n``), and a literal ``_xHHHH_`` escaped as ``_x005F_xHHHH_``,
  since Excel reads ``_xHHHH_`` in cell text as a character. A string cell is never a formula;
  one that starts with ``= + - @``, tab or CR also gets the quote-prefix style, Excel's own
  "typed with a leading apostrophe", so editing the cell does not turn it into one either.
- characters XML cannot hold are replaced visibly: C0 controls other than tab, LF and CR by
  their Unicode Control Picture (BEL U+0007 becomes "␇" U+2407, ESC becomes "␛"), and U+FFFE,
  U+FFFF and lone surrogates by U+FFFD "�".
- text longer than a cell holds (32,767 UTF-16 units) is cut, ending with a marker that says so.
- ``int``/``float`` are numbers, ``bool`` a boolean, ``datetime`` a date serial number with a
  ``yyyy-mm-dd hh:mm:ss`` format; ``None`` is an empty cell.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Protocol

from exports.columns import (
    COLUMNS,
    REFERENCED,
    TEXT_COLUMNS,
    TIME_COLUMNS,
    USER_COLUMNS,
    about_rows,
    row,
    user_row,
)

MAX_CELL = 32_767  # Excel's limit on the characters (UTF-16 units) of one cell
MAX_ROWS = 1_048_576  # and on the rows of one sheet
BATCH = 128  # rows rendered, joined and compressed at a time (~0.5 MB of XML)
COMPRESSLEVEL = 1  # deflate in half the time of the default 6, for a file 1.25x larger

# Everything in cell text that needs more than a copy: XML markup, characters XML 1.0 forbids,
# CR (XML parsers turn it into LF) and an "_x" that starts one of Excel's _xHHHH_ escapes.
_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]"
                      "|_x(?=[0-9A-Fa-f]{4}_)")
_REPLACE = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;", "_x": "_x005F_x"}
_REPLACE.update({chr(c): chr(0x2400 + c) for c in range(0x20) if chr(c) not in "\t\n\r"})
FORMULA_START = frozenset("=+-@\t\r")  # OWASP's CSV-injection list

# Style indexes into STYLES' cellXfs.
HEADER, DATE, QUOTED, WRAP = 1, 2, 3, 4

NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
NS_R = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
STYLES = (
    f'{XML_HEAD}<styleSheet {NS}>'
    '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="5"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0" quotePrefix="1"/>'
    '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0" applyAlignment="1">'
    '<alignment horizontal="left" vertical="top" wrapText="1"/></xf></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    '</styleSheet>')
EPOCH = datetime(1899, 12, 30)  # Excel's day 0 (1900 date system, after its leap-year bug)
US = timedelta(microseconds=1)
DAY_US = 86_400_000_000


def _replace(match: re.Match[str]) -> str:
    return _REPLACE.get(match.group(), "\ufffd")  # what is left: U+FFFE, U+FFFF, surrogates


def cut(text: str, limit: int = MAX_CELL) -> str:
    """`text` as it fits in one cell: whole, or cut with a marker that says so."""
    if len(text) <= limit // 2:  # fits even if every character takes two UTF-16 units
        return text
    encoded = text.encode("utf-16-le", "surrogatepass")
    units = len(encoded) // 2
    if units <= limit:
        return text
    marker = f"… [cut: {units:,} characters, a cell holds {limit:,}]"
    head = encoded[:2 * (limit - len(marker))].decode("utf-16-le", "surrogatepass")
    if head and "\ud800" <= head[-1] <= "\udbff":  # never leave half an emoji behind
        head = head[:-1]
    return head + marker


def xml_text(text: str) -> str:
    """Text as cell content: cut to fit, XML-escaped, illegal characters replaced visibly."""
    if len(text) > MAX_CELL // 2:
        text = cut(text)
    return text if _SPECIAL.search(text) is None else _SPECIAL.sub(_replace, text)


def _cell(ref: str, v: Any, style: int = 0) -> str:
    """One cell of any value; `style` applies unless the value needs its own (date, quoted)."""
    s = f' s="{style}"' if style else ""
    if v is None:
        return ""
    if isinstance(v, bool):
        return f'<c r="{ref}"{s} t="b"><v>{v:d}</v></c>'
    if isinstance(v, int | float) and math.isfinite(v):  # NaN or inf would break the file
        return f'<c r="{ref}"{s}><v>{v!r}</v></c>'
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return f'<c r="{ref}" s="{DATE}"><v>{((v - EPOCH) // US) / DAY_US!r}</v></c>'
    v = str(v)
    if not v:
        return ""
    if v[0] in FORMULA_START:
        s = f' s="{QUOTED}"'
    space = ' xml:space="preserve"' if v[0].isspace() or v[-1].isspace() else ""
    return f'<c r="{ref}"{s} t="inlineStr"><is><t{space}>{xml_text(v)}</t></is></c>'


def _cells(values: Sequence[Any], refs: Sequence[str], n: int) -> str:
    """One ``<row>``; refs are the column letters. The hot path: one pass, no objects."""
    out = [f'<row r="{n}">']
    add = out.append
    special = _SPECIAL.search
    for ref, v in zip(refs, values, strict=True):
        t = type(v)
        if t is str:
            if not v:
                continue
            style = ' s="3"' if v[0] in FORMULA_START else ""
            space = ' xml:space="preserve"' if v[0].isspace() or v[-1].isspace() else ""
            if len(v) > 16_383 or special(v) is not None:
                v = xml_text(v)
            add(f'<c r="{ref}{n}"{style} t="inlineStr"><is><t{space}>{v}</t></is></c>')
        elif v is None:
            continue
        elif t is int:
            add(f'<c r="{ref}{n}"><v>{v}</v></c>')
        elif t is datetime and v.tzinfo is None:
            add(f'<c r="{ref}{n}" s="2"><v>{((v - EPOCH) // US) / DAY_US!r}</v></c>')
        else:
            add(_cell(f"{ref}{n}", v))
    add("</row>")
    return "".join(out)


def _styled_row(values: Sequence[Any], refs: Sequence[str], n: int, styles: Sequence[int]) -> str:
    cells = "".join(_cell(f"{ref}{n}", v, s) for ref, v, s in zip(refs, values, styles,
                                                                   strict=True))
    return f'<row r="{n}">{cells}</row>'


def _col_letters(count: int) -> list[str]:
    out = []
    for i in range(1, count + 1):
        name = ""
        while i:
            i, r = divmod(i - 1, 26)
            name = chr(65 + r) + name
        out.append(name)
    return out


def _width(name: str) -> int:
    if name in TEXT_COLUMNS:
        return 60
    if name in TIME_COLUMNS:
        return 19
    if name == "id" or name.endswith(("_id", ".id")) or name == "url":
        return 21
    return 14


class Writable(Protocol):
    """What a package is written to: a file, or a sink whose bytes are sent as they come (the
    zip format is written front to back, so no seeking is needed)."""

    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class _Package:
    """An XLSX package being written: parts in order, the workbook index last."""

    def __init__(self, stream: Writable, sheets: list[str]) -> None:
        self.zip = zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED,
                                   compresslevel=COMPRESSLEVEL)
        self.sheets = sheets  # tab order; sheet i is xl/worksheets/sheet{i+1}.xml
        self.filters: dict[int, str] = {}
        over = "".join(
            f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            for i in range(1, len(sheets) + 1))
        self.part("[Content_Types].xml", (
            f'{XML_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/'
            'vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" '
            'ContentType="application/xml"/><Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.'
            'main+xml"/><Override PartName="/xl/styles.xml" ContentType="application/'
            f'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>{over}</Types>'))
        self.part("_rels/.rels", (
            f'{XML_HEAD}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            f'relationships"><Relationship Id="rId1" Type="{REL}/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>'))
        rels = "".join(f'<Relationship Id="rId{i}" Type="{REL}/worksheet" '
                       f'Target="worksheets/sheet{i}.xml"/>' for i in range(1, len(sheets) + 1))
        self.part("xl/_rels/workbook.xml.rels", (
            f'{XML_HEAD}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            f'relationships">{rels}<Relationship Id="rId{len(sheets) + 1}" '
            f'Type="{REL}/styles" Target="styles.xml"/></Relationships>'))
        self.part("xl/styles.xml", STYLES)

    def part(self, name: str, text: str) -> None:
        self.zip.writestr(name, text.encode("utf-8"))

    def sheet(self, index: int, rows: Iterable[Sequence[Any]], *, header: list[str] | None,
              widths: list[int], styles: Sequence[int] | None = None) -> int:
        """Write tab `index` from `rows` (under a frozen, filtered `header` row, if given), each
        cell styled by `styles` (slower) or by its value alone; return the number of rows."""
        refs = _col_letters(len(widths))
        cols = "".join(f'<col min="{i}" max="{i}" width="{w}" customWidth="1"/>'
                       for i, w in enumerate(widths, 1))
        selected = ' tabSelected="1"' if index == 0 else ""
        pane = ('<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
                '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>' if header else "")
        n = 0
        with self.zip.open(f"xl/worksheets/sheet{index + 1}.xml", "w") as out:
            out.write(f'{XML_HEAD}<worksheet {NS} {NS_R}><sheetViews><sheetView{selected} '
                      f'workbookViewId="0">{pane}</sheetView></sheetViews>'
                      f'<sheetFormatPr defaultRowHeight="15"/><cols>{cols}</cols><sheetData>'
                      .encode())
            if header:
                n = 1
                out.write(_styled_row(header, refs, 1, [HEADER] * len(refs)).encode())
            batch: list[str] = []
            for values in rows:
                n += 1
                if n > MAX_ROWS:
                    raise ValueError(f"more than {MAX_ROWS:,} rows: a sheet holds no more")
                batch.append(_cells(values, refs, n) if styles is None else
                             _styled_row(values, refs, n, styles))
                if len(batch) == BATCH:
                    out.write("".join(batch).encode())
                    batch.clear()
            out.write("".join(batch).encode())
            tail = "</sheetData>"
            if header:
                tail += f'<autoFilter ref="A1:{refs[-1]}{n}"/>'
                self.filters[index] = f"${refs[0]}$1:${refs[-1]}${n}"
            out.write(f"{tail}</worksheet>".encode())
        return n - 1 if header else n

    def close(self) -> None:
        sheets = "".join(f'<sheet name="{xml_text(name)}" sheetId="{i}" r:id="rId{i}"/>'
                         for i, name in enumerate(self.sheets, 1))
        names = "".join(
            f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
            f"'{xml_text(self.sheets[i])}'!{ref}</definedName>"
            for i, ref in self.filters.items())
        self.part("xl/workbook.xml", (
            f'{XML_HEAD}<workbook {NS} {NS_R}><bookViews><workbookView activeTab="0"/>'
            f'</bookViews><sheets>{sheets}</sheets>'
            f'{f"<definedNames>{names}</definedNames>" if names else ""}</workbook>'))
        self.zip.close()


def write_xlsx(posts: Iterable[dict[str, Any]], stream: IO[bytes], *,
               about: Mapping[str, Any], users: Iterable[dict[str, Any]] | None = None,
               referenced: bool = False) -> int:
    """Write `posts` (and `users`, if given) to `stream` as an XLSX file; return the rows written.

    The count is post rows plus user rows: every hydrated object the file holds (what R6
    counts). `about` (recipient, time, dataset, filters, … in the caller's order and words)
    heads the "About this export" sheet, followed by the counts and the R7/R8/R9 notice.
    Memory holds one batch of rows; `stream` needs only ``write`` (a socket or pipe will do).
    If `posts` or `users` raise, the exception propagates and `stream` holds a partial file
    that no spreadsheet opens: discard it. With `referenced` (the export holds referenced
    posts as rows of their own) the Posts sheet ends with the REFERENCED column.
    """
    names = ["Posts", *(["Users"] if users is not None else []), "About this export"]
    package = _Package(stream, names)
    header = [*COLUMNS, REFERENCED] if referenced else COLUMNS
    counts = {"posts": package.sheet(0, (row(p, referenced) for p in posts), header=header,
                                     widths=[_width(c) for c in header])}
    if users is not None:
        counts["users"] = package.sheet(1, map(user_row, users), header=USER_COLUMNS,
                                        widths=[_width(c) for c in USER_COLUMNS])
    package.sheet(len(names) - 1, about_rows(about, counts), header=None, widths=[14, 100],
                  styles=[HEADER, WRAP])
    package.close()
    return sum(counts.values())
