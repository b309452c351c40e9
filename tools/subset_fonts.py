"""Rebuild exports/fontdata/ from the Debian font packages (how the shipped fonts were made).

    apt-get download fonts-noto-core=20201225-1 fonts-wqy-microhei=0.2.0-beta-3.1
    for d in fonts-*.deb; do dpkg-deb -x "$d" debs; done
    python3 tools/subset_fonts.py debs exports/fontdata

Each font keeps every character and every OpenType layout feature (HarfBuzz shapes with
them); only the TrueType hinting instructions are dropped (a PDF viewer scales outlines
itself), which halves the files. WenQuanYi Micro Hei keeps only the CJK, kana and Hangul
ranges the chain takes it for (Latin comes from Noto Sans). SOURCES.md lists the checksums
of the inputs and outputs (this script prints them, a line a font).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

NOTO = ("NotoSans", "NotoSansArabic", "NotoSansHebrew", "NotoSansDevanagari", "NotoSansBengali",
        "NotoSansGurmukhi", "NotoSansGujarati", "NotoSansOriya", "NotoSansTamil",
        "NotoSansTelugu", "NotoSansKannada", "NotoSansMalayalam", "NotoSansSinhala",
        "NotoSansThai", "NotoSansLao", "NotoSansKhmer", "NotoSansMyanmar", "NotoSansGeorgian",
        "NotoSansArmenian", "NotoSansEthiopic", "NotoSansSymbols", "NotoSansSymbols2")
CJK = ((0x1100, 0x11FF), (0x2E80, 0x2FFF), (0x3000, 0x33FF), (0x3400, 0x4DBF),
       (0x4E00, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF),
       (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))


def _options() -> subset.Options:
    opts = subset.Options()
    opts.layout_features = ["*"]
    opts.hinting = False
    opts.notdef_outline = True
    opts.name_IDs = ["*"]
    opts.name_languages = ["*"]
    opts.glyph_names = False
    opts.legacy_kern = True
    return opts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(src / f"usr/share/fonts/truetype/noto/{n}-Regular.ttf", 0, None,
             out / f"{n}-Regular.ttf") for n in NOTO]
    jobs.append((src / "usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0, CJK,
                 out / "WenQuanYiMicroHei-CJK.ttf"))
    for path, index, ranges, dest in jobs:
        font = TTFont(path, fontNumber=index, recalcTimestamp=False)  # reproducible output
        cmap = font.getBestCmap()
        codes = [c for c in cmap if ranges is None or any(lo <= c <= hi for lo, hi in ranges)]
        sub = subset.Subsetter(_options())
        sub.populate(unicodes=codes)
        sub.subset(font)
        font.save(dest)
        print(f"{path.name}\t{_sha256(path)}\t{dest.name}\t{_sha256(dest)}\t"
              f"{path.stat().st_size}\t{dest.stat().st_size}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
