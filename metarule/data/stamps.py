"""Tux Paint stamps as a stand-in for ImageNet class subsets (Section 4.2, App. H.1.1).

Class = stamp category folder (the first two folder levels, with 'cartoon' folders merged into
their parent). Each category has only a handful of pictures, so examples are random rotations,
flips and crops of them at 16x16 colour. Pictures, not examples, are split into train and test.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from metarule.data import locate
from metarule.data.core import DataError, Dataset

PACKAGE = "tuxpaint-stamps-default"
SIZE = 16
BASE = 48                  # pictures are padded square and shrunk to this before cropping
MIN_IMAGES = 3             # categories with fewer pictures are dropped
TEST_FRACTION = 0.25       # of each category's pictures (at least one)
TRAIN_PER_CLASS, TEST_PER_CLASS = 320, 80
MIN_CROP = 0.6             # crop side as a fraction of BASE, uniform in [MIN_CROP, 1]
# Held out of meta-training for evaluation: varied, and each with at least 10 pictures.
HELDOUT = ("animals/birds", "animals/insects", "clothes", "food/vegetables", "household/tools",
           "plants/flowers", "seasonal/christmas", "space/planets", "symbols/music",
           "town/roadsigns")


def category(rel: Path) -> str:
    """The class of a stamp from its path relative to the stamps root."""
    parts = [p for p in rel.parts[:-1] if p != "cartoon"]
    return "/".join(parts[:2])


def find_stamps() -> dict[str, list[Path]]:
    """Category -> sorted PNG paths for every category with at least MIN_IMAGES pictures."""
    pngs = [p for p in locate.dpkg_files(PACKAGE) if p.suffix == ".png"]
    if not pngs:
        raise DataError(f"Tux Paint stamps not found; install them with: apt-get install -y "
                        f"{PACKAGE}")
    root = Path(os.path.commonpath(pngs))
    groups: dict[str, list[Path]] = {}
    for p in sorted(pngs):
        groups.setdefault(category(p.relative_to(root)), []).append(p)
    return {c: ps for c, ps in sorted(groups.items()) if len(ps) >= MIN_IMAGES}


def _open(path: Path) -> Image.Image:
    """The picture on a white background, padded square and resized to BASE x BASE."""
    img = Image.open(path).convert("RGBA")
    side = max(img.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(img, ((side - img.width) // 2, (side - img.height) // 2))
    return square.convert("RGB").resize((BASE, BASE), Image.LANCZOS)


def _examples(pictures: list[Image.Image], n: int, rng: np.random.Generator) -> np.ndarray:
    """n random rotation + flip + crop views, cycling through the pictures."""
    out = np.empty((n, SIZE, SIZE, 3), np.float32)
    for i in range(n):
        img = pictures[i % len(pictures)].rotate(rng.uniform(0, 360), Image.BILINEAR,
                                                 fillcolor=(255, 255, 255))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        side = rng.uniform(MIN_CROP, 1.0) * BASE
        x0, y0 = rng.uniform(0, BASE - side, 2)
        crop = img.resize((SIZE, SIZE), Image.BOX, box=(x0, y0, x0 + side, y0 + side))
        out[i] = np.asarray(crop, np.float32) / 255
    return out


def _split(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Deterministic by file name hash: the first quarter (at least one) goes to test."""
    ordered = sorted(paths, key=lambda p: (zlib.crc32(p.name.encode()), p.name))
    n_test = max(1, round(TEST_FRACTION * len(ordered)))
    return ordered[n_test:], ordered[:n_test]


def stamps(heldout: bool, seed: int = 0) -> Dataset:
    """stamps16 (meta-training categories) or stamps16_heldout (the HELDOUT categories)."""
    groups = find_stamps()
    names = tuple(c for c in groups if (c in HELDOUT) == heldout)
    rng = np.random.default_rng(seed + heldout)
    xs = {"train": [], "test": []}
    counts = {"train": 0, "test": 0}
    for c in names:
        train, test = _split(groups[c])
        for split, paths, n in (("train", train, TRAIN_PER_CLASS), ("test", test, TEST_PER_CLASS)):
            xs[split].append(_examples([_open(p) for p in paths], n, rng))
            counts[split] += len(paths)
    k = len(names)
    name = "stamps16_heldout" if heldout else "stamps16"
    card = {"source": f"Debian {PACKAGE} PNG stamps",
            "license": "GPL-2+ (Tux Paint stamps; see the package copyright file)",
            "preprocessing": f"alpha composited on white, padded square, resized to {BASE} px; "
                             f"views: rotation U(0,360) deg, horizontal flip p=0.5, square crop "
                             f"of side U({MIN_CROP},1)*{BASE} px, box-resized to "
                             f"{SIZE}x{SIZE} RGB; "
                             f"pictures split {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} by "
                             f"crc32(file name); {TRAIN_PER_CLASS}/{TEST_PER_CLASS} views per "
                             f"class; categories with < {MIN_IMAGES} pictures dropped; seed {seed}",
            "pictures": counts, "train": k * TRAIN_PER_CLASS, "test": k * TEST_PER_CLASS,
            "classes": k, "input_dim": SIZE * SIZE * 3}
    return Dataset(name, np.concatenate(xs["train"]).reshape(k * TRAIN_PER_CLASS, -1),
                   np.repeat(np.arange(k, dtype=np.int64), TRAIN_PER_CLASS),
                   np.concatenate(xs["test"]).reshape(k * TEST_PER_CLASS, -1),
                   np.repeat(np.arange(k, dtype=np.int64), TEST_PER_CLASS),
                   (SIZE, SIZE, 3), names, card)
