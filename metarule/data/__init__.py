"""Offline datasets for meta-training and evaluation, plus bring-your-own data.

Every registered dataset is built from files that ship inside an installed pip or Debian
package (see docs/data/README.md), preprocessed once, cached under $METARULE_CACHE (default
~/.cache/metarule) and memory-mapped on later loads.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from metarule.data import cache
from metarule.data.core import DataError, Dataset, ValidationSplit, check_shots, validation_split

__all__ = ["DataError", "Dataset", "ValidationSplit", "check_shots", "describe", "list_datasets", "list_text",
           "load", "render_grid", "show", "show_text", "validation_split"]


class _Entry(NamedTuple):
    build: Callable[[], Dataset]
    version: str   # bump when preprocessing changes, so stale caches are never read


def _registry() -> dict[str, _Entry]:
    # Builders import lazily: listing names must not need fonts, Pillow rendering or sklearn.
    from metarule.data import glyphs, sources, stamps
    p = functools.partial
    return {
        "mnist": _Entry(p(sources.mnist, 28), "v1"),
        "mnist14": _Entry(p(sources.mnist, 14), "v1"),
        "fashion_mnist": _Entry(p(sources.fashion_mnist, 28), "v1"),
        "fashion_mnist14": _Entry(p(sources.fashion_mnist, 14), "v1"),
        "glyphs14": _Entry(p(glyphs.glyphs, 14), "v2"),
        "glyphs16": _Entry(p(glyphs.glyphs, 16), "v2"),
        "patches16": _Entry(p(sources.patches, False), "v1"),
        "patches16_color": _Entry(p(sources.patches, True), "v1"),
        "stamps16": _Entry(p(stamps.stamps, False), "v1"),
        "stamps16_heldout": _Entry(p(stamps.stamps, True), "v1"),
        "polarity": _Entry(sources.polarity, "v1"),
        "moons": _Entry(sources.moons, "v1"),
    }


def list_datasets() -> list[str]:
    """The registered dataset names."""
    return list(_registry())


def load(name_or_path: str | Path, label_column: str = "label") -> Dataset:
    """A registered dataset (cached after the first build) or a user .npz / .csv / image folder.

    Args:
      name_or_path: a name from list_datasets(), or a path.
      label_column: the label column of a CSV file.
    Raises:
      DataError: unknown name, missing source package, or an invalid user file.
    """
    registry = _registry()
    key = str(name_or_path)
    if not key.strip():  # Path("") is the current folder, which nobody means
        raise DataError("the dataset is empty; give a registered name (metarule data list) or "
                        "a path to an .npz, .csv or image folder")
    if key in registry:
        entry = registry[key]

        def build() -> Dataset:
            print(f"metarule: building {key} into {cache.entry_dir(key, entry.version)} "
                  f"(first use only)", file=sys.stderr)
            return entry.build()

        return cache.cached(key, entry.version, build)
    if not Path(key).exists() and "/" not in key and "." not in key:
        raise DataError(f"unknown dataset {key!r}; choose one of {', '.join(registry)} or "
                        f"give a path to an .npz, .csv or image folder")
    from metarule.data.byod import load_path
    return load_path(key, label_column)


def render_grid(dataset: Dataset | str, out_png: str | Path, n: int = 10, seed: int = 0) -> Path:
    """Save a picture of a dataset: n classes x n train examples for images, else a plot.

    Non-image data is drawn as a scatter plot (2-d) or as the feature matrix of 2n examples per
    class (e.g. the bag-of-words of polarity). An existing folder receives NAME.png, and a path
    without the .png suffix gets it; the path written is returned.
    """
    ds = load(dataset) if isinstance(dataset, str) else dataset
    rng = np.random.default_rng(seed)
    out_png = Path(out_png)
    if out_png.is_dir():
        out_png = out_png / f"{ds.name}.png"
    elif out_png.suffix.lower() != ".png":
        out_png = out_png.with_name(out_png.name + ".png")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    classes = np.sort(rng.choice(ds.num_classes, min(n, ds.num_classes), replace=False))
    y = np.asarray(ds.y_train)
    if ds.image_shape is not None:
        h, w, c = ds.image_shape
        tiles = np.ones((len(classes), n, h + 2, w + 2, c), np.float32)
        for r, k in enumerate(classes):
            idx = rng.permutation(np.flatnonzero(y == k))[:n]
            images = np.asarray(ds.x_train[np.sort(idx)]).reshape(-1, h, w, c)
            tiles[r, :len(idx), 1:-1, 1:-1] = images
        mosaic = tiles.transpose(0, 2, 1, 3, 4).reshape(len(classes) * (h + 2), n * (w + 2), c)
        _save_image(mosaic, out_png, scale=max(1, 64 // max(h, w)))
    else:
        _plot_features(ds, classes, n, rng, out_png)
    return out_png


def _save_image(img: np.ndarray, path: Path, scale: int) -> None:
    from PIL import Image
    arr = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    arr = arr[..., 0] if arr.shape[-1] == 1 else arr
    pil = Image.fromarray(arr)
    pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST).save(path)


def _plot_features(ds: Dataset, classes, n: int, rng, out_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = np.asarray(ds.x_train), np.asarray(ds.y_train)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if ds.input_dim == 2:
        for k in classes:
            ax.scatter(*x[y == k].T, s=4, label=ds.class_names[k])
        ax.legend()
    else:
        idx = np.concatenate([rng.permutation(np.flatnonzero(y == k))[:2 * n] for k in classes])
        ax.imshow(x[idx], aspect="auto", interpolation="nearest", cmap="gray_r")
        ax.set_xlabel("feature")
        ax.set_ylabel(" | ".join(ds.class_names[k] for k in classes) + " (examples)")
    ax.set_title(ds.name)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def describe(name: str) -> dict:
    """A registered dataset's counts, shape and source, or why it is unavailable."""
    try:
        ds = load(name)
    except DataError as e:
        return {"name": name, "error": str(e)}
    return {"name": name, "train": int(ds.x_train.shape[0]), "test": int(ds.x_test.shape[0]),
            "classes": ds.num_classes, "input_dim": ds.input_dim,
            "image_shape": list(ds.image_shape) if ds.image_shape else None,
            "source": ds.card.get("source", "")}


def list_text(rows: list[dict]) -> str:
    """`metarule data list`'s table of `describe` rows."""
    lines = [f"{'name':18} {'train':>7} {'test':>7} {'classes':>7} {'shape':>9}  source"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:18} unavailable: {r['error']}")
            continue
        shape = "x".join(map(str, r["image_shape"])) if r["image_shape"] else \
            f"{r['input_dim']}-d"
        lines.append(f"{r['name']:18} {r['train']:>7} {r['test']:>7} {r['classes']:>7} "
                     f"{shape:>9}  {r['source'][:60]}")
    return "\n".join(lines)


def show(name: str, out: str | Path, label_column: str = "label") -> dict:
    """`metarule data show NAME --out FILE.png`: save a grid of examples; the dataset's card
    and the path of the picture."""
    ds = load(name, label_column)
    path = render_grid(ds, out)
    return {"name": ds.name, "classes": ds.num_classes, "train": int(ds.x_train.shape[0]),
            "test": int(ds.x_test.shape[0]), "input_dim": ds.input_dim, "png": str(path),
            "card": {k: ds.card.get(k, "") for k in ("source", "license", "preprocessing")}}


def show_text(shown: dict) -> str:
    """`metarule data show`'s summary of a `show` result."""
    head = (f"{shown['name']}: {shown['classes']} classes, {shown['train']} train / "
            f"{shown['test']} test, input_dim {shown['input_dim']} -> {shown['png']}")
    return "\n".join([head] + [f"  {k}: {v}" for k, v in shown["card"].items()])
