"""The glyph dataset (App. H.1.1): ~1000 characters rendered from the installed fonts.

One class per character, one example per font that really has the character (checked in the
font's cmap with fontTools, because Pillow silently draws a box for a missing glyph), each
with a small random jitter. Fonts, not examples, are split into train and test, so a test
example is always a font design the training split never showed.
"""
from __future__ import annotations

import json
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from metarule.data import cache, locate
from metarule.data.core import DataError, Dataset

FONT_PACKAGES = ("fonts-dejavu-core", "fonts-dejavu-extra", "fonts-freefont-ttf", "fonts-texgyre",
                 "fonts-texgyre-math", "fonts-urw-base35", "fonts-liberation2", "fonts-croscore",
                 "fonts-lato", "fonts-sil-gentiumplus", "fonts-sil-charis",
                 "fonts-linuxlibertine", "fonts-stix", "fonts-noto-core")
FONT_INSTALL = "apt-get install -y " + " ".join(FONT_PACKAGES)
# Fonts whose cmap claims Latin but whose drawings are not the characters.
EXCLUDED_FONTS = {
    "D050000L": "a Zapf Dingbats clone that maps ASCII code points to dingbats",
    "Linux Biolinum Keyboard O": "draws every character inside a keyboard key cap",
}
MIN_FONTS = 30          # a character needs this many distinct fonts to become a class
TRAIN_FONTS, TEST_FONTS = 40, 10   # examples per class drawn from each font split, at most
TEST_FONT_MODULUS = 5   # crc32(font name) % 5 == 0 -> test font (about 20%)
MIN_CLASSES = 1000
MAX_CLASSES = 1200
DEDUPE_FONTS = 12       # reference fonts in which look-alikes are compared
DEDUPE_RMS = 0.02       # renders closer than this (RMS, [0, 1] scale) are one class
SUPERSAMPLE = 4         # render at 4x and box-filter down
BASELINE = 0.78         # baseline height in em units from the top of the em square
JITTER_ROT, JITTER_SCALE, JITTER_SHIFT = 6.0, 0.08, 0.5   # degrees, relative, output pixels


@dataclass(frozen=True)
class Font:
    path: Path
    name: str
    cmap: frozenset[int]

    @property
    def is_test(self) -> bool:
        return zlib.crc32(self.name.encode()) % TEST_FONT_MODULUS == 0


def find_fonts() -> list[Font]:
    """Distinct (by full name) installed text fonts with at least full basic Latin."""
    from fontTools.ttLib import TTFont

    fonts, seen = [], set()
    for package in FONT_PACKAGES:
        for path in sorted(locate.dpkg_files(package)):
            if path.suffix.lower() not in (".ttf", ".otf"):
                continue
            ft = TTFont(path, lazy=True)
            name = ft["name"].getDebugName(4) or path.stem
            cmap = ft.getBestCmap() or {}
            ft.close()
            if (name in seen or name in EXCLUDED_FONTS
                    or not all(ord(c) in cmap for c in "azAZ09")):
                continue
            seen.add(name)
            fonts.append(Font(path, name, frozenset(cmap)))
    return fonts


def _drawable(cp: int) -> bool:
    # Letters, numbers, punctuation and symbols; no marks, spaces or control/format codes.
    return unicodedata.category(chr(cp))[0] in "LNPS"


def _priority(cp: int, coverage: int) -> tuple:
    """Basic Latin first, then currency and math (the named subsets), then by coverage."""
    cat = unicodedata.category(chr(cp))
    group = 0 if cp < 128 else 1 if cat == "Sc" else 2 if cat == "Sm" else 3
    return group, -coverage, cp


class Renderer:
    """Renders characters centred in the font's em square at `size` x `size` pixels."""

    def __init__(self, size: int):
        self.size = size
        self.em = size * SUPERSAMPLE
        self._fonts: dict[Path, ImageFont.FreeTypeFont] = {}

    def font(self, path: Path) -> ImageFont.FreeTypeFont:
        if path not in self._fonts:
            self._fonts[path] = ImageFont.truetype(str(path), self.em)
        return self._fonts[path]

    def render(self, path: Path, ch: str, jitter: np.ndarray | None = None) -> np.ndarray | None:
        """A (size, size) float32 image in [0, 1], or None if the glyph has no ink.

        jitter: (rotation degrees, scale, dx px, dy px) or None.
        """
        font, em = self.font(path), self.em
        left, top, right, bottom = font.getbbox(ch, anchor="ls")
        if right <= left or bottom <= top:
            return None
        # The window is the em square, centred on the ink horizontally and placed by the
        # baseline vertically, so 'o' stays smaller and lower than 'O'. A glyph the em square
        # would clip gets a window grown and centred around its ink instead.
        side = max(em, right - left, bottom - top)
        cy_em, cy_ink = em / 2 - BASELINE * em, (top + bottom) / 2
        if side > em or abs(cy_ink - cy_em) + (bottom - top) / 2 > em / 2:
            cy_em = cy_ink
        half = int(np.ceil(0.85 * side)) + 2      # holds the window under any jitter
        canvas = Image.new("L", (2 * half, 2 * half), 0)
        ImageDraw.Draw(canvas).text((half - (left + right) / 2, half - cy_em), ch, fill=255,
                                    font=font, anchor="ls")
        rot, scale, dx, dy = (0.0, 1.0, 0.0, 0.0) if jitter is None else jitter
        out = SUPERSAMPLE * self.size
        k = side / (scale * out)                  # canvas pixels per supersampled pixel
        c, s = k * np.cos(np.radians(rot)), k * np.sin(np.radians(rot))
        # Affine map from an output pixel (u, v) to the canvas; centre maps to the window
        # centre minus the shift, so the glyph moves by +dx, +dy output pixels.
        u0 = out / 2 + SUPERSAMPLE * dx
        v0 = out / 2 + SUPERSAMPLE * dy
        data = (c, s, half - c * u0 - s * v0, -s, c, half + s * u0 - c * v0)
        img = canvas.transform((out, out), Image.AFFINE, data, resample=Image.BILINEAR)
        arr = np.asarray(img.reduce(SUPERSAMPLE), np.float32) / 255
        return arr if arr.max() > 0 else None


def draw_jitter(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(-JITTER_ROT, JITTER_ROT),
                     1 + rng.uniform(-JITTER_SCALE, JITTER_SCALE),
                     rng.uniform(-JITTER_SHIFT, JITTER_SHIFT),
                     rng.uniform(-JITTER_SHIFT, JITTER_SHIFT)])


def select_characters(fonts: list[Font]) -> list[int]:
    """Up to MAX_CLASSES characters with enough fonts, without look-alikes.

    Two characters are look-alikes (Latin A, Greek Alpha, Cyrillic A) when their renders in
    the same reference fonts are nearly identical; the one with higher priority is kept.
    """
    coverage: dict[int, int] = {}
    for f in fonts:
        for cp in f.cmap:
            coverage[cp] = coverage.get(cp, 0) + 1
    candidates = sorted((cp for cp, n in coverage.items() if n >= MIN_FONTS and _drawable(cp)),
                        key=lambda cp: _priority(cp, coverage[cp]))
    refs = sorted(fonts, key=lambda f: (-len(f.cmap), f.name))[:DEDUPE_FONTS]
    renderer = Renderer(14)
    kept, kept_imgs, kept_mask = [], [], []
    for cp in candidates:
        imgs = [renderer.render(f.path, chr(cp)) if cp in f.cmap else None for f in refs]
        mask = np.array([im is not None for im in imgs])
        if not any(im is not None for im in imgs):
            continue
        stack = np.stack([np.zeros((14, 14), np.float32) if im is None else im for im in imgs])
        if kept:
            common = np.asarray(kept_mask) & mask                              # (K, R)
            sq = np.mean((np.asarray(kept_imgs) - stack) ** 2, axis=(2, 3))    # (K, R)
            rms = np.sqrt((sq * common).sum(1) / np.maximum(common.sum(1), 1))
            if np.any(common.any(1) & (rms < DEDUPE_RMS)):
                continue
        kept.append(cp)
        kept_imgs.append(stack)
        kept_mask.append(mask)
        if len(kept) == MAX_CLASSES:
            break
    return kept


def cached_selection(fonts: list[Font]) -> list[int]:
    """select_characters, computed once and shared by glyphs14 and glyphs16."""
    key = zlib.crc32("\n".join(sorted(f.name for f in fonts)).encode())
    path = cache.cache_root() / f"glyph-characters-v2-{key:08x}.json"
    if path.is_file():
        return json.loads(path.read_text())
    chars = select_characters(fonts)
    cache.atomic_write(path, lambda f: f.write(json.dumps(chars).encode()))
    return chars


def glyphs(size: int, seed: int = 0) -> Dataset:
    """Build glyphs{size}: grey size x size renders, one class per character."""
    fonts = find_fonts()
    chars = cached_selection(fonts) if fonts else []
    renderer, rng = Renderer(size), np.random.default_rng(seed + size)
    xs, ys, splits, names = [], [], [], []
    for cp in chars:
        ch = chr(cp)
        imgs = {True: [], False: []}
        for is_test, cap in ((False, TRAIN_FONTS), (True, TEST_FONTS)):
            having = [f for f in fonts if cp in f.cmap and f.is_test == is_test]
            for i in np.sort(rng.permutation(len(having))[:cap]):
                im = renderer.render(having[i].path, ch, draw_jitter(rng))
                if im is not None:
                    imgs[is_test].append(im)
        if len(imgs[False]) < TRAIN_FONTS // 2 or not imgs[True]:
            continue
        label = len(names)
        names.append(ch)
        for is_test, ims in imgs.items():
            xs.extend(ims)
            ys.extend([label] * len(ims))
            splits.extend([is_test] * len(ims))
    if len(names) < MIN_CLASSES:
        raise DataError(f"only {len(names)} glyph classes could be rendered (need "
                        f"{MIN_CLASSES}); install the fonts with: {FONT_INSTALL}")
    x = np.asarray(xs, np.float32).reshape(len(xs), -1)
    y, test = np.asarray(ys, np.int64), np.asarray(splits)
    card = {"source": f"{len(fonts)} distinct fonts from Debian packages: "
                      f"{', '.join(FONT_PACKAGES)}",
            "license": "fonts under SIL OFL / GPL+font exception / Bitstream Vera / LPPL / "
                       "AGPL+font exception (see each package's copyright file)",
            "preprocessing": f"characters present (fontTools cmap) in >= {MIN_FONTS} fonts, "
                             f"look-alikes merged (RMS of mean renders < {DEDUPE_RMS}); "
                             f"rendered centred in the em square at {SUPERSAMPLE}x and "
                             f"box-filtered to {size}x{size}; jitter rotation +-{JITTER_ROT} deg, "
                             f"scale +-{JITTER_SCALE:.0%}, shift +-{JITTER_SHIFT} px; "
                             f"train/test split by font (crc32(name) % {TEST_FONT_MODULUS} == 0 "
                             f"is test), <= {TRAIN_FONTS}/{TEST_FONTS} fonts per class, "
                             f"seed {seed}",
            "train": int((~test).sum()), "test": int(test.sum()), "classes": len(names),
            "input_dim": size * size, "fonts": len(fonts)}
    return Dataset(f"glyphs{size}", x[~test], y[~test], x[test], y[test], (size, size, 1),
                   tuple(names), card)
