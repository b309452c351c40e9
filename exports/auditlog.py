"""Audit records (R11) as files: JSONL, CSV and XLSX, streamed.

A record is a flat mapping of field name to text, as `gatekeeper.domain.audit.AuditLog` yields it.
This module knows nothing of where records come from; each format has a generator of byte
chunks (``iter_*``, for a web response) and a writer onto a binary stream (``write_*``, for a
file) that returns the number of records written. Memory holds one batch of rows.

Columns (CSV and XLSX): the SPEC's audit fields first, in its order — at, actor, entity,
recipient, channel, kind, requested, granted, rule, outcome, request_id — then the other fields
gatekeeper writes, sorted. A file is written before all records are seen, so its columns are
fixed in advance: any field outside them goes, as a JSON object, into the last column
``other_fields``, so nothing a record holds is ever dropped.

A CSV cell that starts with ``= + - @``, tab or CR is prefixed with a single quote, so no
spreadsheet runs it as a formula (OWASP's CSV-injection advice); XLSX cells are inline strings,
which are never formulas, and get Excel's quote-prefix style as well (exports.xlsx).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import orjson

from exports.xlsx import (
    BATCH,
    FORMULA_START,
    HEADER,
    MAX_ROWS,
    NS,
    NS_R,
    WRAP,
    XML_HEAD,
    _cells,
    _col_letters,
    _Package,
    _styled_row,
)

COLUMNS: tuple[str, ...] = ("at", "actor", "entity", "recipient", "channel", "kind",
                            "requested", "granted", "rule", "outcome", "request_id")
EXTRA_COLUMNS: tuple[str, ...] = tuple(sorted((
    "id", "time", "share_id", "purpose", "message", "dataset", "filters", "available_at",
    "removed_r9", "path")))
OTHER = "other_fields"
HEADER_ROW: list[str] = [*COLUMNS, *EXTRA_COLUMNS, OTHER]
_KNOWN = frozenset(HEADER_ROW[:-1])
NUMBERS = frozenset({"requested", "granted", "removed_r9", "time"})  # typed as numbers in XLSX
WIDTHS = {"at": 24, "request_id": 34, "share_id": 34, "message": 60, "filters": 30,
          "id": 17, "time": 15, OTHER: 30}
CHUNK = 1 << 16  # bytes gathered before a chunk is handed on


class _Counted:
    """Passes records through, counting them."""

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.it = iter(records)
        self.n = 0

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for r in self.it:
            self.n += 1
            yield r


def _structured(v: Any) -> Any:
    # A field that holds JSON text (an entity's `facts`) goes in as JSON, not as a string of
    # JSON inside the JSON object: no JSON inside JSON.
    if isinstance(v, str) and v[:1] in ("{", "["):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def _other(record: Mapping[str, Any]) -> str:
    rest = {k: _structured(v) for k, v in record.items() if k not in _KNOWN}
    return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS, default=str).decode() if rest else ""


def _text(v: Any) -> str:
    return "" if v is None else v if isinstance(v, str) else str(v)


def values(record: Mapping[str, Any]) -> list[str]:
    """A record as one row of text under HEADER_ROW."""
    return [*(_text(record.get(c)) for c in HEADER_ROW[:-1]), _other(record)]


def safe_cell(text: str) -> str:
    """A CSV cell no spreadsheet runs as a formula: a risky first character gets a quote."""
    return "'" + text if text and text[0] in FORMULA_START else text


def _write_all(chunks: Iterable[bytes], stream: IO[bytes]) -> None:
    for chunk in chunks:
        stream.write(chunk)


# --- JSONL ----------------------------------------------------------------------------------------


def iter_jsonl(records: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """One JSON object per line, each record exactly as given."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        line = orjson.dumps(record, default=str) + b"\n"
        batch.append(line)
        size += len(line)
        if size >= CHUNK:
            yield b"".join(batch)
            batch.clear()
            size = 0
    if batch:
        yield b"".join(batch)


def write_jsonl(records: Iterable[Mapping[str, Any]], stream: IO[bytes]) -> int:
    """Write records as JSON Lines; return how many."""
    counted = _Counted(records)
    _write_all(iter_jsonl(counted), stream)
    return counted.n


# --- CSV ------------------------------------------------------------------------------------------


def iter_csv(records: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """RFC 4180 CSV in UTF-8 with a byte-order mark (so Excel reads it as UTF-8)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER_ROW)
    yield "\ufeff".encode() + buf.getvalue().encode()
    buf.seek(0)
    buf.truncate()
    for record in records:
        writer.writerow([safe_cell(v) for v in values(record)])
        if buf.tell() >= CHUNK:
            yield buf.getvalue().encode("utf-8", "replace")
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode("utf-8", "replace")


def write_csv(records: Iterable[Mapping[str, Any]], stream: IO[bytes]) -> int:
    """Write records as CSV (columns: HEADER_ROW); return how many."""
    counted = _Counted(records)
    _write_all(iter_csv(counted), stream)
    return counted.n


# --- XLSX -----------------------------------------------------------------------------------------


class _Chunks:
    """A write-only stream that hands on what was written (zipfile streams without seeking)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass  # zipfile closes only what it opened; here for xlsx.Writable

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _typed(column: str, text: str) -> Any:
    if column in NUMBERS and text.isdigit() and len(text) < 16:
        return int(text)  # exact in a spreadsheet's double
    return text or None


def iter_xlsx(records: Iterable[Mapping[str, Any]], *,
              about: Mapping[str, Any] | None = None) -> Iterator[bytes]:
    """An XLSX workbook: sheet "Audit log" (one row per record) and "About this export"."""
    sink = _Chunks()
    package = _Package(sink, ["Audit log", "About this export"])
    yield sink.take()
    refs = _col_letters(len(HEADER_ROW))
    cols = "".join(f'<col min="{i}" max="{i}" width="{WIDTHS.get(c, 14)}" customWidth="1"/>'
                   for i, c in enumerate(HEADER_ROW, 1))
    n = 1
    with package.zip.open("xl/worksheets/sheet1.xml", "w") as out:
        out.write(f'{XML_HEAD}<worksheet {NS} {NS_R}><sheetViews><sheetView tabSelected="1" '
                  'workbookViewId="0"><pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" '
                  'state="frozen"/><selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
                  '</sheetView></sheetViews><sheetFormatPr defaultRowHeight="15"/>'
                  f'<cols>{cols}</cols><sheetData>'.encode())
        out.write(_styled_row(HEADER_ROW, refs, 1, [HEADER] * len(refs)).encode())
        batch: list[str] = []
        for record in records:
            n += 1
            if n > MAX_ROWS:
                raise ValueError(f"more than {MAX_ROWS - 1:,} records: a sheet holds no more; "
                                 "export a shorter period")
            row = [_typed(c, v) for c, v in zip(HEADER_ROW, values(record), strict=True)]
            batch.append(_cells(row, refs, n))
            if len(batch) == BATCH:
                out.write("".join(batch).encode())
                batch.clear()
                chunk = sink.take()
                if chunk:
                    yield chunk
        out.write("".join(batch).encode())
        out.write(f'</sheetData><autoFilter ref="A1:{refs[-1]}{n}"/></worksheet>'.encode())
    package.filters[0] = f"${refs[0]}$1:${refs[-1]}${n}"
    rows: list[tuple[str, Any]] = [
        ("Audit log", "R11: records of every grant, denial, refusal, deletion ingest and "
                      "administrative change, as appended; the log itself is never edited")]
    rows += [(str(k), _about_value(v)) for k, v in (about or {}).items()]
    rows.append(("records", n - 1))
    package.sheet(1, rows, header=None, widths=[16, 100], styles=[HEADER, WRAP])
    package.close()
    yield sink.take()


def _about_value(v: Any) -> Any:
    if isinstance(v, Mapping):  # structured, so JSON like every structured field
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS, default=str).decode() if v else "none"
    return v


def write_xlsx(records: Iterable[Mapping[str, Any]], stream: IO[bytes], *,
               about: Mapping[str, Any] | None = None) -> int:
    """Write records as an XLSX workbook; return how many. `about` (exported at, by whom,
    filters, … in the caller's words) heads the "About this export" sheet."""
    counted = _Counted(records)
    _write_all(iter_xlsx(counted, about=about), stream)
    return counted.n
