"""The fonts the PDF export embeds: where they are, which one draws each character.

reportlab picks no fallback font per character, so this module does: a chain of TrueType-outline
fonts shipped inside this package (``exports/fontdata/``, see its SOURCES.md: Debian's builds of
the upstream Noto fonts, SIL OFL 1.1, and WenQuanYi Micro Hei, Apache License 2.0), and for
every character the first font of the chain whose character map has it. Complex scripts are
shaped with HarfBuzz in `exports.shaping`; its glyphs come back here as private characters.

- Noto Sans (Latin, Greek, Cyrillic), Noto Sans Arabic, Hebrew, the Indic and South-East Asian
  scripts, Georgian, Armenian, Ethiopic, and Noto Sans Symbols 2 / Symbols (the monochrome
  pictographs Debian ships: ❤, ✨, 👍, ☀ and about 2,600 more).
- WenQuanYi Micro Hei, cut to its CJK, kana and Hangul ranges: glyf outlines for Chinese,
  Japanese kana and all 11,172 Hangul syllables. Noto Sans CJK is CFF (.otf), which reportlab
  cannot embed, and reportlab's own CID fonts are not embedded at all.

A character no font has is replaced by a visible ``[U+XXXX]`` and counted; so are control
characters and noncharacters. An emoji sequence (a ZWJ family, a flag, a skin tone, a keycap,
a subdivision flag) that no font draws as one glyph becomes ONE visible replacement naming it
(``[flag DE]``, ``[U+1F468+200D+1F469]``): drawing its parts one by one would show a different
message. Default-ignorable characters (joiners, variation selectors, tag characters, bidi
controls) have no glyph of their own in any renderer: a font that maps them draws them (zero
width), otherwise they are left out.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont, TTFontFace

MISSING = -1  # no font has the character: it becomes a visible placeholder
IGNORED = -2  # default-ignorable and no font has it: drawn as nothing, as every renderer does
GLYPHS = 0xF0000  # from here on (planes 15-16, private use): shaped glyphs, see `glyph_char`


@dataclass(frozen=True)
class FontFile:
    """One font of the chain: a file shipped in ``exports/fontdata/``."""

    resource: str
    index: int = 0  # the font's index inside a .ttc collection

    def path(self) -> Path | None:
        path = importlib.resources.files("exports").joinpath("fontdata", self.resource)
        return Path(str(path)) if path.is_file() else None


def _noto(name: str) -> FontFile:
    return FontFile(f"{name}-Regular.ttf")


# Fallback order: the first font with a character draws it. Noto Sans first, so Latin digits and
# punctuation look the same in every post; Symbols 2 before Symbols, so that ❤ and ✨ look like
# the pictographs they are wherever they appear.
CHAIN: tuple[FontFile, ...] = (
    _noto("NotoSans"),
    _noto("NotoSansArabic"),
    _noto("NotoSansHebrew"),
    *(_noto(f"NotoSans{script}") for script in (
        "Devanagari", "Bengali", "Gurmukhi", "Gujarati", "Oriya", "Tamil", "Telugu", "Kannada",
        "Malayalam", "Sinhala", "Thai", "Lao", "Khmer", "Myanmar", "Georgian", "Armenian",
        "Ethiopic")),
    FontFile("WenQuanYiMicroHei-CJK.ttf"),
    _noto("NotoSansSymbols2"),
    _noto("NotoSansSymbols"),
)
INSTALL_HINT = "reinstall gatekeeper: the fonts ship in its exports/fontdata/ (package data)"

_IGNORABLE = (  # Unicode's Default_Ignorable_Code_Point ranges
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))

# Emoji sequences: one symbol made of several characters. A font that has a ligature for one
# draws it (the shaper finds it); otherwise the whole sequence becomes one placeholder.
_PICTO = "\u00a9\u00ae\u203c-\u3299\U0001f000-\U0001faff"
_MOD = "\U0001f3fb-\U0001f3ff"
_PART = f"[{_PICTO}](?:[{_MOD}]|\ufe0f|\u20e3)*"
EMOJI_SEQUENCE = re.compile(
    "[\U0001f1e6-\U0001f1ff]{2}"  # a flag: two regional indicators
    "|\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f"  # a subdivision flag: tag characters
    "|[0-9#*]\ufe0f?\u20e3"  # a keycap
    f"|{_PART}(?:\u200d{_PART})+"  # a ZWJ sequence (families, professions, ...)
    f"|[{_PICTO}][{_MOD}]")  # a skin tone
# Characters that only mean something inside such a sequence: never on `clean`'s fast path.
_SEQUENCE_PARTS = frozenset(
    ["\u200d", "\u20e3", *map(chr, range(0x1F1E6, 0x1F200)), *map(chr, range(0x1F3FB, 0x1F400)),
     *map(chr, range(0xE0020, 0xE0080))])


class FontsMissing(RuntimeError):
    """The base font of the chain is not installed: no PDF can be written."""


def placeholder(ch: str) -> str:
    """What stands in for a character that cannot be drawn: visible, and names the character."""
    return f"[U+{ord(ch):04X}]"


def sequence_placeholder(seq: str) -> str:
    """What stands in for an emoji sequence no font draws as one glyph: one visible symbol."""
    cps = [ord(c) for c in seq]
    if len(cps) == 2 and all(0x1F1E6 <= c <= 0x1F1FF for c in cps):
        return "[flag " + "".join(chr(c - 0x1F1E6 + 65) for c in cps) + "]"
    if cps[-1] == 0xE007F and cps[0] == 0x1F3F4:
        return "[flag " + "".join(chr(c - 0xE0000) for c in cps[1:-1]).upper() + "]"
    if cps[-1] == 0x20E3:
        return f"[keycap {seq[0]}]"
    return "[U+" + "+".join(f"{c:04X}" for c in cps if c != 0xFE0F) + "]"


def _ignorable(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _IGNORABLE)


def _drawable(cp: int) -> bool:
    """False for what must never reach a font: controls, surrogates, noncharacters, and the
    private planes this module keeps for shaped glyphs."""
    if cp < 0x20 or 0x7F <= cp <= 0x9F or 0xD800 <= cp <= 0xDFFF or 0xFDD0 <= cp <= 0xFDEF:
        return False
    return (cp & 0xFFFE) != 0xFFFE and cp < GLYPHS


class FontSet:
    """The shipped chain, loaded once per process and shared by every export (read-only, except
    `subset` and `glyph_char`, which are serialised)."""

    def __init__(self, chain: tuple[FontFile, ...] = CHAIN) -> None:
        found = [(f, f.path()) for f in chain]
        self.files = [f for f, p in found if p is not None]
        self.missing = [f for f, p in found if p is None]
        if not found[0][1]:
            raise FontsMissing(f"exports/fontdata/{chain[0].resource} is missing: "
                               + INSTALL_HINT)
        # reportlab's TTFont: its face reads the file and cuts subsets, its `hbFace` is the
        # HarfBuzz face reportlab's own shaping uses (exports.shaping shapes with it).
        self.ttfonts = [TTFont(f"gk-font-{i}", str(p), subfontIndex=f.index)
                        for i, (f, p) in enumerate((f, p) for f, p in found if p)]
        self.faces: list[TTFontFace] = [t.face for t in self.ttfonts]
        base = self.faces[0].charToGlyph
        if any(cp not in base for cp in range(0x20, 0x7F)):
            raise FontsMissing(f"{self.files[0].resource} lacks printable ASCII")
        self._face: dict[str, int] = {}  # char -> face index, MISSING or IGNORED
        self._width: dict[str, float] = {}  # char -> advance in 1/1000 em (drawable chars only)
        self._good: set[str] = {"\n"}  # chars `clean` lets through unchanged
        self._lock = threading.Lock()
        self._registered: list[str] | None = None
        # shaped glyph char -> glyph id, x and y offset (1/1000 em), the text it reads as
        self.glyphs: dict[str, tuple[int, float, float, str]] = {}
        self._glyph_keys: dict[tuple[int, int, float, float, float, str], str] = {}
        for cp in range(0x20, 0x7F):  # placeholders are made of these
            self.face(chr(cp))

    def face(self, ch: str) -> int:
        """The index of the face that draws `ch`, or MISSING / IGNORED."""
        try:
            return self._face[ch]
        except KeyError:
            pass
        cp = ord(ch)
        found = MISSING
        if _drawable(cp):
            found = next((i for i, f in enumerate(self.faces) if cp in f.charToGlyph), MISSING)
            if found == MISSING and _ignorable(cp):
                found = IGNORED
        if found >= 0:
            self._width[ch] = round(float(self.faces[found].charWidths.get(cp, 0)), 3)
            if ch not in _SEQUENCE_PARTS:
                self._good.add(ch)
        self._face[ch] = found
        return found

    def widths(self) -> dict[str, float]:
        """Advance widths (1/1000 em) of every character `clean` has let through so far, and
        of every shaped glyph."""
        return self._width

    def clean(self, text: str) -> tuple[str, int]:
        """`text` with every character no font can draw replaced by its placeholder, and every
        emoji sequence no font draws whole by one placeholder; how many were replaced. Tabs
        become spaces, newlines stay (they split paragraphs)."""
        if self._good.issuperset(text):
            return text, 0  # the common case: every character seen before and drawable
        if "\t" in text:
            text = text.replace("\t", " ")
        out: list[str] = []
        replaced = 0
        pos = 0
        for m in EMOJI_SEQUENCE.finditer(text) if not text.isascii() else ():
            if self._one_glyph(m.group()):
                continue
            part, n = self._clean_chars(text[pos:m.start()])
            out += [part, sequence_placeholder(m.group())]
            replaced += n + 1
            pos = m.end()
        part, n = self._clean_chars(text[pos:])
        out.append(part)
        return "".join(out), replaced + n

    def _clean_chars(self, text: str) -> tuple[str, int]:
        out: list[str] = []
        replaced = 0
        for ch in text:
            f = self.face(ch) if ch != "\n" else 0
            if f >= 0 and ord(ch) < GLYPHS:
                out.append(ch)
            elif f != IGNORED:
                out.append(placeholder(ch))
                replaced += 1
        return "".join(out), replaced

    def _one_glyph(self, seq: str) -> bool:
        """Whether one font of the chain draws the emoji sequence `seq` as one glyph."""
        from exports.shaping import shaper  # the shaper needs a FontSet: imported when used

        return shaper(self).one_glyph(seq)

    def glyph_char(self, face: int, gid: int, advance: float, dx: float, dy: float,
                   text: str) -> str:
        """A private character that stands for glyph `gid` of `face` as the shaper placed it:
        `advance` and the offsets `dx`, `dy` in 1/1000 em; `text` is what it reads as (the
        cluster's characters for its first glyph, "" for the others). The writer draws it like
        any character (widths, subsets, codes), and `glyphs` tells where to put it."""
        key = (face, gid, advance, dx, dy, text)
        try:
            return self._glyph_keys[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._glyph_keys:
                ch = chr(GLYPHS + len(self._glyph_keys))
                if ord(ch) > 0x10FFFD:
                    raise RuntimeError("more shaped glyph variants than private code points")
                self.faces[face].charToGlyph[ord(ch)] = gid  # for the subsetter
                self.glyphs[ch] = (gid, dx, dy, text)
                self._width[ch] = advance
                self._face[ch] = face
                self._glyph_keys[key] = ch
            return self._glyph_keys[key]

    def text_of(self, ch: str) -> str:
        """What a drawn character reads as (a shaped glyph: its cluster's text)."""
        glyph = self.glyphs.get(ch)
        return ch if glyph is None else glyph[3]

    def runs(self, text: str) -> Iterator[tuple[int, str]]:
        """`text` (cleaned) cut into runs of consecutive characters drawn by the same face."""
        face = self._face
        start, current = 0, -1
        for i, ch in enumerate(text):
            f = face[ch]
            if f != current:
                if i > start:
                    yield current, text[start:i]
                start, current = i, f
        if len(text) > start:
            yield current, text[start:]

    def subset(self, index: int, codes: list[int]) -> bytes:
        """A TrueType file holding only `codes` (code i draws character codes[i]) of face
        `index`, to embed; reportlab's subsetter seeks in the shared face, hence the lock."""
        with self._lock:
            return self.faces[index].makeSubset(codes)

    def register(self) -> list[str]:
        """Register every face with reportlab (for platypus), once; their names in chain order."""
        with self._lock:
            if self._registered is None:
                for ttf in self.ttfonts:
                    pdfmetrics.registerFont(ttf)
                self._registered = [t.fontName for t in self.ttfonts]
            return self._registered


@functools.cache
def fontset() -> FontSet:
    """The process's FontSet (loading the chain takes ~0.1 s; it is done once)."""
    return FontSet()


# --- embedding in one PDF -------------------------------------------------------------------


class Objects(Protocol):
    """Where `Embedding.write` puts its PDF objects (the PDF writer's file)."""

    def reserve(self) -> int: ...
    def obj(self, num: int, body: str) -> None: ...
    def stream_obj(self, num: int, data: bytes, entries: str = "") -> None: ...


JOINER = "\u2060"  # what a shaped cluster's second, third, ... glyph reads as
ESCAPE = str.maketrans({"\\": "\\\\", "(": "\\(", ")": "\\)"})  # in a PDF literal string


def num(x: float) -> str:
    """A number as PDF writes it: at most two decimals, no trailing zeros."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


class Embedding:
    """The fonts of one PDF: which subset and code draws each character, the text operators,
    and at the end the embedded subsets. Simple TrueType fonts of 256 codes each, as reportlab
    makes them; ASCII keeps its own codes in the first, so content streams stay readable."""

    def __init__(self, fonts: FontSet) -> None:
        self.fonts = fonts
        self.subsets: dict[int, list[list[int]]] = {0: [[0] * 32 + list(range(32, 127))]}
        self.codes: dict[str, tuple[str, int]] = {chr(c): ("F0s0", c) for c in range(32, 127)}

    def code(self, ch: str) -> tuple[str, int]:
        """The font resource name and code of `ch` (a character `FontSet.clean` let through)."""
        try:
            return self.codes[ch]
        except KeyError:
            pass
        face = self.fonts.face(ch)
        subsets = self.subsets.setdefault(face, [])
        if not subsets or len(subsets[-1]) == 256:
            subsets.append([0])  # code 0 stays .notdef
        subsets[-1].append(ord(ch))
        self.codes[ch] = found = (f"F{face}s{len(subsets) - 1}", len(subsets[-1]) - 1)
        return found

    def show(self, x: float, y: float, line: str, size: float) -> str:
        """The operators that draw `line` (cleaned, in visual order) from baseline point x, y."""
        if line.isascii():
            return f"BT /F0s0 {size} Tf {x:.2f} {y:.2f} Td ({line.translate(ESCAPE)}) Tj ET\n"
        ops = [f"BT {x:.2f} {y:.2f} Td"]
        font, run = "", bytearray()
        glyphs = self.fonts.glyphs
        for ch in line:
            name, code = self.codes.get(ch) or self.code(ch)
            if name != font:
                if run:
                    ops.append(f"<{run.hex()}> Tj")
                    run = bytearray()
                ops.append(f"/{name} {size} Tf")
                font = name
            glyph = glyphs.get(ch)
            if glyph is not None and (glyph[1] or glyph[2]):
                # A mark the shaper moved off the pen position: shift it there and back
                # (TJ numbers are 1/1000 em, positive to the left), raise it with Ts.
                if run:
                    ops.append(f"<{run.hex()}> Tj")
                    run = bytearray()
                dx, dy = num(glyph[1]), num(glyph[2] * size / 1000)
                ops.append(f"{dy} Ts [{num(-glyph[1])} <{code:02x}> {dx}] TJ 0 Ts")
                continue
            run.append(code)
        ops.append(f"<{run.hex()}> Tj ET\n" if run else "ET\n")
        return " ".join(ops)

    def write(self, pdf: Objects) -> dict[str, int]:
        """Embed every subset used; the font objects' numbers by resource name."""
        widths = self.fonts.widths()
        names: dict[str, int] = {}
        for face, subsets in sorted(self.subsets.items()):
            tt = self.fonts.faces[face]
            for n, codes in enumerate(subsets):
                tag = "".join(chr(65 + (face * 64 + n) // 26 ** k % 26) for k in range(6))
                base = f"{tag}+{tt.name.decode('latin-1')}"
                file_, cmap, desc, font = (pdf.reserve() for _ in range(4))
                data = self.fonts.subset(face, codes)
                pdf.stream_obj(file_, data, f"/Length1 {len(data)}")
                pdf.stream_obj(cmap, to_unicode([self.fonts.text_of(chr(c)) for c in codes]))
                bbox = " ".join(num(v) for v in tt.bbox)
                pdf.obj(desc, f"<< /Type /FontDescriptor /FontName /{base} /Flags 4 /FontBBox "
                              f"[{bbox}] /ItalicAngle {num(tt.italicAngle)} /Ascent "
                              f"{num(tt.ascent)} /Descent {num(tt.descent)} /CapHeight "
                              f"{num(tt.capHeight)} /StemV {num(tt.stemV)} /FontFile2 {file_} "
                              "0 R >>")
                w = " ".join(num(widths[chr(c)]) if c else "0" for c in codes)
                pdf.obj(font, f"<< /Type /Font /Subtype /TrueType /BaseFont /{base} /FirstChar 0 "
                              f"/LastChar {len(codes) - 1} /Widths [{w}] /FontDescriptor {desc} "
                              f"0 R /ToUnicode {cmap} 0 R >>")
                names[f"F{face}s{n}"] = font
        return names


def to_unicode(texts: list[str]) -> bytes:
    """A ToUnicode CMap, code -> the text it reads as (UTF-16, so that emoji are read back too;
    a shaped cluster's first glyph reads as the whole cluster, its other glyphs as U+2060 WORD
    JOINER: invisible, and no reader shows an unmapped glyph's number in its place)."""
    pairs = [f"<{i:02X}> <{(t or JOINER).encode('utf-16-be').hex().upper()}>"
             for i, t in enumerate(texts) if i]
    blocks = [f"{len(pairs[i:i + 100])} beginbfchar\n" + "\n".join(pairs[i:i + 100])
              + "\nendbfchar\n" for i in range(0, len(pairs), 100)]  # 100 at most per block
    return ("/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n/CIDSystemInfo "
            "<< /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n/CMapName "
            "/Adobe-Identity-UCS def\n/CMapType 2 def\n1 begincodespacerange\n<00> <FF>\n"
            "endcodespacerange\n" + "".join(blocks) + "endcmap\nCMapName currentdict /CMap "
            "defineresource pop\nend\nend\n").encode("ascii")
