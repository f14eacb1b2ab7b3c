"""On-disk cache of preprocessed datasets: built once, then memory-mapped.

Layout: ``<root>/<name>-<version>/{x_train,y_train,x_test,y_test}.npy`` plus ``meta.json``.
Every file is written to a temporary file in the same directory and moved into place with
``os.replace`` (atomic on POSIX), and ``meta.json`` goes last, so a worker that sees
``meta.json`` always sees complete arrays even while another worker is rebuilding.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from metarule.data.core import Dataset

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def cache_root() -> Path:
    """The cache directory: $METARULE_CACHE, else ~/.cache/metarule."""
    return Path(os.environ.get("METARULE_CACHE") or Path.home() / ".cache" / "metarule")


def entry_dir(name: str, version: str) -> Path:
    return cache_root() / f"{name}-{version}"


def atomic_write(path: Path, write: Callable) -> None:
    """Write via write(file) into a temporary file beside `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)   # mkstemp makes 0600; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save(ds: Dataset, version: str) -> None:
    """Write `ds` into the cache under (name, version)."""
    d = entry_dir(ds.name, version)
    d.mkdir(parents=True, exist_ok=True)
    for key in ARRAYS:
        arr = np.ascontiguousarray(getattr(ds, key))
        atomic_write(d / f"{key}.npy", lambda f, a=arr: np.save(f, a, allow_pickle=False))
    meta = {"image_shape": ds.image_shape, "class_names": list(ds.class_names), "card": ds.card}
    atomic_write(d / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))


def load(name: str, version: str) -> Dataset | None:
    """The cached dataset with memory-mapped arrays, or None when it is not cached yet."""
    d = entry_dir(name, version)
    try:
        meta = json.loads((d / "meta.json").read_text())
        arrays = {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
    except FileNotFoundError:
        return None
    shape = meta["image_shape"]
    return Dataset(name=name, image_shape=tuple(shape) if shape else None,
                   class_names=tuple(meta["class_names"]), card=meta["card"], **arrays)


def cached(name: str, version: str, build: Callable[[], Dataset]) -> Dataset:
    """Load (name, version) from the cache, building and saving it first if needed."""
    ds = load(name, version)
    if ds is None:
        save(build(), version)
        ds = load(name, version)
    return ds
