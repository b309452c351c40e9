"""Benchmark the PDF export against reportlab platypus chunked LongTables, side by side.

Both sides read the same generated dataset (50,000 demo posts in fifteen languages, gzipped
twarc2 JSONL, as an export reads a stored dataset) and write the same rows in the same columns
with the same embedded fonts, split into the same per-character font runs. The alternative is
the obvious one: one platypus LongTable per chunk of rows (one big table costs O(n²) to split),
Paragraph cells, the header row repeated, a page number in the footer, each paragraph put in
visual order and shaped by reportlab's own HarfBuzz shaping (ParagraphStyle shaping=1), as the
export shapes. Our export also runs with shaping switched off, to show what shaping costs, and
a fourth side only reads the dataset, to show what the reading costs both sides.

Each run is a fresh interpreter started with ``python -c`` (`common.run_fresh`) that imports
only its side (this module imports nothing of any side at its top) and reports its wall time
and its own peak resident memory, the VmHWM of /proc/self/status — not ``ru_maxrss``, which
Linux carries from the parent across exec. Every side runs ``--rounds`` times (3), the order
reversed every other round, and the medians count (each run is listed). Prints one table and
the goals; exits 1 if a goal fails.

Run from the repository root (the LongTables side takes ~9 minutes a run at 50,000 posts)::

    python bench/exports_pdf.py
    python bench/exports_pdf.py --posts 10000   # three rounds in ~10 minutes
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's exports/, whatever checkout is installed

# Nothing of the sides at the top: a side's fresh interpreter imports this module, and what it
# imports here would count in every side's peak (the demo generator alone brings redis and the
# Gate, ~24 MB, which no export loads).
from common import machine_line, print_goals, print_table, run_fresh  # noqa: E402

ABOUT = {"recipient": "ana (acme-analytics)", "dataset": "demo", "filters": "none"}
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


# --- the alternative: platypus, chunked LongTables ----------------------------------------------


def longtable(posts: Any, out: Any, chunk: int) -> tuple[int, int]:
    """The same rows as platypus LongTables of `chunk` rows each; (rows, pages) written."""
    from bidi import get_display
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import LongTable, Paragraph, SimpleDocTemplate, Spacer, TableStyle

    from exports import pdf
    from exports.columns import about_rows, post_url
    from exports.fonts import fontset

    fonts = fontset()
    names = fonts.register()
    style = ParagraphStyle("cell", fontName=names[0], fontSize=7.5, leading=9.5, shaping=1)
    right = ParagraphStyle("right", parent=style, alignment=2)

    def markup(text: str) -> str:
        """Paragraph markup: placeholders, visual order, a <font> per run, <br/> per line."""
        paras = []
        for para in text.replace("\r\n", "\n").split("\n"):
            if pdf.RTL.search(para):
                para = get_display(para)
            para = fonts.clean(para)[0]
            paras.append("".join(f'<font name="{names[face]}">{escape(run)}</font>'
                                 for face, run in fonts.runs(para)))
        return "<br/>".join(paras)

    widths = [c.width or 0 for c in pdf.COLUMNS]
    widths[pdf.TEXT_COLUMN] = pdf.PAGE_W - 56 - sum(widths)
    header = [Paragraph(c.title, right if c.right else style) for c in pdf.COLUMNS]
    table_style = TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.94, 0.94, 0.94)),
        ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 3), ("BOTTOMPADDING", (0, 0), (-1, -1), 3)])
    story: list[Any] = [Paragraph("X posts, hydrated: PDF export", style)]
    story += [Paragraph(markup(f"{k}: {v}"), style) for k, v in about_rows(ABOUT, {})]
    story.append(Spacer(1, 8))
    rows: list[list[Any]] = []
    written = 0

    def flush() -> None:
        if rows:
            story.append(LongTable([header, *rows], colWidths=widths, repeatRows=1,
                                   style=table_style))
            rows.clear()

    for post in posts:
        cells = []
        for i, c in enumerate(pdf.COLUMNS):
            text = markup(c.value(post))
            if i == pdf.TEXT_COLUMN:
                url = post_url(post["id"], (post.get("author") or {}).get("username"))
                text += f'<br/><link href="{escape(url)}" color="blue">{escape(url)}</link>'
            cells.append(Paragraph(text, right if c.right else style))
        rows.append(cells)
        written += 1
        if len(rows) == chunk:
            flush()
    flush()

    def footer(canvas: Any, doc: Any) -> None:
        canvas.setFont(names[0], 6.5)
        canvas.drawString(28, 28, f"hydrated X content for {ABOUT['recipient']}: not to be "
                                  "made publicly available (R7)")
        canvas.drawRightString(pdf.PAGE_W - 28, 28, f"page {doc.page}")

    doc = SimpleDocTemplate(out, pagesize=(pdf.PAGE_W, pdf.PAGE_H), leftMargin=28,
                            rightMargin=28, topMargin=28, bottomMargin=42)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return written, doc.page


class Unshaped:
    """A shaper that shapes nothing: each character its own glyph, as before issue 12."""

    def __init__(self, fonts: Any) -> None:
        self.widths = fonts.widths()

    def shape_line(self, line: str) -> str:
        return line

    def width(self, text: str) -> float:
        return sum(map(self.widths.__getitem__, text))


# --- one side in a fresh process --------------------------------------------------------------


def child(side: str, data_arg: str, out_arg: str, chunk_arg: str) -> dict[str, Any]:
    """One side's figures, measured in its fresh interpreter (`common.run_fresh`, which adds
    the process's own VmHWM)."""
    from gatekeeper.domain.formats import iter_posts

    data, out, chunk = Path(data_arg), Path(out_arg), int(chunk_arg)
    t0 = time.perf_counter()
    posts = iter_posts(data)
    size = pages = 0
    if side == "read":
        rows = sum(1 for _ in posts)
    else:
        with open(out, "wb") as f:
            if side in ("ours", "unshaped"):
                from exports import pdf

                if side == "unshaped":
                    pdf.shaper = Unshaped  # type: ignore[assignment]
                writer = pdf.PdfWriter(f, about=ABOUT)
                for post in posts:
                    writer.add(post)
                rows, pages = writer.close(), len(writer.pages)
            else:
                rows, pages = longtable(posts, f, chunk)
        size = out.stat().st_size
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds, "bytes": size, "pages": pages}


def run_side(side: str, data: Path, out: Path, chunk: int) -> dict[str, Any]:
    return run_fresh(side, "exports_pdf", "child", [side, data, out, chunk], ROOT)


def machine() -> list[str]:
    import reportlab

    return [machine_line(),
            f"software: Python {platform.python_version()}, reportlab {reportlab.Version}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=50_000, help="generated posts")
    parser.add_argument("--chunk", type=int, default=500, help="rows per LongTable")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of every side, in alternating order (the medians count)")
    args = parser.parse_args()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    sides = ("ours", "unshaped", "longtable", "read")
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="gk-bench-pdf-") as tmp:
        from gatekeeper.domain.demo import write_demo_dataset

        data = Path(tmp) / "demo.jsonl.gz"
        write_demo_dataset(data, posts=args.posts, seed=7, anchor=ANCHOR)
        # Every side `rounds` times, the order reversed every other round, so that no side
        # always runs beside the same neighbour on this shared machine: medians of each.
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                got = run_side(side, data, Path(tmp) / f"{side}.pdf", args.chunk)
                runs[side].append(got)
                print(f"round {r + 1}/{args.rounds}: {side:<9} {got['seconds']:7.1f} s "
                      f"{got['peak_mb']:5.0f} MB", file=sys.stderr, flush=True)
    res = {side: {**done[-1], **{k: median(r[k] for r in done)
                                 for k in ("seconds", "peak_mb", "baseline_mb", "bytes")}}
           for side, done in runs.items()}
    ours, theirs, read = res["ours"], res["longtable"], res["read"]
    unshaped = res["unshaped"]
    short = [side for side, done in runs.items() if any(r["rows"] != args.posts for r in done)]
    ours_max = max(r["peak_mb"] for r in runs["ours"])

    rows: list[tuple[str, str, str, str]] = []

    def row(metric: str, a: float, b: float, fmt: str, better_low: bool = True) -> None:
        factor = (b / a if better_low else a / b) if a and b else float("nan")
        rows.append((metric, format(a, fmt), format(b, fmt), f"{factor:,.1f}x"))

    row("wall time, whole export (s)", ours["seconds"], theirs["seconds"], ",.1f")
    row("posts per second", args.posts / ours["seconds"], args.posts / theirs["seconds"],
        ",.0f", better_low=False)
    row("peak resident memory (MB)", ours["peak_mb"], theirs["peak_mb"], ",.0f")
    row("file size (MB)", ours["bytes"] / 1e6, theirs["bytes"] / 1e6, ",.1f")
    rows.append(("pages", f"{ours['pages']:,}", f"{theirs['pages']:,}", "-"))

    head = ("metric", "gatekeeper", "LongTables", "factor")
    print(f"gatekeeper PDF export vs reportlab platypus LongTables of {args.chunk:,} rows, "
          f"{args.posts:,} demo posts")
    print(f"command: {command}")
    for fact in machine():
        print(fact)
    print(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work "
          f"shares the cores); every side {args.rounds} times, the order reversed every other "
          "round; medians")
    print()
    print_table(head, rows)
    print("factor: how many times better gatekeeper is (>1 = faster/smaller)")
    for side, done in runs.items():
        print(f"  runs of {side}: " + ", ".join(f"{r['seconds']:.1f} s / {r['peak_mb']:.0f} MB"
                                                for r in done))
    print(f"each side in a fresh interpreter (`python -c`, importing only its side), reading the "
          f"gzipped JSONL itself; reading alone takes {read['seconds']:.1f} s and "
          f"{read['peak_mb']:,.0f} MB peak; peak = the process's own VmHWM (interpreter, fonts "
          f"and reportlab included; the bare interpreter is {ours['baseline_mb']:.0f} MB)")
    cost = ours["seconds"] - unshaped["seconds"]
    print(f"shaping (HarfBuzz, complex scripts only): our export without it takes "
          f"{unshaped['seconds']:.1f} s and {unshaped['peak_mb']:,.0f} MB peak; shaping costs "
          f"{cost:.1f} s ({cost / unshaped['seconds']:.0%} more)")

    speedup = theirs["seconds"] / ours["seconds"]
    goals = [
        (f"PDF >= 6x faster than the chunked LongTables ({speedup:,.1f}x)", speedup >= 6),
        (f"peak memory <= 200 MB in every run ({ours_max:,.0f} MB at most)", ours_max <= 200),
        ("every side wrote every post in every run (same work compared)"
         + (f"; short: {', '.join(short)}" if short else ""), not short),
    ]
    code = print_goals(goals)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
