"""The Dataset record, the one error type, and the array checks every source goes through."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Any bad or missing data. The message is one line that says what to do."""


@dataclass(frozen=True)
class Dataset:
    """A labelled train/test split, flattened to (N, D) float32.

    Images are in [0, 1] and flattened row-major over (H, W, C); labels are int64 in 0..C-1.
    Labels are only used for evaluation and for the meta-objective, never by the learned rule.
    """
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int, int] | None
    class_names: tuple[str, ...]
    card: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        check_split(self.name, "train", self.x_train, self.y_train, len(self.class_names))
        check_split(self.name, "test", self.x_test, self.y_test, len(self.class_names))
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise DataError(f"{self.name}: train has {self.x_train.shape[1]} features but test "
                            f"has {self.x_test.shape[1]}; give both splits the same width")
        if self.image_shape is not None and int(np.prod(self.image_shape)) != self.input_dim:
            raise DataError(f"{self.name}: image_shape {self.image_shape} does not match "
                            f"{self.input_dim} features; fix the image shape")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])


# The validation split: a fixed random part of the training split, the same for every command.
VALIDATION_SEED = 0
VALIDATION_MAX = 10_000


@dataclass(frozen=True)
class ValidationSplit:
    """A training split cut in two: rows to train on and validation rows to choose by. It has no
    test split, so nothing that holds one can read a test split."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int


def validation_split(ds: Dataset) -> ValidationSplit:
    """ds's training split cut into training rows and a validation split.

    The validation rows are a seeded random min(10,000, n_train // 6) rows of the training split
    (random rather than the last rows, because some datasets store their rows sorted by class);
    the other rows stay the training split. Everything that chooses (meta-training's continuous
    evaluation, the best theta, snapshot selection, shipping a rule) reads this; the test split
    is read only to report, by `metarule eval` and the experiments.
    """
    n = ds.x_train.shape[0]
    n_val = min(VALIDATION_MAX, n // 6)
    if n_val < 1:
        raise DataError(f"{ds.name}: {n} training examples are too few to carve a validation "
                        f"split; give it at least 6")
    order = np.random.default_rng(VALIDATION_SEED).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return ValidationSplit(ds.name, ds.x_train[train], ds.y_train[train], ds.x_train[val],
                           ds.y_train[val], ds.num_classes)


def check_split(name: str, split: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
    """Raise a one-line DataError unless x, y form a usable (N, D) float32 / (N,) int64 split."""
    where = f"{name} ({split})"
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{where}: x must be a non-empty (N, D) array, got shape {x.shape}")
    if x.dtype != np.float32:
        raise DataError(f"{where}: x must be float32, got {x.dtype}; convert with "
                        f"x.astype('float32')")
    if y.shape != (x.shape[0],):
        raise DataError(f"{where}: y must have shape ({x.shape[0]},) to match x, got {y.shape}")
    if y.dtype != np.int64:
        raise DataError(f"{where}: y must be int64 class ids, got {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, "
                        f"got {y.min()}..{y.max()}")


def check_finite(name: str, x: np.ndarray) -> None:
    """Reject NaN/inf, which would silently poison every inner-loop statistic."""
    if not np.isfinite(x).all():
        raise DataError(f"{name}: x has {np.size(x) - np.isfinite(x).sum()} NaN/inf values; "
                        f"remove or impute them first")


def check_shots(dataset: Dataset, shots: int) -> None:
    """Raise DataError if any class has fewer than `shots` training examples."""
    counts = np.bincount(np.asarray(dataset.y_train), minlength=dataset.num_classes)
    short = np.flatnonzero(counts < shots)
    if short.size:
        c = int(short[0])
        raise DataError(f"{dataset.name}: class {dataset.class_names[c]!r} has {counts[c]} "
                        f"training examples but {shots} shots were requested "
                        f"({short.size} classes short); lower the shots or add examples")


def avg_pool(images: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool (N, H, W[, C]) images by `factor` in both spatial axes."""
    n, h, w = images.shape[:3]
    rest = images.shape[3:]
    pooled = images.reshape(n, h // factor, factor, w // factor, factor, *rest)
    return pooled.mean(axis=(2, 4), dtype=np.float32)


def relabel(labels) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map arbitrary labels to 0..C-1 int64 ids in sorted order; return (ids, class names)."""
    names, ids = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    return ids.astype(np.int64), tuple(str(n) for n in names)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded train/test split: each class sends round(frac * n) to test.

    Classes with at least 2 examples keep at least one on each side.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * idx.size))
        if idx.size >= 2:
            n_test = min(max(n_test, 1), idx.size - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
