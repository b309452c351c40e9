"""Complex scripts shaped with HarfBuzz, as reportlab's own shaping does it (`uharfbuzz` on the
HarfBuzz face reportlab's TTFont opens), for the PDF writer of `exports.pdf`.

Devanagari and the other Indic scripts, Thai, Lao, Khmer, Myanmar, Arabic and Hebrew with points
are not drawn character by character: HarfBuzz picks the conjuncts and ligatures, puts the short
i before its consonant, joins Arabic letters and places every mark. Each glyph it returns comes
back as a character the writer already knows how to draw: the text's own character when the
glyph is that character's plain glyph at its plain place, else a private character of
`FontSet.glyph_char` that carries the glyph id, its advance and its offsets (reportlab maps
glyphs without a character to private code points the same way).

Latin, Greek, Cyrillic and CJK text is left as it is (no shaping needed for it here, and it is
most of the text: shaping it would only cost time).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

import uharfbuzz as hb

from exports.fonts import FontSet

# Scripts whose characters change shape, order or place in context: combining marks, Hebrew
# points, Arabic, Syriac, Thaana, N'Ko, the Indic scripts, Sinhala, Thai, Lao, Tibetan, Myanmar,
# Khmer, the joiners, Arabic presentation forms.
COMPLEX = re.compile("[\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0600-\u08ff\u0900-\u0dff"
                     "\u0e00-\u0fff\u1000-\u109f\u1780-\u17ff\u1a00-\u1aff\u1dc0-\u1dff"
                     "\u200c\u200d\u20d0-\u20ff\ua8e0-\ua8ff\ufb1d-\ufdff\ufe20-\ufe2f"
                     "\ufe70-\ufefc]")
RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc\U00010800-\U00010fff"
                 "\U0001e800-\U0001efff]")
JOINERS = frozenset("\u200c\u200d\u034f\ufe00\ufe01\ufe0e\ufe0f")


class Shaper:
    """Shapes runs of one face with HarfBuzz; caches what it measured and shaped."""

    def __init__(self, fonts: FontSet) -> None:
        self.fonts = fonts
        # reportlab's HarfBuzz font of each face (TTFont.hbFont: uharfbuzz on the same bytes
        # the subsets are cut from); positions come in font units, scaled to 1/1000 em.
        self.hb = [t.hbFont() for t in fonts.ttfonts]
        self.scale = [1000 / f.face.upem for f in self.hb]
        self._shaped: dict[tuple[int, str, bool], str] = {}
        self._widths: dict[str, float] = {}
        self._one: dict[str, bool] = {}

    def _runs(self, text: str) -> list[tuple[int, str]]:
        """`text` (cleaned) in runs of one face; a mark or joiner stays with the run before it
        when that run's font has it, so a cluster is never cut between two fonts."""
        face_of = self.fonts.face
        runs: list[tuple[int, list[str]]] = []
        for ch in text:
            f = face_of(ch)
            if runs and f != runs[-1][0]:
                cur = runs[-1][0]
                if cur >= 0 and (ch in JOINERS or unicodedata.category(ch)[0] == "M") and (
                        ch in JOINERS or ord(ch) in self.fonts.faces[cur].charToGlyph):
                    f = cur
            if runs and runs[-1][0] == f:
                runs[-1][1].append(ch)
            else:
                runs.append((f, [ch]))
        return [(f, "".join(chars)) for f, chars in runs]

    def _shape(self, face: int, text: str, rtl: bool) -> tuple[list[Any], list[Any]]:
        buf = hb.Buffer()
        buf.add_str(text)
        buf.guess_segment_properties()
        buf.direction = "rtl" if rtl else "ltr"
        buf.cluster_level = hb.BufferClusterLevel.MONOTONE_CHARACTERS
        hb.shape(self.hb[face], buf)
        return buf.glyph_infos, buf.glyph_positions

    def shape_run(self, face: int, text: str, rtl: bool) -> str:
        """`text` (logical order, all of `face`) shaped: glyph characters in visual order."""
        key = (face, text, rtl)
        done = self._shaped.get(key)
        if done is not None:
            return done
        infos, positions = self._shape(face, text, rtl)
        k = self.scale[face]
        starts = sorted({i.cluster for i in infos})
        ends = dict(zip(starts, [*starts[1:], len(text)], strict=True))
        count: dict[int, int] = {}
        for i in infos:
            count[i.cluster] = count.get(i.cluster, 0) + 1
        fonts, widths, seen, out = self.fonts, self.fonts.widths(), set(), []
        plain = fonts.faces[face].charToGlyph
        for info, pos in zip(infos, positions, strict=True):
            c, gid = info.cluster, info.codepoint
            piece = text[c:ends[c]]
            adv = round(pos.x_advance * k, 3)
            dx, dy = round(pos.x_offset * k, 3), round(pos.y_offset * k, 3)
            first = c not in seen
            seen.add(c)
            if (first and len(piece) == 1 and count[c] == 1 and plain.get(ord(piece)) == gid
                    and fonts.face(piece) == face and widths.get(piece) == adv
                    and not dx and not dy):
                out.append(piece)
            else:
                out.append(fonts.glyph_char(face, gid, adv, dx, dy, piece if first else ""))
        if len(self._shaped) > 100_000:  # a bound on memory: most runs are words that repeat
            self._shaped.clear()
        done = self._shaped[key] = "".join(out)
        return done

    def shape_line(self, line: str) -> str:
        """A cleaned line in visual order (as bidi put it) with its complex runs shaped."""
        if not COMPLEX.search(line):
            return line
        out = []
        for face, run in self._runs(line):
            if face < 0 or not COMPLEX.search(run):
                out.append(run)
            elif RTL.search(run):  # bidi reversed it: shape it in logical order
                out.append(self.shape_run(face, run[::-1], True))
            else:
                out.append(self.shape_run(face, run, False))
        return "".join(out)

    def width(self, text: str) -> float:
        """The advance of cleaned `text` (logical order) as drawn after shaping, 1/1000 em."""
        w = self._widths.get(text)
        if w is None:
            widths = self.fonts.widths()
            w = 0.0
            for face, run in self._runs(text):
                if face >= 0 and COMPLEX.search(run):
                    run = self.shape_run(face, run, RTL.search(run) is not None)
                w += sum(map(widths.__getitem__, run))
            if len(self._widths) > 100_000:
                self._widths.clear()
            self._widths[text] = w
        return w

    def one_glyph(self, seq: str) -> bool:
        """Whether one font of the chain draws the emoji sequence `seq` as a single glyph."""
        found = self._one.get(seq)
        if found is None:
            found = False
            for face, font in enumerate(self.fonts.faces):
                if ord(seq[0]) in font.charToGlyph:
                    infos, _ = self._shape(face, seq, False)
                    found = len(infos) == 1 and infos[0].codepoint != 0
                    break
            self._one[seq] = found
        return found


@functools.cache
def shaper(fonts: FontSet) -> Shaper:
    """The shaper of a FontSet (one per process, as the FontSet)."""
    return Shaper(fonts)
