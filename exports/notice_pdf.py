"""A deletion notice as a PDF letter (R9, issue 15): who must delete what, delivered when, by when.

Plain data in (`Letter`), bytes out; knows nothing of gatekeeper. Laid out with reportlab's
platypus in the embedded fonts of `exports.fonts` (names in any script render), as the monthly
report is. The IDs themselves travel in the ID files beside the letter; the letter names them
and shows the first few.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import (
    BaseDocTemplate,
    Frame,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from exports.report_pdf import _Fonts, _numbered

PAGE = A4
MARGIN = 48
WIDTH = PAGE[0] - 2 * MARGIN
SHOWN = 60  # IDs of each kind printed in the letter; all of them are in the ID files


@dataclass
class LetterDelivery:
    delivery: str
    channel: str
    kind: str  # share.posts, export.xlsx, ...
    delivered: str  # when, as text
    file: str | None
    posts: int
    users: int


@dataclass
class Letter:
    notice_id: str
    recipient_kind: str  # "entity" or "person"
    recipient: str
    entity: str
    opened: str
    deadline: str
    deliveries: Sequence[LetterDelivery]
    posts: Sequence[int]
    users: Sequence[int]
    policy: str
    id_files: Sequence[str] = ()
    sources: Sequence[str] = ()
    state: str = "open"
    acknowledged: str | None = None  # "by WHO at WHEN (note)" once acknowledged
    sender: str = "gatekeeper"
    extra: dict[str, str] = field(default_factory=dict)


def _widths(rows: list[list[str]], font: str, size: float) -> list[float]:
    """Each column as wide as its widest cell (a timestamp or a share id on one line), the
    widest columns narrowed first when the page is too narrow for them all."""
    pad = 13  # a Table cell's padding (6 each side) and a point to spare
    wanted = [max(stringWidth(str(r[i]), font, size) for r in rows) + pad
              for i in range(len(rows[0]))]
    room = PAGE[0] - 2 * MARGIN
    while sum(wanted) > room + 0.5:  # the widest down to the next widest, or to fit
        widest = max(wanted)
        below = max((w for w in wanted if w < widest), default=0.0)
        to = max(below, widest - (sum(wanted) - room) / wanted.count(widest))
        wanted = [to if w == widest else w for w in wanted]
    return wanted


def write_notice_pdf(letter: Letter, stream: IO[bytes]) -> int:
    """Write the letter to a binary stream; the number of pages."""
    f = _Fonts()
    body = ParagraphStyle("body", fontName=f.base, fontSize=10, leading=14)
    small = ParagraphStyle("small", parent=body, fontSize=8, leading=10)
    title = ParagraphStyle("title", parent=body, fontSize=16, leading=20, spaceAfter=6)
    head = ParagraphStyle("head", parent=body, fontSize=11, leading=15, spaceBefore=10,
                          spaceAfter=4)

    def p(text: str, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(f.markup(text), style)

    who = (f"entity {letter.recipient}" if letter.recipient_kind == "entity"
           else f"{letter.recipient} (entity {letter.entity})")
    n_ids = len(letter.posts) + len(letter.users)
    story = [
        p("Deletion notice (R9)", title),
        p(f"To: {who}"),
        p(f"Notice: {letter.notice_id}"),
        p(f"Opened: {letter.opened}"),
        p(f"Delete by: {letter.deadline}", head),
        Spacer(1, 8),
        p(f"X has asked for the deletion of content that was delivered to you. Delete "
          f"{len(letter.posts):,} post(s) and everything of {len(letter.users):,} user(s) "
          f"listed below — {n_ids:,} ID(s) in all — from {len(letter.deliveries):,} "
          f"deliver{'y' if len(letter.deliveries) == 1 else 'ies'}, by {letter.deadline}."),
        p("What the policy says", head),
        p(letter.policy),
    ]
    if letter.sources:
        story.append(p("Deletion list(s): " + ", ".join(letter.sources), small))
    story.append(p("What was delivered, and what to delete from it", head))
    rows = [["Delivered", "Delivery", "Channel", "What", "File", "Posts", "Users"]]
    for d in letter.deliveries:
        rows.append([d.delivered, d.delivery, d.channel, d.kind, d.file or "—",
                     f"{d.posts:,}", f"{d.users:,}"])
    cells = [[p(str(c), small) for c in row] for row in rows]
    table = Table(cells, colWidths=_widths(rows, f.base, small.fontSize), repeatRows=1)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#9aa3b2")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8ebf0")),
        ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story.append(table)
    if letter.id_files:
        story.append(p("The IDs", head))
        story.append(p("Every ID to delete is in the enclosed ID file(s), one decimal ID per "
                       "line: " + ", ".join(letter.id_files)))
    for label, ids in (("Post IDs", letter.posts), ("User IDs", letter.users)):
        if ids:
            more = f" (the first {SHOWN:,} of {len(ids):,})" if len(ids) > SHOWN else ""
            story.append(p(f"{label}{more}", head))
            story.append(p(" ".join(str(i) for i in list(ids)[:SHOWN]), small))
    story.append(p("Confirming", head))
    if letter.acknowledged:
        story.append(p(f"Deletion confirmed {letter.acknowledged}."))
    else:
        story.append(p("Once deleted, confirm the deletion to your compliance contact, naming "
                       f"this notice ({letter.notice_id}); they record who confirmed it."))
    for k, v in letter.extra.items():
        story.append(p(f"{k}: {v}", small))
    label = f"{letter.sender} deletion notice {letter.notice_id}"
    doc = BaseDocTemplate(stream, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN,
                          topMargin=MARGIN, bottomMargin=MARGIN,
                          title=f"Deletion notice {letter.notice_id}", author=letter.sender,
                          creator="gatekeeper", subject="R9 deletion notice",
                          initialFontName=f.base)
    frame = Frame(MARGIN, MARGIN, WIDTH, PAGE[1] - 2 * MARGIN, id="body", leftPadding=0,
                  rightPadding=0, topPadding=0, bottomPadding=0)
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame])])
    doc.build(story, canvasmaker=_numbered(label, f.base, PAGE, MARGIN))
    return int(doc.page)
