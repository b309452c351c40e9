"""Charts for the compliance pages, drawn on the server as inline SVG (no third-party scripts).

Each chart is an accessible image (`role="img"`, a `<title>` that states what it shows in words)
and every piece of text in it is escaped, so a name can never inject markup.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from html import escape

from markupsafe import Markup

NEAR = 0.8  # from this ratio a bar turns amber (dashboard.NEAR_LIMIT says the same)
ACCENT, AMBER, BAD, TRACK, INK, MUTED, GRID = (
    "#1f5fbf", "#b26a00", "#a4262c", "#e8ebf1", "#1d2330", "#5b6475", "#d9dee7")
EPOCH = date(1970, 1, 1)


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def compact(n: float) -> str:
    """A number for an axis: 950, 12k, 1.5M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            value = n / size
            text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"
            return text + suffix
    return f"{n:.0f}"


def day_label(day: int) -> str:
    """An epoch day (days since 1970-01-01, UTC) as "24 Nov"."""
    return (EPOCH + timedelta(days=day)).strftime("%d %b").lstrip("0")


def colour(ratio: float | None) -> str:
    """The fill of a usage bar: blue, amber from 80 % of the limit, red at the limit."""
    if ratio is None:
        return MUTED
    return BAD if ratio >= 1 else AMBER if ratio >= NEAR else ACCENT


def bar(used: int, limit: int | None, *, width: int = 160, height: int = 12,
        label: str = "used") -> Markup:
    """A horizontal usage bar of `used` against `limit` (None: no limit, drawn as a track)."""
    ratio = None if limit is None else used / max(limit, 1)
    if ratio is None:
        title = f"{used:,} {label}; no limit applies"
    else:
        title = f"{used:,} {label} of {limit:,} ({ratio:.0%})"
    filled = 0 if ratio is None else round(min(ratio, 1.0) * width)
    r = height / 2
    return Markup(
        f'<svg class="chart-bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_e(title)}</title>"
        f'<rect width="{width}" height="{height}" rx="{r}" fill="{TRACK}"/>'
        + (f'<rect width="{filled}" height="{height}" rx="{r}" fill="{colour(ratio)}"/>'
           if filled else "")
        + "</svg>")


def _nice_ceiling(n: float) -> float:
    """The smallest 1, 2, 2.5, 4 or 5 times a power of ten that is at least n and whose half is
    whole: the axis is labelled at 0, half and top, and counts have no halves (at least 2)."""
    power = 10 ** (len(str(int(max(n, 1)))) - 1)
    for step in (1, 2, 2.5, 4, 5, 10, 20):
        top = step * power
        if top >= max(n, 2) and (top / 2).is_integer():
            return top
    raise AssertionError("unreachable: 20 times a power of ten is even and at least n")


def _days(series: dict[int, int], days: int, end_day: int | None) -> list[tuple[int, int]]:
    if end_day is None:
        end_day = datetime.now(UTC).date().toordinal() - EPOCH.toordinal()
    return [(d, series.get(d, 0)) for d in range(end_day - days + 1, end_day + 1)]


def daily(series: dict[int, int], days: int = 30, limit: int | None = None, *,
          end_day: int | None = None, title: str = "Post IDs shared per UTC day",
          width: int = 1000, height: int = 190) -> Markup:
    """A bar chart of an amount per day (epoch day -> amount) over the last `days` days ending
    at `end_day`, with axis labels, an optional reference line at `limit`, and a title that
    states the total and the busiest day."""
    points = _days(series, days, end_day)
    total = sum(n for _, n in points)
    peak_day, peak = max(points, key=lambda p: (p[1], p[0]))
    summary = (f"{title}, {day_label(points[0][0])} to {day_label(points[-1][0])}: "
               f"{total:,} in all" + (f", most on {day_label(peak_day)} ({peak:,})" if peak
                                      else ", none"))
    left, right, top, bottom = 48, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_ceiling(max(peak, limit or 0))
    step = plot_w / len(points)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / top_value

    parts = [
        f'<svg class="chart-daily" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(summary)}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui, sans-serif" font-size="12">',
        f"<title>{_e(summary)}</title>",
    ]
    for tick in (0, top_value / 2, top_value):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="{GRID}" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
                     f'fill="{MUTED}">{_e(compact(tick))}</text>')
    for i, (day, n) in enumerate(points):
        if n:
            h = max(plot_h * n / top_value, 1.5)
            parts.append(f'<rect x="{left + i * step + step * 0.15:.1f}" y="{top + plot_h - h:.1f}"'
                         f' width="{step * 0.7:.1f}" height="{h:.1f}" fill="{ACCENT}">'
                         f"<title>{_e(day_label(day))}: {n:,}</title></rect>")
    for i in sorted({0, len(points) // 2, len(points) - 1}):
        anchor = "start" if i == 0 else "end" if i == len(points) - 1 else "middle"
        x = left + i * step + (0 if anchor == "start" else step if anchor == "end" else step / 2)
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}" '
                     f'fill="{MUTED}">{_e(day_label(points[i][0]))}</text>')
    if limit is not None:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(limit):.1f}" '
                     f'y2="{y(limit):.1f}" stroke="{BAD}" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{width - right}" y="{y(limit) - 4:.1f}" text-anchor="end" '
                     f'fill="{BAD}">limit {_e(compact(limit))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def spark(series: dict[int, int], days: int = 30, *, end_day: int | None = None,
          width: int = 90, height: int = 22, label: str = "Post IDs per day") -> Markup:
    """A tiny daily bar chart for a table row."""
    points = _days(series, days, end_day)
    peak = max(n for _, n in points)
    total = sum(n for _, n in points)
    title = f"{label}, last {days} days: {total:,} in all" + (f", at most {peak:,} a day"
                                                              if peak else "")
    step = width / len(points)
    bars = "".join(
        f'<rect x="{i * step:.1f}" y="{height - max(height * n / peak, 1):.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{max(height * n / peak, 1):.1f}" '
        f'fill="{ACCENT}"/>' for i, (_, n) in enumerate(points) if n)
    return Markup(
        f'<svg class="chart-spark" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
        f'<line x1="0" x2="{width}" y1="{height - 0.5}" y2="{height - 0.5}" stroke="{GRID}"/>'
        f"{bars}</svg>")
