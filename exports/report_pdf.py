"""The auditor's monthly compliance report as a PDF (R11): title page, tables, charts, page N of M.

Laid out with reportlab's platypus: a report is tens of pages, not the streamed post tables of
`exports.pdf`. Long tables are cut into page-sized tables (platypus splits one long table in
O(n²)). Every string is drawn in the embedded fonts of `exports.fonts`, a run per font, so names,
references and messages in any script render, and nothing falls back to an unembedded base-14
font. Knows nothing of Redis or Flask: it reads the plain data `gatekeeper.domain.report` builds.

Longer than most modules, for a reason: one document laid out page by page, read top to
bottom as the PDF reads; its drawing helpers are in `exports.pdf` and `exports.fonts`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import IO, Any, Protocol, cast
from xml.sax.saxutils import escape

import arabic_reshaper
from bidi import get_display
from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, Line
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Flowable,
    Frame,
    KeepTogether,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from exports.fonts import fontset
from exports.pdf import RTL

ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff]")  # reshaped for platypus


class ReportData(Protocol):
    """What the writer reads of a monthly report (gatekeeper's `report.ReportData` is one).

    A protocol, not an import: exports/ knows nothing of gatekeeper (STYLE.md habits 3, 11).
    Read-only properties: any object with these attributes will do."""

    @property
    def month(self) -> str: ...
    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...
    @property
    def generated_ms(self) -> int: ...
    @property
    def generated_by(self) -> str: ...
    @property
    def limits(self) -> dict[str, Any]: ...
    @property
    def days(self) -> list[str]: ...
    @property
    def entities(self) -> Sequence[Any]: ...
    @property
    def idle_entities(self) -> Sequence[str]: ...
    @property
    def recipients(self) -> Sequence[Any]: ...
    @property
    def refusals(self) -> Sequence[Any]: ...
    @property
    def refusal_events(self) -> Sequence[Any]: ...
    @property
    def refusal_count(self) -> int: ...
    @property
    def exemptions(self) -> Sequence[Any]: ...
    @property
    def permissions(self) -> Sequence[Any]: ...
    @property
    def pools(self) -> Sequence[Any]: ...
    @property
    def pool_joins(self) -> Sequence[Any]: ...
    @property
    def deletions(self) -> Sequence[Any]: ...
    @property
    def withheld_r9(self) -> int: ...
    @property
    def shares_with_withheld(self) -> int: ...
    @property
    def deleted_now(self) -> dict[str, int]: ...
    @property
    def datasets_affected(self) -> dict[str, int]: ...
    @property
    def post_ids_daily(self) -> list[int]: ...
    @property
    def hydrated_daily(self) -> list[int]: ...
    @property
    def checks(self) -> Sequence[Any]: ...
    @property
    def records(self) -> int: ...
    @property
    def checkpoint(self) -> str: ...
    @property
    def redelivered(self) -> Sequence[Any]: ...
    @property
    def notices(self) -> Sequence[Any]: ...
    @property
    def notices_overdue(self) -> Sequence[Any]: ...

    def total(self, kind: str) -> int: ...
    def top(self, n: int) -> Sequence[Any]: ...
    def joined(self, how: str) -> int: ...


PAGE = landscape(A4)
MARGIN = 36.0
WIDTH = PAGE[0] - 2 * MARGIN
CHUNK = 40  # table rows per table: about a page
TOP_N = 8  # entities drawn in the charts
PALETTE = [colors.HexColor(c) for c in ("#1f5fbf", "#b26a00", "#1e7b45", "#a4262c", "#6b3fa0",
                                        "#00838f", "#8d6e63", "#5b6475")]
HEAD_BG = colors.HexColor("#e8ebf1")
SHADE = colors.HexColor("#f6f7f9")
LINE = colors.HexColor("#c9ced8")
RULES = ("R1 IDs only to third parties · R2 {r2} Post IDs per entity per {days} days · "
         "R3 academic non-commercial research exempt · R4 X's written permission · "
         "R5 hydrated content only by hand · R6 {r6} hydrated objects per recipient per day · "
         "R7 never public · R8 terms before receipt · R9 deletions within 24 hours · "
         "R10 no circumvention · R11 records kept · R12 credentials protected")
JOINED = {"created": "created as a child", "linked": "linked"}
KIND_LABELS = (("share.posts", "Post IDs"), ("share.users", "User IDs"),
               ("export.xlsx", "XLSX objects"), ("export.pdf", "PDF objects"))


class _Fonts:
    """The embedded fonts as platypus names them, and text marked up one run per font."""

    def __init__(self) -> None:
        self.set = fontset()
        self.names = self.set.register()
        self.base = self.names[0]

    def markup(self, text: str) -> str:
        """`text` as Paragraph markup: each run of characters in the font that has them."""
        out = []
        for line in str(text).replace("\r\n", "\n").split("\n"):
            if ARABIC.search(line):
                line = arabic_reshaper.reshape(line)
            line = self.set.clean(line)[0]
            if RTL.search(line):
                line = self.set.clean(get_display(line))[0]
            out.append("".join(escape(run) if face == 0 else
                               f'<font name="{self.names[face]}">{escape(run)}</font>'
                               for face, run in self.set.runs(line)))
        return "<br/>".join(out)

    def plain(self, text: str) -> bool:
        """Whether the base font draws all of `text` (a table cell can then be a string)."""
        return all(self.set.face(ch) == 0 for ch in text)


def _n(v: int | None, none: str = "unlimited") -> str:
    return none if v is None else f"{v:,}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _top(n: int) -> str:
    """"the top entity", "the top 3 entities": the number and the plural right."""
    return "the top entity" if n == 1 else f"the top {n:,} entities"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _when(ms: int | None, none: str = "in force") -> str:
    if ms is None:
        return none
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


class _Grid(Flowable):
    """A table of plain strings in one font: one text object per drawn part, rows of one
    height, split between any two rows with the header repeated. platypus' Table spends most
    of a long report on per-cell styles and a text object per cell; this draws the same."""

    def __init__(self, head: Sequence[str], rows: list[list[str]], widths: Sequence[float],
                 numeric: Collection[int], font: str, size: float = 7.0) -> None:
        super().__init__()
        self.head, self.rows, self.widths = list(head), rows, list(widths)
        self.numeric, self.font, self.size = set(numeric), font, size
        self.row_h = size * 1.23 + 4

    def wrap(self, _aw: float, _ah: float) -> tuple[float, float]:
        return sum(self.widths), self.row_h * (len(self.rows) + 1)

    def split(self, _aw: float, ah: float) -> list[Flowable]:
        n = int(ah // self.row_h) - 1
        if n < 1:
            return []
        if n >= len(self.rows):
            return [self]
        return [_Grid(self.head, self.rows[:n], self.widths, self.numeric, self.font,
                      self.size),
                _Grid(self.head, self.rows[n:], self.widths, self.numeric, self.font,
                      self.size)]

    def draw(self) -> None:
        c, h, width = self.canv, self.row_h, sum(self.widths)
        top = h * (len(self.rows) + 1)
        c.saveState()
        c.setFillColor(HEAD_BG)
        c.rect(0, top - h, width, h, stroke=0, fill=1)
        c.setFillColor(SHADE)
        for i in range(1, len(self.rows), 2):
            c.rect(0, top - h * (i + 2), width, h, stroke=0, fill=1)
        c.setStrokeColor(LINE)
        c.setLineWidth(0.3)
        for i in range(1, len(self.rows) + 2):
            c.line(0, top - h * i, width, top - h * i)
        text = c.beginText()
        text.setFont(self.font, self.size)
        text.setFillColor(colors.black)
        xs = [sum(self.widths[:i]) for i in range(len(self.widths))]
        # A cell's text operators depend on the string and the font subset in use before it
        # (reportlab's _formatText): the same pair gives the same operators, so each is made
        # once per table. Most cells repeat (counts, kinds, dates); a long table spent most
        # of its time here, a text object per cell.
        shown: dict[tuple[str, Any], tuple[str, Any]] = {}
        measured: dict[str, float] = {}
        code = text._code  # reportlab's list of the text object's operators
        for i, row in enumerate([self.head, *self.rows]):
            y = top - h * (i + 1) + 2 + (h - 4 - self.size) / 2 + 1
            for j, value in enumerate(row):
                if not value:
                    continue
                x = xs[j] + 6
                if j in self.numeric:
                    w = measured.get(value)
                    if w is None:
                        w = measured[value] = stringWidth(value, self.font, self.size)
                    x = xs[j] + self.widths[j] - 6 - w
                text.setTextOrigin(x, y)
                key = (value, text._curSubset)
                done = shown.get(key)
                if done is None:
                    done = shown[key] = (text._formatText(value), text._curSubset)
                code.append(done[0])
                text._curSubset = done[1]
        c.drawText(text)
        c.restoreState()


class _Report:
    """One report being laid out: styles, helpers and the flowables, section by section."""

    def __init__(self, data: ReportData) -> None:
        self.d = data
        self.f = _Fonts()
        base = self.f.base
        self.body = ParagraphStyle("body", fontName=base, fontSize=9, leading=12)
        self.small = ParagraphStyle("small", fontName=base, fontSize=7, leading=8.6)
        self.right = ParagraphStyle("right", parent=self.small, alignment=TA_RIGHT)
        self.h1 = ParagraphStyle("h1", fontName=base, fontSize=15, leading=19, spaceBefore=12,
                                 spaceAfter=6, textColor=colors.HexColor("#1d2330"))
        self.h2 = ParagraphStyle("h2", fontName=base, fontSize=11, leading=14, spaceBefore=8,
                                 spaceAfter=4)
        self.title = ParagraphStyle("title", fontName=base, fontSize=26, leading=32,
                                    spaceAfter=14)
        self.story: list[Flowable] = []

    # --- helpers ----------------------------------------------------------------------------

    def p(self, text: str, style: ParagraphStyle | None = None) -> Paragraph:
        return Paragraph(self.f.markup(text), style or self.body)

    def cell(self, text: Any, width: float) -> Any:
        """A table cell: a plain string when the base font draws it within `width`, else a
        paragraph that wraps (and draws each character in the font that has it)."""
        text = str(text)
        # FontSet guarantees the base font draws printable ASCII; no glyph is wider than 7 pt
        # at this size, so only long strings are measured.
        if ((text.isascii() and text.isprintable()) or self.f.plain(text)) and (
                len(text) * 7 <= width - 12
                or stringWidth(text, self.f.base, 7) <= width - 12):
            return text
        return Paragraph(self.f.markup(text), self.small)

    def heading(self, text: str) -> None:
        self.story += [CondPageBreak(120), Paragraph(self.f.markup(text), self.h1)]

    def table(self, head: Sequence[str], rows: Sequence[Sequence[Any]],
              widths: Sequence[float], numeric: Sequence[int] = (),
              empty: str = "none this month") -> None:
        """Rows under a header that repeats on every page: a grid when every cell is a plain
        string, else page-sized platypus tables (which wrap long text)."""
        if not rows:
            self.story.append(self.p(empty))
            return
        scale = WIDTH / sum(widths) if sum(widths) > WIDTH else 1.0
        widths = [w * scale for w in widths]
        cells = [[self.cell(c, w) for c, w in zip(r, widths, strict=True)] for r in rows]
        if all(isinstance(c, str) for r in cells for c in r):
            self.story.append(_Grid(head, cast(list[list[str]], cells), widths, numeric,
                                    self.f.base))
            return
        for i in range(0, len(cells), CHUNK):
            chunk = cells[i:i + CHUNK]
            style = [
                ("FONTNAME", (0, 0), (-1, -1), self.f.base),
                ("FONTSIZE", (0, 0), (-1, -1), 7),
                ("LEADING", (0, 0), (-1, -1), 8.6),
                ("BACKGROUND", (0, 0), (-1, 0), HEAD_BG),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, SHADE]),
                ("LINEBELOW", (0, 0), (-1, -1), 0.3, LINE),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
            style += [("ALIGN", (c, 0), (c, -1), "RIGHT") for c in numeric]
            self.story.append(Table([list(head), *chunk], colWidths=widths, repeatRows=1,
                                    style=TableStyle(style), hAlign="LEFT"))

    # --- sections ---------------------------------------------------------------------------

    def title_page(self) -> None:
        d = self.d
        lim = d.limits
        s = self.story
        s.append(Spacer(1, 40))
        s.append(self.p(f"gatekeeper compliance report, {d.month}", self.title))
        facts = [
            ("Month", f"{_when(d.start_ms)} to {_when(d.end_ms)} UTC (calendar month in UTC; "
                      "the end is exclusive)"),
            ("Generated at", f"{_when(d.generated_ms)} UTC"),
            ("Generated by", d.generated_by or "-"),
            ("Audit checkpoint", d.checkpoint),
            ("Limits", f"R2 {lim['post_ids_per_entity']:,} Post IDs per entity per "
                       f"{lim['post_ids_window_days']} days; R6 {lim['hydrated_per_recipient']:,} "
                       f"hydrated objects per recipient per day ({lim['hydrated_window']}); "
                       "exported posts count toward R2: "
                       f"{'yes' if lim['hydrated_counts_toward_post_ids'] else 'no'}; display "
                       f"time zone {lim['timezone']} (all times here are UTC)"),
            ("Audit records", f"{d.records:,} records appended in the month"),
        ]
        s.append(Table([[k, self.p(v)] for k, v in facts], colWidths=[110, WIDTH - 110],
                       hAlign="LEFT", style=TableStyle([
                           ("FONTNAME", (0, 0), (-1, -1), self.f.base),
                           ("FONTSIZE", (0, 0), (-1, -1), 9),
                           ("VALIGN", (0, 0), (-1, -1), "TOP"),
                           ("TEXTCOLOR", (0, 0), (0, -1), colors.HexColor("#5b6475"))])))
        s.append(Spacer(1, 14))
        s.append(self.p("Rules (POLICY.md): " + RULES.format(
            r2=f"{lim['post_ids_per_entity']:,}", days=lim["post_ids_window_days"],
            r6=f"{lim['hydrated_per_recipient']:,}"), self.small))
        s.append(Spacer(1, 14))
        s.append(self.p("Contents: 1 Summary · 2 Daily usage · 3 Entities · 4 Peak usage "
                        "against the limits · 5 Recipients of hydrated exports · 6 Refusals · "
                        "7 Exemptions (R3) and permissions (R4) · 8 Pools (R10) · "
                        "9 Deletion lists (R9) · 10 How the figures are made",
                        self.body))
        s.append(PageBreak())

    def summary(self) -> None:
        d = self.d
        self.heading("1 Summary")
        rows = [
            ("Entities with activity", f"{len(d.entities):,}",
             f"{len(d.idle_entities):,} other entities received nothing"),
            ("Recipients with activity", f"{len(d.recipients):,}",
             "entities receiving ID files and people receiving exports"),
            *((f"{label} granted (net)", f"{d.total(kind):,}", f"{kind}: granted minus refunded")
              for kind, label in KIND_LABELS),
            ("Refusals", f"{d.refusal_count:,}", "refused (quota), denied (policy), conflict "
                                                 "(idempotency key reused)"),
            ("Exemptions in force (R3)", f"{len(d.exemptions):,}", ""),
            ("Permissions in force (R4)", f"{len(d.permissions):,}", ""),
            ("Pools at the month's end (R10)", f"{len(d.pools):,}",
             f"{_count(sum(len(p.members) for p in d.pools), 'member')} besides the roots, "
             "each counted against its root's R2 limit"),
            ("Pool links made (R10)", f"{d.joined('linked'):,}",
             f"existing entities linked to a parent; {d.joined('created'):,} created as "
             "children"),
            ("Post IDs delivered again after 30 days (R10)",
             f"{sum(f.ids for f in d.redelivered):,}",
             f"to {_count(len(d.redelivered), 'entity')}, in "
             f"{_count(sum(len(f.findings) for f in d.redelivered), 'share')} (section 8)"),
            ("Deletion lists ingested (R9)", f"{len(d.deletions):,}",
             f"{d.withheld_r9:,} IDs withheld from {_count(d.shares_with_withheld, 'share')}"),
            ("Deletion notices opened (R9)", f"{sum(r.opened for r in d.notices):,}",
             f"{sum(r.acknowledged for r in d.notices):,} acknowledged, "
             f"{sum(r.overdue for r in d.notices):,} overdue (past 24 hours unconfirmed) in "
             "the month"),
        ]
        self.table(("figure", "value", "note"), rows, (200, 90, 480), numeric=(1,))
        self.story.append(Paragraph("Audit records against the ledger", self.h2))
        self.story.append(self.p(
            "Two independent books of the month: the audit log (R11) records each grant, "
            "delivery and refund; the ledger's counters are what the limits are enforced on. "
            "Each row compares the units the audit log says were delivered with the units "
            "the counters hold for the same days."))
        self.table(("what is compared", "audit log", "ledger counters", "agree?",
                    "why they agree (or not)"),
                   [(c.what, getattr(c, "audit_text", "") or f"{c.audit:,}", f"{c.ledger:,}",
                     "yes" if c.ok else "NO", c.note)
                    for c in d.checks], (200, 100, 75, 40, 355), numeric=(2,))

    def charts(self) -> None:
        d = self.d
        self.heading("2 Daily usage")
        labels = [day[8:] for day in d.days]
        for title, values in (("Post IDs per UTC day, all entities (R2 counters of every pool)",
                               d.post_ids_daily),
                              ("Hydrated objects per UTC day, all recipients (R6 counters)",
                               d.hydrated_daily)):
            self.story.append(KeepTogether([Paragraph(self.f.markup(title), self.h2),
                                            self._bars(labels, values)]))
        top = d.top(TOP_N)
        if top:
            self.story.append(KeepTogether([
                Paragraph(self.f.markup(
                    f"Post IDs per UTC day, {_top(len(top))} (own R2 counter"
                    f"{'; a bar is the day’s total, split by entity' if len(top) > 1 else ''})"),
                    self.h2),
                self._entity_bars(top)]))
            limited = [e for e in top if e.peak_percent is not None]
            if limited:
                self.story.append(KeepTogether([
                    Paragraph(self.f.markup("Highest 30-day total at a day's end, as % of the "
                                            f"limit then in force ({_top(len(limited))} "
                                            "with a limit)"),
                              self.h2),
                    self._percent(limited)]))

    def _axes(self, chart: Any) -> None:
        for axis in (chart.categoryAxis if hasattr(chart, "categoryAxis") else chart.xValueAxis,
                     chart.valueAxis if hasattr(chart, "valueAxis") else chart.yValueAxis):
            axis.labels.fontName = self.f.base
            axis.labels.fontSize = 7
            axis.strokeColor = LINE

    def _drawing(self, height: float) -> Drawing:
        # Without an initial font a drawing selects Helvetica, which is not embedded.
        return Drawing(WIDTH, height, initialFontName=self.f.base)

    def _bars(self, labels: list[str], values: list[int]) -> Drawing:
        drawing = self._drawing(150)
        chart = VerticalBarChart()
        chart.x, chart.y, chart.width, chart.height = 50, 20, WIDTH - 70, 115
        chart.data = [values or [0]]
        chart.categoryAxis.categoryNames = labels
        chart.valueAxis.valueMin = 0
        chart.valueAxis.labelTextFormat = lambda v: f"{v:,.0f}"
        chart.bars[0].fillColor = PALETTE[0]
        chart.bars[0].strokeColor = None
        self._axes(chart)
        drawing.add(chart)
        return drawing

    def _entity_bars(self, top: Sequence[Any]) -> Drawing:
        # Daily totals are counts per day, not a continuous quantity: bars, one per day,
        # stacked by entity (a line between days would suggest values in between).
        drawing = self._drawing(190)
        chart = VerticalBarChart()
        chart.x, chart.y, chart.width, chart.height = 50, 20, WIDTH - 190, 155
        days = len(self.d.days)
        chart.data = [list(e.daily[:days]) + [0] * (days - len(e.daily)) for e in top] or [[0]]
        chart.categoryAxis.categoryNames = [day[8:] for day in self.d.days]
        chart.categoryAxis.style = "stacked"
        for i in range(len(top)):
            chart.bars[i].fillColor = PALETTE[i % len(PALETTE)]
            chart.bars[i].strokeColor = None
        chart.valueAxis.valueMin = 0
        chart.valueAxis.labelTextFormat = lambda v: f"{v:,.0f}"
        self._axes(chart)
        drawing.add(chart)
        legend = Legend()
        legend.x, legend.y = WIDTH - 120, 175
        legend.fontName, legend.fontSize = self.f.base, 7
        legend.alignment = "right"
        legend.columnMaximum = len(top)  # one column
        legend.colorNamePairs = [(PALETTE[i % len(PALETTE)], e.name[:28])
                                 for i, e in enumerate(top)]
        drawing.add(legend)
        return drawing

    def _percent(self, rows: list[Any]) -> Drawing:
        height = 30 + 18 * len(rows)
        drawing = self._drawing(height)
        chart = HorizontalBarChart()
        chart.x, chart.y, chart.width, chart.height = 150, 15, WIDTH - 200, height - 25
        chart.data = [[round(e.peak_percent or 0, 1) for e in reversed(rows)]]
        chart.categoryAxis.categoryNames = [e.name[:28] for e in reversed(rows)]
        chart.valueAxis.valueMin = 0
        chart.valueAxis.valueMax = max(100, *(e.peak_percent or 0 for e in rows))
        chart.valueAxis.labelTextFormat = lambda v: f"{v:.0f}%"
        chart.bars[0].fillColor = PALETTE[0]
        chart.bars[0].strokeColor = None
        for i, value in enumerate(chart.data[0]):
            if value > 100:
                chart.bars[(0, i)].fillColor = PALETTE[3]  # over the limit then in force
        self._axes(chart)
        drawing.add(chart)
        at = chart.x + chart.width * 100 / chart.valueAxis.valueMax
        drawing.add(Line(at, chart.y - 3, at, chart.y + chart.height, strokeColor=PALETTE[3],
                         strokeWidth=0.8, strokeDashArray=[3, 2]))
        return drawing

    def entities(self) -> None:
        d = self.d
        self.heading("3 Entities")
        self.story.append(self.p(
            "Units granted in the month, net of refunds, by kind; answers are requests granted "
            "whole or in part (partial in brackets); a replayed answer (same idempotency key) "
            "delivers nothing new and counts zero. The pool is the root entity whose limit "
            "also applies (R10).", self.small))
        rows = [(e.name, e.kind, e.pool, *(f"{e.totals.net[k]:,}" for k, _ in KIND_LABELS),
                 f"{e.totals.requests:,} ({e.totals.partial:,})", f"{e.totals.replays:,}",
                 f"{e.totals.refunded:,}", f"{e.totals.refusals:,}") for e in d.entities]
        self.table(("entity", "kind", "pool", "Post IDs", "User IDs", "XLSX objects",
                    "PDF objects", "answers (partial)", "replays", "refunded", "refusals"),
                   rows, (130, 60, 110, 65, 60, 60, 60, 70, 45, 50, 50),
                   numeric=tuple(range(3, 11)))
        if d.idle_entities:
            shown = ", ".join(d.idle_entities[:300])
            more = f" and {len(d.idle_entities) - 300:,} more" if len(d.idle_entities) > 300 \
                else ""
            self.story.append(Spacer(1, 6))
            self.story.append(self.p(f"Entities that received nothing and were refused nothing "
                                     f"this month ({len(d.idle_entities):,}): {shown}{more}.",
                                     self.small))

    def peaks(self) -> None:
        d = self.d
        self.heading("4 Peak usage against the limits")
        self.story.append(self.p(
            "R2: each entity's own counter (a root's counter is its whole pool). The 30-day "
            "total is read at the end of each UTC day of the month (days D-29..D, exactly what "
            "the window held then) and the highest share of the limit in force at that moment "
            "is shown (an R4 permission replaces the limit; R3 lifts it).", self.small))
        rows = sorted((e for e in d.entities if e.peak_day or e.peak_window),
                      key=lambda e: (-(e.peak_percent or -1), -e.peak_window, e.name))
        self.table(("entity", "limit at month end", "peak day", "Post IDs that day",
                    "peak 30-day total", "at the end of", "limit then", "% of limit"),
                   [(e.name, _n(e.limit), e.peak_day or "-", f"{e.peak_day_amount:,}",
                     f"{e.peak_window:,}", e.peak_window_day or "-", _n(e.peak_window_limit),
                     _pct(e.peak_percent)) for e in rows],
                   (150, 90, 70, 90, 90, 80, 90, 70), numeric=(1, 3, 4, 6, 7))
        self.story += [Spacer(1, 4), self.p("R6 per recipient: see section 5.", self.small)]

    def recipients(self) -> None:
        d = self.d
        self.heading("5 Recipients of hydrated exports")
        self.story.append(self.p(
            "People receiving hydrated posts and users (R5, R6), net of refunds, with their "
            "highest UTC day against R6's limit per recipient (R3 and R4 never lift R6). The "
            "recipient of an ID share is the entity itself: its figures are in section 3.",
            self.small))
        people = [r for r in d.recipients if r.person]
        self.table(("recipient", "entity", "XLSX objects", "PDF objects", "answers (partial)",
                    "refusals", "peak day", "objects that day", "% of R6 limit"),
                   [(r.name, r.entity, f"{r.totals.net['export.xlsx']:,}",
                     f"{r.totals.net['export.pdf']:,}",
                     f"{r.totals.requests:,} ({r.totals.partial:,})", f"{r.totals.refusals:,}",
                     r.peak_day or "-", f"{r.peak_day_amount:,}", _pct(r.peak_percent))
                    for r in people],
                   (120, 120, 75, 75, 80, 55, 75, 85, 75), numeric=(2, 3, 4, 5, 7, 8))
        if people:
            self.story.append(Spacer(1, 4))
            self.story.append(self.p(f"R6 limit: {d.limits['hydrated_per_recipient']:,} "
                                     f"hydrated objects per recipient "
                                     f"({d.limits['hydrated_window']}).", self.small))

    def refusals(self) -> None:
        d = self.d
        self.heading("6 Refusals")
        self.table(("rule", "outcome", "count", "units requested", "entities"),
                   [(g.rule or "-", g.outcome, f"{g.count:,}", f"{g.requested:,}",
                     f"{len(g.entities):,}") for g in d.refusals],
                   (80, 80, 70, 100, 70), numeric=(2, 3, 4), empty="No refusals this month.")
        if d.refusal_events:
            listed = len(d.refusal_events)
            more = (f"; the first {listed:,} of {d.refusal_count:,} are listed (every one is in "
                    "the audit log export)") if listed < d.refusal_count else ""
            self.story.append(Paragraph(self.f.markup(f"Each refusal, oldest first{more}"),
                                        self.h2))
            self.table(("time (UTC)", "entity", "recipient", "kind", "requested", "rule",
                        "outcome", "message"),
                       [(_when(e.at_ms), e.entity or "-", e.recipient or "-", e.kind,
                         f"{e.requested:,}", e.rule or "-", e.outcome, e.message)
                        for e in d.refusal_events],
                       (84, 80, 80, 60, 50, 55, 45, 316), numeric=(4,))

    def exemptions(self) -> None:
        d = self.d
        self.heading("7 Exemptions (R3) and permissions (R4)")
        self.story.append(self.p("In force at any time during the month; rebuilt from the "
                                 "audit records and checked against each entity's current "
                                 "facts.", self.small))
        self.story.append(Paragraph("R3: academic, non-commercial research", self.h2))
        self.table(("entity", "from (UTC)", "until (UTC)", "recorded by", "evidence"),
                   [(x.entity, _when(x.from_ms), _when(x.until_ms), x.recorded_by,
                     x.evidence or "-") for x in d.exemptions],
                   (130, 95, 95, 120, 330), empty="No exemption was in force this month.")
        self.story.append(Paragraph("R4: X's express written permission", self.h2))
        self.table(("entity", "Post ID limit", "from (UTC)", "until (UTC)", "ended by",
                    "reference", "recorded by"),
                   [(p.entity, _n(p.limit), _when(p.from_ms), _when(p.until_ms),
                     p.ended + (f" ({p.ended_by})" if p.ended_by else ""), p.reference,
                     p.recorded_by) for p in d.permissions],
                   (110, 75, 95, 95, 110, 185, 100), numeric=(1,),
                   empty="No permission was in force this month.")

    def pools(self) -> None:
        d = self.d
        self.heading("8 Pools (R10)")
        self.story.append(self.p(
            "Entities linked as one so that their Post IDs count against one R2 limit, the "
            "root's: as they stood at the end of the month (a link made later is not shown), "
            "rebuilt from the audit records.", self.small))
        self.story.append(Paragraph("Pools at the end of the month", self.h2))
        self.table(("pool (root)", "member", "parent", "in the pool since (UTC)", "joined"),
                   [(p.root, m.entity, m.parent, _when(m.since_ms), JOINED[m.how])
                    for p in d.pools for m in p.members],
                   (140, 140, 140, 110, 150), empty="No pool had children at the month's end.")
        self.story.append(Paragraph("Entities that joined a pool this month", self.h2))
        self.table(("time (UTC)", "entity", "parent", "pool", "joined", "former pool",
                    "merged Post IDs", "by", "channel", "record"),
                   [(_when(j.at_ms), j.entity, j.parent, j.pool, JOINED[j.how],
                     j.former_pool or "-",
                     f"{j.merged_post_ids:,}" if j.how == "linked" else "-", j.actor,
                     j.channel, j.message) for j in d.pool_joins],
                   (84, 75, 75, 75, 72, 60, 68, 60, 40, 156), numeric=(6,),
                   empty="No entity joined a pool this month.")
        self.story.append(Paragraph("Post IDs delivered again after 30 days", self.h2))
        self.story.append(self.p(
            "Shares of the month that gave an entity Post IDs it had first received more than "
            "30 days before (in a delivery whose manifest was still kept): the IDs let it keep "
            "and analyse content past 30 days. Exempt academic research (R3) is not checked. "
            "Each share with the IDs it repeats, and the earlier deliveries they came in.",
            self.small))
        self.table(("entity", "time (UTC)", "share (manifest)", "Post IDs again", "of",
                    "earlier deliveries (manifest, date, IDs in common)"),
                   [(e.entity, _when(f.at_ms), f.delivery, f"{f.ids:,}", f"{f.delivered:,}",
                     "; ".join(f"{n} {_when(at)[:10]} ({k:,})" for n, at, k in f.earlier[:5])
                     + (f"; and {len(f.earlier) - 5:,} more" if len(f.earlier) > 5 else ""))
                    for e in d.redelivered for f in e.findings],
                   (90, 84, 150, 60, 50, 336), numeric=(3, 4),
                   empty="No entity received Post IDs again more than 30 days after their "
                         "first delivery this month.")

    def deletions(self) -> None:
        d = self.d
        self.heading("9 Deletion lists (R9)")
        self.table(("time (UTC)", "list", "IDs listed", "by", "channel", "record"),
                   [(_when(e.at_ms), e.kind, f"{e.requested:,}", e.actor, e.channel, e.message)
                    for e in d.deletions],
                   (95, 80, 65, 100, 50, 380), numeric=(2,),
                   empty="No deletion list was ingested this month.")
        affected = ", ".join(f"{k}: {v:,}" for k, v in sorted(d.datasets_affected.items()))
        self.story.append(Spacer(1, 6))
        self.story.append(self.p(
            f"Effect: from each ingest on, no share or export contains a listed post or a post "
            f"by a listed user. In the month, {d.withheld_r9:,} IDs were left out of "
            f"{_count(d.shares_with_withheld, 'share')} because they were listed. The lists "
            f"now hold {d.deleted_now.get('posts', 0):,} posts and "
            f"{d.deleted_now.get('users', 0):,} users. Stored datasets still holding listed "
            f"posts (posts affected): {affected or 'none'}."))

    def notices(self) -> None:
        d = self.d
        self.story.append(Paragraph("Deletion notices to the recipients (R9)", self.h2))
        self.story.append(self.p(
            "Each ingest opens a notice to every recipient of a delivery that held what it "
            "newly hides (the entity of an ID share, the person of an export): delete by the "
            "ingest's time plus 24 hours, then confirm; compliance records the confirmation. "
            "Overdue: past the deadline without a confirmation at some moment of the month.",
            self.small))
        self.table(("recipient", "to", "entity", "opened", "IDs to delete", "acknowledged",
                    "of which late", "overdue", "open at the month's end"),
                   [(r.recipient, r.recipient_kind, r.entity, f"{r.opened:,}", f"{r.ids:,}",
                     f"{r.acknowledged:,}", f"{r.acknowledged_late:,}", f"{r.overdue:,}",
                     f"{r.open_at_end:,}") for r in d.notices],
                   (130, 50, 110, 55, 80, 75, 65, 55, 110), numeric=(3, 4, 5, 6, 7, 8),
                   empty="No deletion notice was open in the month.")
        if d.notices_overdue:
            self.story.append(Paragraph("Overdue notices", self.h2))
            self.table(("notice", "recipient", "entity", "opened (UTC)", "deadline (UTC)",
                        "IDs", "acknowledged (UTC)", "confirmed by"),
                       [(n.id, f"{n.recipient} ({n.recipient_kind})", n.entity,
                         _when(n.opened_ms), _when(n.deadline_ms), f"{n.ids:,}",
                         _when(n.acked_ms, "not yet"), n.acked_by or "-")
                        for n in d.notices_overdue],
                       (190, 110, 80, 85, 85, 50, 85, 90), numeric=(5,))

    def method(self) -> None:
        self.heading("10 How the figures are made")
        for text in (
            "Audit records: every answer the ledger gave is appended to an append-only Redis "
            "stream in the same atomic step as the decision (R11). Totals add the units of "
            "answers granted whole or in part and subtract refunds (a reservation given back "
            "because its file could not be written), each refund counted against the grant it "
            "returns. Replayed answers deliver nothing new and count zero.",
            "Ledger counters: beside each counter the ledger keeps its usage per UTC day "
            "(refunds taken back), which gives the daily series, the peaks and the 30-day "
            "totals; section 1 shows that both sources agree.",
            "Limits in force: an R4 permission applies from its recording to its end date, its "
            "revocation or its successor; an R3 exemption from the recording of both facts "
            "(academic, non-commercial research) until either is withdrawn.",
            "Pools (R10): an entity joins a pool when it is created with a parent or linked "
            "to one; a link adds the Post IDs it received in the R2 window to the pool's "
            "counter at once. Nothing leaves a pool, so the pools at a month's end are the "
            "joins recorded before it.",
        ):
            self.story.append(self.p(text))
            self.story.append(Spacer(1, 4))

    def build(self) -> list[Flowable]:
        for section in (self.title_page, self.summary, self.charts, self.entities, self.peaks,
                        self.recipients, self.refusals, self.exemptions, self.pools,
                        self.deletions, self.notices, self.method):
            section()
        return self.story


def _numbered(label: str, font: str, page: tuple[float, float] = PAGE,
              margin: float = MARGIN) -> type[canvas.Canvas]:
    """A canvas that keeps its pages until the end, then stamps `label` and "page N of M" on
    each (the report's and the deletion notice's, exports/notice_pdf.py)."""

    class Numbered(canvas.Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # reportlab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self.setFont(font, 7)
                self.setFillColor(colors.HexColor("#5b6475"))
                self.drawString(margin, margin / 2, label)
                self.drawRightString(page[0] - margin, margin / 2,
                                     f"page {self._pageNumber} of {total}")
                super().showPage()
            super().save()

    return Numbered


def write_report_pdf(data: ReportData, stream: IO[bytes]) -> int:
    """Write the report to a binary stream; the number of pages."""
    layout = _Report(data)
    story = layout.build()
    doc = BaseDocTemplate(stream, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN,
                          topMargin=MARGIN, bottomMargin=MARGIN,
                          title=f"gatekeeper compliance report, {data.month}",
                          author=data.generated_by or "gatekeeper", creator="gatekeeper",
                          subject="R11 monthly compliance report",
                          initialFontName=layout.f.base)  # never an unembedded Helvetica
    frame = Frame(MARGIN, MARGIN, WIDTH, PAGE[1] - 2 * MARGIN, id="body", leftPadding=0,
                  rightPadding=0, topPadding=0, bottomPadding=0)
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame])])
    doc.build(story, canvasmaker=_numbered(f"gatekeeper compliance report, {data.month}",
                                           layout.f.base))
    return doc.page
