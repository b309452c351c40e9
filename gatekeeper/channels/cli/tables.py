"""How CLI commands lay out what they print: aligned tables with headers, counted nouns
("1 post", "2 posts") and a progress bar that only a person at a terminal sees.

`--json` output never goes through here: scripts read JSON, people read these.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

T = TypeVar("T")

# Irregular plurals the CLI prints; anything else takes an "s" (or pass `many`).
_PLURALS = {"entity": "entities"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """`n` and `word`, its plural unless n is 1: "1 post", "2 posts", "1,000 entities"."""
    if n == 1:
        return f"1 {word}"
    return f"{n:,} {many or _PLURALS.get(word) or word + 's'}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *,
          right: Sequence[str] = (), empty: str = "") -> str:
    """Rows under their headers, each column as wide as its widest cell (two spaces between).

    Columns named in `right` (numbers) are right-aligned; None shows as "-". With no rows,
    `empty` alone — a header over nothing reads as an error to people.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    if not cells:
        return empty
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if h in right else v.ljust(w)
                         for h, v, w in zip(headers, values, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def on_terminal() -> bool:
    """Whether a person is watching stderr (where progress goes); false when piped or
    captured, so logs and scripts get no bar noise."""
    return sys.stderr.isatty()


def note(text: str) -> None:
    """A line of "what is happening now" on stderr for a person watching; nothing when piped
    (for work whose steps are not countable, like laying out a PDF)."""
    if on_terminal():
        click.echo(text, err=True)


@contextlib.contextmanager
def progress(items: Iterable[T], label: str, length: int | None = None) -> Iterator[Iterable[T]]:
    """`items`, drawn as a progress bar on stderr when it is a terminal, else passed through
    untouched (click.progressbar would still print its label when piped)."""
    if not on_terminal():
        yield items
        return
    # A count with no bar when the total is unknown (an empty bar that never fills misleads);
    # redrawn every STEP items, not each one, so a million rows are not slowed by the terminal.
    known = length is not None
    bar: Any
    with click.progressbar(
            length=length or 0, label=label, show_pos=known, show_percent=known,
            show_eta=known, bar_template="%(label)s  [%(bar)s]  %(info)s" if known
            else "%(label)s  %(info)s",
            item_show_func=None if known else lambda n: None if n is None else f"{n:,}",
            file=sys.stderr) as bar:

        def counted() -> Iterator[T]:
            n = 0
            for n, item in enumerate(items, 1):
                yield item
                if n % STEP == 0:
                    bar.update(STEP, n)
            bar.update(n % STEP, n)

        yield counted()


STEP = 500


def size_of(path: Path) -> int:
    """A file's bytes, a bar's length (0 if unreadable: the command names the problem)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def meter(label: str, length: int | None) -> Iterator[Callable[[int], None] | None]:
    """A callback that advances a bar of `length` units (bytes, rows) on a terminal — a
    running count when the length is not known (None); None when stderr is piped, so the work
    it is given to does not even count."""
    if not on_terminal():
        yield None
        return
    if length is None:
        counter: Any
        with click.progressbar(length=0, label=label, show_pos=False, show_percent=False,
                               show_eta=False, bar_template="%(label)s  %(info)s",
                               item_show_func=lambda n: None if n is None else f"{n:,}",
                               file=sys.stderr) as counter:
            seen = 0

            def count(n: int) -> None:
                nonlocal seen
                seen += n
                counter.update(n, seen)

            yield count
        return
    with click.progressbar(length=length, label=label,
                           file=sys.stderr) as bar:
        yield bar.update
