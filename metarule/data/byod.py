"""Bring-your-own data: an .npz, a folder of images (one sub-folder per class), or a CSV.

Every source is split 80/20 into train/test, stratified per class with a fixed seed (0), so
the same file always gives the same split. Every problem raises a one-line DataError.
"""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metarule.data.core import DataError, Dataset, check_finite, relabel, split_indices

TEST_FRACTION = 0.2
SPLIT_SEED = 0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_path(path: str | Path, label_column: str = "label") -> Dataset:
    """Load a user dataset from an .npz, an image folder or a .csv file."""
    path = Path(path)
    if path.is_dir():
        x, y, shape = _read_folder(path)
    elif not path.is_file():
        raise DataError(f"{path}: no such file or folder; give a registered name "
                        f"(metarule data list), an .npz, a .csv or an image folder")
    elif path.suffix == ".npz":
        x, y, shape = _read_npz(path)
    elif path.suffix == ".csv":
        x, y, shape = _read_csv(path, label_column)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .npz, .csv or a "
                        f"folder of images")
    return _make(path.stem or path.name, x, y, shape, str(path))


def _read_npz(path: Path):
    redo = "re-save it with np.savez(file, x=..., y=...)"
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {missing}; save with "
                                f"np.savez(file, x=images_or_features, y=labels)")
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except ValueError as e:
        if "Object arrays" in str(e):  # they would need unpickling, which can run code
            raise DataError(f"{path}: x or y holds Python objects (dtype object); save numeric "
                            f"x and numeric or string y, e.g. np.savez(file, "
                            f"x=np.asarray(x, np.float32), y=np.asarray(y, str))") from None
        raise DataError(f"{path}: unreadable .npz (not a zip archive of arrays); {redo}") \
            from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        what = "an empty file" if path.stat().st_size == 0 else f"{type(e).__name__}: {e}"
        raise DataError(f"{path}: unreadable .npz ({what}); {redo}") from None
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{path}: x must be (N, D), (N, H, W) or (N, H, W, C), got shape "
                        f"{x.shape}")
    shape = None if x.ndim == 2 else (*x.shape[1:3], x.shape[3] if x.ndim == 4 else 1)
    return _to_unit_float(path, x), y, shape


def _to_unit_float(where, x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> [0, 1]; other numeric types are only cast to float32."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: x must be numeric, got dtype {x.dtype}")
    return x.astype(np.float32)


def _read_folder(root: Path):
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; put each class's images in "
                        f"{root}/<class name>/")
    files, labels = [], []
    for d in class_dirs:
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not imgs:
            raise DataError(f"{d}: class folder has no images ({', '.join(IMAGE_SUFFIXES)}); "
                            f"add some or remove the folder")
        files += imgs
        labels += [d.name] * len(imgs)
    images = [_read_image(p) for p in files]
    color = any(im.mode not in ("L", "1", "I", "I;16", "F") for im in images)
    size = images[0].size
    for p, im in zip(files, images):
        if im.size != size:
            raise DataError(f"{p}: image is {im.width}x{im.height} but {files[0].name} is "
                            f"{size[0]}x{size[1]}; resize all images to one size")
    arrs = [np.asarray(im.convert("RGB" if color else "L")) for im in images]
    x = np.stack(arrs).astype(np.float32) / 255
    c = 3 if color else 1
    return x.reshape(len(x), -1), np.asarray(labels), (size[1], size[0], c)


def _read_image(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except (OSError, UnidentifiedImageError):
        raise DataError(f"{path}: unreadable image; fix or delete the file") from None


def _read_csv(path: Path, label_column: str):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable CSV ({type(e).__name__}); save it as UTF-8 text") \
            from None
    if len(rows) < 2:
        raise DataError(f"{path}: CSV needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(f"{path}: no {label_column!r} column (columns: {', '.join(header)}); "
                        f"add one or name the label column with --label-column NAME "
                        f"(label_column= in Python)")
    li = header.index(label_column)
    body = [r for r in rows[1:] if r]
    for n, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"{path}: line {n} has {len(r)} fields but the header has "
                            f"{len(header)}")
    feats = [i for i in range(len(header)) if i != li]
    if not feats:
        raise DataError(f"{path}: no feature columns besides {label_column!r}")
    try:
        x = np.array([[float(r[i]) for i in feats] for r in body], np.float32)
    except ValueError:
        bad = next(header[i] for i in feats for r in body if not _is_number(r[i]))
        raise DataError(f"{path}: column {bad!r} is not numeric; encode or drop it") from None
    return x, np.asarray([r[li].strip() for r in body]), None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _labels(where: str, y: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels are class ids (a gap is an empty class); other labels are sorted."""
    if y.dtype.kind in "iu":
        if y.size and y.min() < 0:
            raise DataError(f"{where}: integer labels must be >= 0, got {y.min()}")
        counts = np.bincount(y)
        if (counts == 0).any():
            raise DataError(f"{where}: class {int(np.argmin(counts))} has no examples; "
                            f"relabel to consecutive ids 0..C-1")
        return y.astype(np.int64), tuple(str(c) for c in range(len(counts)))
    if y.dtype.kind == "f":
        raise DataError(f"{where}: labels must be integers or strings, got {y.dtype}")
    return relabel(y)


def _make(name: str, x: np.ndarray, y: np.ndarray, shape, where: str) -> Dataset:
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{where}: y must have shape ({x.shape[0]},) to match x, got {y.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{where}: no examples")
    check_finite(where, x)
    ids, names = _labels(where, y)
    counts = np.bincount(ids, minlength=len(names))
    if counts.min() < 2:
        c = int(np.argmin(counts))
        raise DataError(f"{where}: class {names[c]!r} has {counts[c]} example; every class "
                        f"needs at least 2 (one for train, one for test)")
    x = x.reshape(len(x), -1)
    train, test = split_indices(ids, TEST_FRACTION, SPLIT_SEED)
    card = {"source": where, "license": "user supplied",
            "preprocessing": f"uint8 scaled to [0,1], others cast to float32; stratified "
                             f"{1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} split, "
                             f"seed {SPLIT_SEED}",
            "train": len(train), "test": len(test), "classes": len(names),
            "input_dim": x.shape[1]}
    return Dataset(name, x[train], ids[train], x[test], ids[test], shape, names, card)
